"""A search's settings (``hydra.sweeper.*``), checked, and its Optuna study in durable storage.

The study lives beside the sqlite tracking store by default (``mlruns/optuna.db``), or in a
database or journal file the user names; its name comes from the sweep, so the same command
is the same study: run again, it continues where it stopped. Every job reaches the study
through that storage, whatever launcher runs it, to report its epochs and be pruned.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import optuna
from omegaconf import DictConfig, OmegaConf

from denselab.errors import SearchError
from denselab.sweeps.space import SearchSpace

log = logging.getLogger("denselab")

# What a search may optimise, and which way: what every run logs (a metric, or the network's
# size as the param params_total). The direction is the objective's own: a search that
# minimised an accuracy would silently look for the worst network.
OBJECTIVES = {
    "val/acc_best": "maximize",
    "val/acc": "maximize",
    "val/loss": "minimize",
    "params_total": "minimize",
}
SAMPLERS = ("tpe", "random", "grid", "cmaes", "nsgaii")
PRUNERS = ("none", "median", "hyperband")
# What the study keeps of denselab's, to refuse a study of another search and to build the
# same pruner in every job.
SPACE_ATTR = "denselab.space"
OBJECTIVES_ATTR = "denselab.objectives"
PRUNER_ATTR = "denselab.pruner"


@dataclass
class SearchSettings:
    objectives: list[str]
    directions: list[str]
    n_trials: int
    n_jobs: int
    sampler: str
    seed: Optional[int]
    pruner: dict[str, Any]  # {"name": ..., "startup": ..., "warmup": ...}
    storage: str
    study_name: str

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1


def is_search(config: DictConfig) -> bool:
    """Whether the sweep is denselab's Optuna search."""
    target = str(OmegaConf.select(config, "hydra.sweeper._target_") or "")
    return target.startswith("hydra_plugins.denselab_optuna.")


def search_settings(config: DictConfig, key: str) -> SearchSettings:
    """The search's settings from the composed ``config`` (``key``: the sweep's, which names
    the study). Raises SearchError for any that cannot be searched with."""
    sweeper = config.hydra.sweeper
    objectives = [str(o) for o in _as_list(sweeper.objectives)]
    directions = _directions(objectives, sweeper.direction)
    n_trials, n_jobs = int(sweeper.n_trials), int(sweeper.n_jobs)
    if n_trials < 1 or n_jobs < 1:
        raise SearchError(
            f"hydra.sweeper.n_trials={n_trials} and n_jobs={n_jobs}: a search runs at least "
            "one trial, at least one at a time."
        )
    sampler, pruner = str(sweeper.sampler).lower(), str(sweeper.pruner).lower()
    _refuse_unknown("sampler", sampler, SAMPLERS)
    _refuse_unknown("pruner", pruner, PRUNERS)
    if len(objectives) > 1 and sampler == "cmaes":
        raise SearchError(
            "hydra.sweeper.sampler=cmaes searches one objective; use tpe or nsgaii for two."
        )
    if len(objectives) > 1 and pruner != "none":
        raise SearchError(
            f"hydra.sweeper.pruner={pruner} cannot prune a search of two objectives (Optuna "
            "compares one value per epoch); use pruner=none."
        )
    name = sweeper.study_name or f"{_experiment(config)}-{key}"
    return SearchSettings(
        objectives, directions, n_trials, n_jobs, sampler,
        None if sweeper.seed is None else int(sweeper.seed),
        {
            "name": pruner,
            "startup": int(sweeper.pruner_startup_trials),
            "warmup": int(sweeper.pruner_warmup_epochs),
        },
        str(sweeper.storage or default_storage(config)),
        str(name),
    )


def _as_list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _directions(objectives: list[str], direction: Any) -> list[str]:
    if not objectives or len(objectives) > 2 or len(set(objectives)) < len(objectives):
        raise SearchError(
            f"hydra.sweeper.objectives={objectives}: a search optimises one objective or two "
            "different ones, e.g. [val/acc_best] or [val/acc_best,params_total]."
        )
    for objective in objectives:
        if objective.startswith("test/"):
            raise SearchError(
                f"A search may not optimise {objective}: tuning on the test set makes its score "
                "a lie; use val/acc_best."
            )
        if objective not in OBJECTIVES:
            raise SearchError(
                f"hydra.sweeper.objectives names {objective}, which runs do not log; choose "
                f"from {', '.join(OBJECTIVES)}."
            )
    said = [str(d).lower() for d in _as_list(direction)]
    if said and len(said) != len(objectives):
        raise SearchError(
            f"hydra.sweeper.direction gives {len(said)} directions for {len(objectives)} "
            "objectives; give one each, or drop it (each objective has its own)."
        )
    for objective, way in zip(objectives, said):
        own = OBJECTIVES[objective]
        if way != own:
            raise SearchError(
                f"hydra.sweeper.direction={way} would search for the worst {objective}, which "
                f"is to {own}; drop hydra.sweeper.direction (it follows the objective)."
            )
    return [OBJECTIVES[o] for o in objectives]


def _refuse_unknown(what: str, name: str, known: tuple[str, ...]) -> None:
    if name not in known:
        raise SearchError(
            f"hydra.sweeper.{what}={name} is not a {what} denselab knows; use one of "
            f"{', '.join(known)}."
        )


def _experiment(config: DictConfig) -> str:
    from denselab.tracking.runs import experiment_name

    return experiment_name(config)


def default_storage(config: DictConfig) -> str:
    """``optuna.db`` beside a sqlite tracking store; beside ``./mlruns`` for other stores."""
    from denselab.tracking.runs import tracking_uri

    uri = tracking_uri(config, _start_dir(config))
    if uri.startswith("sqlite:///"):
        folder = Path(uri[len("sqlite:///"):]).parent
    else:
        folder = _start_dir(config) / "mlruns"
    return f"sqlite:///{folder / 'optuna.db'}"


