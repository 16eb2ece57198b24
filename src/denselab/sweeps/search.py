"""The Optuna search behind ``-m hydra/sweeper=optuna``: trials asked from a study in durable
storage (:mod:`denselab.sweeps.study`), run as the sweep's jobs by the configured launcher,
told back to the study as COMPLETE, PRUNED or FAIL.

The same command is the same study and the same parent run. Run again after a stop, it runs
the trials still missing to ``n_trials``, numbered on from the last: a trial that was
running when the search stopped runs again under its own number (its job continues its
stopped run from its checkpoint); a trial the study already has is not trained again.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

import optuna
import yaml
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig

from denselab.errors import DenselabError, first_line
from denselab.sweeps import STORAGE_ENV, STUDY_ENV, SWEEP_ENV, TRIAL_ENV
from denselab.sweeps.space import SearchSpace, search_space
from denselab.sweeps.study import (
    SearchSettings,
    check_study,
    grid_trials,
    open_study,
    search_settings,
    shown,
)
from denselab.sweeps.trial import PRUNED_ATTR, VALUES_ATTR

log = logging.getLogger("denselab")

FINISHED = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)


def plan_search(config: DictConfig) -> tuple[SearchSettings, SearchSpace]:
    """The search ``config`` asks for, checked: its settings, its space, and a storage that
    answers with no study of another search under its name. Raises SearchError."""
    from denselab.sweeps.parent import sweep_key

    settings = search_settings(config, sweep_key(config))
    space = search_space(config.hydra.sweeper.params, list(config.hydra.overrides.task))
    if settings.sampler == "grid":
        space.grid()
    check_study(settings, space)
    return settings, space


class Search:
    """One search: Hydra's sweeper calls :meth:`run` with the command's overrides."""

    def __init__(self, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.job_idx = 0

    def run(self, arguments: Sequence[str]) -> list[JobReturn]:
        from denselab.sweeps.parent import sweep_key

        try:
            settings = search_settings(self.config, sweep_key(self.config))
            space = search_space(self.config.hydra.sweeper.params, list(arguments))
            study = open_study(settings, space)
        except DenselabError as err:
            log.error(str(err))
            sys.exit(1)
        # Every job's process inherits these (joblib's workers, submitit's, SLURM's sbatch).
        os.environ[STUDY_ENV] = settings.study_name
        os.environ[STORAGE_ENV] = settings.storage
        returns = self._trials(study, settings, space)
        self._report(study, settings, space)
        failed = sum(r.status != JobStatus.COMPLETED for r in returns)
        if failed:  # as a grid sweep: the others ran, the command says that some failed
            log.error("%d of the %d trials run failed; the search went on, and its parent "
                      "run lists why", failed, len(returns))
            sys.exit(1)
        return returns

    def _trials(
        self, study: optuna.Study, settings: SearchSettings, space: SearchSpace
    ) -> list[JobReturn]:
        trials = study.get_trials(deepcopy=False)
        # Asked before a stop and never told: their jobs are gone (this command holds the
        # sweep's parent run), so they run again under their own numbers.
        again = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
        n_trials = grid_trials(settings, space)
        left = n_trials - sum(t.state in FINISHED for t in trials) - len(again)
        log.info(
            "Search: study %s in %s, %d of %d trials done, %d to run%s",
            settings.study_name, shown(settings.storage), len(trials) - len(again),
            n_trials, max(0, left) + len(again),
            f" ({len(again)} stopped before)" if again else "",
        )
        returns: list[JobReturn] = []
        while again or left > 0:
            batch: list[Any] = again[: settings.n_jobs]
            again = again[len(batch):]
            while len(batch) < settings.n_jobs and left > 0:
                batch.append(study.ask(space.distributions))
                left -= 1
            returns += self._launch(study, space, batch)
        return returns

    def _launch(self, study: optuna.Study, space: SearchSpace, batch: list) -> list[JobReturn]:
        jobs = [
            [*space.overrides(t.params), f"++hydra.job.env_set.{TRIAL_ENV}={t.number}"]
            for t in batch
        ]
        returns = list(self.launcher.launch(jobs, initial_job_idx=self.job_idx))
        self.job_idx += len(jobs)
        for trial, ret in zip(batch, returns):
            tell(study, trial.number, ret)
        return returns

    def _report(self, study: optuna.Study, settings: SearchSettings, space: SearchSpace) -> None:
        write_results(study, settings, Path(self.config.hydra.sweep.dir))
        parent_id = os.environ.get(SWEEP_ENV)
        if not parent_id:
            return
        try:
            from denselab.sweeps.search_report import log_search

            log_search(self.config, parent_id, study, settings, space, best_command(study, space))
        except Exception as err:  # the trials are done and told; say why the story is missing
            log.error("The search's history was not logged to its parent run: %s", err)


def tell(study: optuna.Study, number: int, ret: JobReturn) -> optuna.trial.TrialState:
    """Tell the study how trial ``number``'s job went: FAIL when it failed, PRUNED when its
    job was pruned, else COMPLETE with the values its job left on the trial."""
    State = optuna.trial.TrialState
    if ret.status != JobStatus.COMPLETED:
        log.warning("Trial %d failed: %s", number, _error_of(ret))
        study.tell(number, state=State.FAIL)
        return State.FAIL
    (trial,) = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    attrs = trial.user_attrs
    if attrs.get(PRUNED_ATTR) is not None:
        study.tell(number, state=State.PRUNED)
        return State.PRUNED
    values = attrs.get(VALUES_ATTR) or [ret.return_value]
    if any(v is None or v != v for v in values):
        log.warning("Trial %d gave no value to optimise (%s): told FAIL", number, values)
        study.tell(number, state=State.FAIL)
        return State.FAIL
    study.tell(number, values if len(values) > 1 else values[0])
    return State.COMPLETE


def _error_of(ret: JobReturn) -> str:
    try:
        ret.return_value  # a failed job's return value raises its error
    except Exception as err:
        return first_line(err)
    return str(ret.status)


def best_command(study: optuna.Study, space: SearchSpace) -> Optional[str]:
    """The command that trains the best trial alone (for two objectives: the most accurate
    trial on the Pareto front)."""
    try:
        best = study.best_trial if len(study.directions) == 1 else max(
            study.best_trials, key=lambda t: t.values[0]
        )
    except ValueError:
        return None
    program = Path(sys.argv[0]).name
    if program in ("__main__.py", "train.py"):
        program = "python -m denselab.train"
    return " ".join([program, *map(shlex.quote, space.overrides(best.params))])


def write_results(study: optuna.Study, settings: SearchSettings, folder: Path) -> None:
    """``optimization_results.yaml`` in the sweep's folder, as Hydra's Optuna plugin wrote it."""
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if not done:
        return
    results: dict[str, Any] = {"name": "optuna", "study_name": settings.study_name}
    if len(settings.objectives) == 1:
        results.update(best_params=study.best_params, best_value=study.best_value)
    else:
        results["solutions"] = [
            {"number": t.number, "params": t.params, "values": t.values}
            for t in study.best_trials
        ]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "optimization_results.yaml").write_text(yaml.safe_dump(results, sort_keys=False))