def _start_dir(config: DictConfig) -> Path:
    return Path(OmegaConf.select(config, "hydra.runtime.cwd") or ".").resolve()


def shown(url: str) -> str:
    """A storage URL fit to print and log: its password hidden."""
    if "://" not in url:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("://", 1)[0] + "://..."


# -- the storage and the study ---------------------------------------------------------------


def open_storage(url: str, create: bool = True) -> optuna.storages.BaseStorage:
    """The study's storage. Raises SearchError when it is not a storage or does not answer."""
    if url.endswith((".log", ".journal")) and "://" not in url:
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url).expanduser()
        if not path.parent.is_dir():
            raise SearchError(
                f"The study's journal file {path} cannot be made: its folder does not exist."
            )
        return JournalStorage(JournalFileBackend(str(path)))
    if not url.startswith(("sqlite:///", "postgresql", "mysql")):
        raise SearchError(
            f"hydra.sweeper.storage={shown(url)} is neither a database URL (sqlite:///..., "
            "postgresql+psycopg://...) nor a journal file (*.log)."
        )
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite:///"):
        # Parallel jobs report their epochs to one file: wait for its lock, not fail.
        kwargs = {"connect_args": {"timeout": 60}}
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs=kwargs, skip_table_creation=not create
        )
    except Exception as err:
        raise SearchError(
            f"The study's storage {shown(url)} does not answer ({_first_line(err)}); start it, "
            "or name another with hydra.sweeper.storage=..."
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:300]


def make_pruner(spec: dict[str, Any]) -> optuna.pruners.BasePruner:
    """The pruner ``spec`` names; the same in the sweeper and in every job, from the study."""
    if spec["name"] == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=spec["startup"], n_warmup_steps=spec["warmup"]
        )
    if spec["name"] == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto")
    return optuna.pruners.NopPruner()


def make_sampler(
    settings: SearchSettings, space: SearchSpace, asked_before: int
) -> optuna.samplers.BaseSampler:
    """The sampler, seeded by the settings' seed and the trials asked before: a continued
    study must not draw its first trials again, as a sampler seeded alike would."""
    seed = None if settings.seed is None else settings.seed + asked_before
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if settings.sampler == "grid":
        return _Grid(space.grid(), seed=seed)
    if settings.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if settings.sampler == "nsgaii":
        return optuna.samplers.NSGAIISampler(seed=seed)
    # Several trials asked at once (n_jobs) must not all be asked the same point.
    return optuna.samplers.TPESampler(seed=seed, constant_liar=settings.n_jobs > 1)


class _Grid(optuna.samplers.GridSampler):
    """Optuna's grid, which does not stop the study once every point was asked: its stop
    is study.optimize's, which raises under ask-and-tell. The search asks no more trials
    than the grid has points (:func:`grid_trials`)."""

    def after_trial(self, study, trial, state, values) -> None:
        pass


def grid_trials(settings: SearchSettings, space: SearchSpace) -> int:
    """How many trials the search runs: ``n_trials``, and no more than a grid has points."""
    if settings.sampler != "grid":
        return settings.n_trials
    points = math.prod(len(values) for values in space.grid().values())
    if settings.n_trials > points:
        log.info("The grid has %d points: the search runs %d trials, not n_trials=%d",
                 points, points, settings.n_trials)
    return min(settings.n_trials, points)


def check_study(settings: SearchSettings, space: SearchSpace) -> None:
    """Refuse, before anything is made, a storage that does not answer or a study of the
    same name made for another search. A sqlite file not made yet holds no study."""
    url = settings.storage
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
        return
    if url.endswith((".log", ".journal")) and not Path(url).expanduser().exists():
        open_storage(url)  # only checks its folder
        return
    _refuse_other_search(open_storage(url), settings, space)


def _refuse_other_search(storage, settings: SearchSettings, space: SearchSpace) -> None:
    try:
        study_id = storage.get_study_id_from_name(settings.study_name)
    except KeyError:
        return
    where = f"The study {settings.study_name} in {shown(settings.storage)}"
    directions = [d.name.lower() for d in storage.get_study_directions(study_id)]
    attrs = storage.get_study_user_attrs(study_id)
    objectives = attrs.get(OBJECTIVES_ATTR, settings.objectives)
    if directions != settings.directions or objectives != settings.objectives:
        raise SearchError(
            f"{where} searches {objectives} ({', '.join(directions)}), not "
            f"{settings.objectives}; name another with hydra.sweeper.study_name=..."
        )
    if attrs.get(SPACE_ATTR, space.fingerprint()) != space.fingerprint():
        theirs = sorted(json.loads(attrs[SPACE_ATTR]))
        raise SearchError(
            f"{where} searched another space ({', '.join(theirs)}, other ranges or values); "
            "name another with hydra.sweeper.study_name=..., or search the same space."
        )


def open_study(settings: SearchSettings, space: SearchSpace) -> optuna.Study:
    """The study, made or continued, its sampler seeded past the trials it already has."""
    storage = open_storage(settings.storage)
    _refuse_other_search(storage, settings, space)
    pruner = make_pruner(settings.pruner)
    study = optuna.create_study(
        storage=storage,
        study_name=settings.study_name,
        directions=settings.directions,
        pruner=pruner,
        load_if_exists=True,
    )
    study.set_user_attr(SPACE_ATTR, space.fingerprint())
    study.set_user_attr(OBJECTIVES_ATTR, settings.objectives)
    study.set_user_attr(PRUNER_ATTR, settings.pruner)
    study.sampler = make_sampler(settings, space, len(study.get_trials(deepcopy=False)))
    return study
