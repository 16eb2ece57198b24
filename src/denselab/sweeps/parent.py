"""A sweep (``denselab-train -m ...``) as one thing in MLflow: a parent run and its jobs' runs.

The process that launches the sweep (:class:`denselab.sweeps.hydra_hooks.SweepRun`) opens the
parent run before the first job; each job's run is then a child of it
(:mod:`denselab.sweeps.job`, tag ``mlflow.parentRunId``), named for the
values that differ (``... lr=0.1 seed=1``). When the sweep ends, the parent gets the jobs'
table, figures of the swept settings against ``val/acc_best``, the best job, and ends
FINISHED when every job finished, FAILED otherwise.

The same sweep command run again is the same sweep (its parent is found by ``sweep_key``, a
hash of the command's overrides and the sweeper's settings): a job whose identical config
and data (``config_hash``) already FINISHED in the experiment is not run again, and a job of this
sweep that was stopped continues its own run from its checkpoint. ``tracking.skip_finished
=false`` runs everything anew, under a new parent.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from mlflow.entities import RunStatus
from omegaconf import DictConfig, OmegaConf

from denselab import overrides
from denselab.sweeps import seeds, summary
from denselab.sweeps.job import (
    ALSO_TAG,
    BEST_TAG,
    KEY_TAG,
    PARENT_TAG,
    STATE_TAG,
    SWEPT_TAG,
    TRIAL_TAG,
    VALUES_TAG,
)
from denselab.tracking.datasets import CONTEXT_TAG
from denselab.tracking.holder import holder_tags
from denselab.tracking.params import CONFIG_TAG
from denselab.tracking.runs import (
    create_run,
    experiment_name,
    newest_run,
    run_address,
    take_over,
    tracking_uri,
)
from denselab.tracking.store import (
    get_or_create_experiment,
    hide_passwords,
    open_store,
    shown_uri,
)
from denselab.training.threads import machine_cpus

log = logging.getLogger("denselab")

# A search's story (denselab.sweeps.search_report), told first in the parent's description.
SEARCH_NOTE_TAG = "search_note"
# On each run of a seed sweep's best setting: the parent that chose it.
BEST_SETTING_TAG = "best_setting_in_sweep"

# -- what a sweep is -------------------------------------------------------------------


def _swept(config: DictConfig) -> dict[str, str]:
    """Each setting a sweep varies, with how the command says it: the sweep overrides
    (``seed`` -> ``seed=1,2``), then the sweeper's search space (``hydra.sweeper.params``,
    named by key)."""
    swept = overrides.swept(config.hydra.overrides.task)
    for key in OmegaConf.select(config, "hydra.sweeper.params") or {}:
        swept.setdefault(str(key), str(key))
    return swept


def swept_keys(config: DictConfig) -> list[str]:
    """The settings a sweep varies: the command's sweep overrides (``seed=1,2``,
    ``lr=range(...)``) and the sweeper's search space (``hydra.sweeper.params``)."""
    return list(_swept(config))


def sweep_key(config: DictConfig) -> str:
    """What makes two commands the same sweep: the overrides and the sweeper's settings
    (search space, sampler, seed), not the launcher that runs the jobs nor how many trials
    a search runs (more trials continue the same search) or how many at once."""
    sweeper = OmegaConf.to_container(config.hydra.sweeper, resolve=False)
    for key in ("n_trials", "n_jobs"):
        sweeper.pop(key, None)
    blob = json.dumps(
        {"task": sorted(config.hydra.overrides.task), "sweeper": sweeper},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def sweep_command() -> str:
    program = Path(sys.argv[0]).name
    if program in ("__main__.py", "train.py"):
        program = "python -m denselab.train"
    return " ".join([program, *map(shlex.quote, sys.argv[1:])])


def jobs_at_once(config: DictConfig) -> int:
    """How many of the sweep's jobs run side by side on this machine: joblib's ``n_jobs``
    (-1: one per CPU), one for Hydra's basic launcher, SLURM and other machines."""
    target = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
    if "joblib" in target.lower():
        n_jobs = int(OmegaConf.select(config, "hydra.launcher.n_jobs") or -1)
        cpus = machine_cpus()
        return max(1, n_jobs if n_jobs > 0 else cpus + 1 + n_jobs)
    return 1


# -- the launching process: the parent run ---------------------------------------------


@dataclass
class Sweep:
    client: Any  # MlflowClient
    parent_id: str
    experiment_id: str
    swept: list[str]
    command: str
    closed: bool = False


def open_sweep(config: DictConfig) -> Sweep:
    """The sweep's parent run, RUNNING: this sweep's own from an earlier try of the same
    command, or a new one. Raises DenselabError when the store cannot be used."""
    uri = tracking_uri(config)
    client = open_store(uri)
    experiment_id = get_or_create_experiment(client, experiment_name(config))
    swept, key, command = swept_keys(config), sweep_key(config), sweep_command()
    earlier = None
    if config.tracking.skip_finished:
        earlier = newest_run(client, experiment_id, f"tags.{KEY_TAG} = '{key}'")
    if earlier is not None:
        parent_id = earlier.info.run_id
        # Refused while the sweep that holds it lives (the same command twice at once): on
        # this host by its pid, on another by its heartbeat; a parent from before heartbeats
        # on another host cannot be told alive, and is taken over.
        take_over(
            client, parent_id, {"command": command}, "sweep",
            unknown_refused=False, finished_refused=False,
        )
        log.info("Sweep: continuing parent run %s (%s)", parent_id, earlier.info.run_name)
    else:
        tags = {
            KEY_TAG: key,
            SWEPT_TAG: ",".join(swept),
            "sweep": "parent",
            "dataset": str(config.data.name),
            "launcher": str(OmegaConf.select(config, "hydra.launcher._target_") or ""),
            "sweeper": str(OmegaConf.select(config, "hydra.sweeper._target_") or ""),
            "start_dir": str(Path.cwd()),
            **holder_tags(),
            "command": command,
        }
        parent_id = create_run(client, experiment_id, parent_name(config), tags)
        log.info("Sweep: parent run %s in %s", parent_id, shown_uri(uri))
    return Sweep(client, parent_id, experiment_id, swept, command)


def parent_name(config: DictConfig) -> str:
    """``digits sweep seed=1,2,3,4``: the experiment and what the command sweeps."""
    said = " ".join(_swept(config).values())
    return f"{experiment_name(config)} sweep {said}".strip()[:250]


def close_sweep(sweep: Sweep, stopped: bool = False) -> str:
    """Summarise the jobs on the parent run and end it: FINISHED when every job did,
    FAILED otherwise, KILLED when the sweep was ``stopped``. Returns the status."""
    if sweep.closed:
        return ""
    sweep.closed = True
    client, parent_id = sweep.client, sweep.parent_id
    if stopped:  # a signal: seconds to leave, so no summary; the next try of the sweep makes it
        client.set_terminated(parent_id, RunStatus.to_string(RunStatus.KILLED))
        return "KILLED"
    rows = job_rows(sweep)
    table = summary.jobs_table(rows, sweep.swept)
    data = summary.data_note(rows, sweep.swept)
    if data:
        client.set_tag(parent_id, "data", "same" if data.startswith("All ") else "differs")
    client.log_dict(parent_id, _table_json(table), "tables/sweep_jobs.json")
    client.log_text(parent_id, table.to_csv(index=False), "tables/sweep_jobs.csv")
    for name, fig in summary.figures(table, sweep.swept).items():
        client.log_figure(parent_id, fig, f"figures/{name}.png", save_kwargs={"dpi": 100})
    # Counts are tags, not metrics: metrics would make the UI's charts of every run.
    counts = summary.status_counts(table)
    setting = _log_seeds(client, parent_id, table, sweep.swept)
    if setting is not None:  # the best job is the best seed of the best setting
        best = summary.best_job(table[table["run_id"].isin(setting["run_ids"].split(","))])
    else:
        best = summary.best_job(table)
    if best is not None:
        client.set_tag(parent_id, "best_run_id", best["run_id"])
        client.set_tag(parent_id, "best_run_name", best["run_name"])
        client.set_tag(best["run_id"], BEST_TAG, parent_id)
        for metric in (summary.OBJECTIVE, "test/acc") if setting is None else ():
            if best[metric] == best[metric]:  # not NaN
                client.log_metric(parent_id, metric, float(best[metric]))
    note = summary.description(table, sweep.swept, hide_passwords(sweep.command), data)
    search = client.get_run(parent_id).data.tags.get(SEARCH_NOTE_TAG)
    if search:  # after the best job's line: the UI shows a description's first lines
        head, _, rest = note.partition("\n\n")
        note = f"{head}\n\n{search}\n\n{rest}"
    client.set_tag(parent_id, "mlflow.note.content", note)
    status = summary.sweep_status(table)
    client.set_terminated(parent_id, status)
    said = ", ".join(f"{n} {s}" for s, n in counts.items())
    client.set_tag(parent_id, "jobs", said)
    message = f"Sweep {status}: {len(table)} jobs ({said})"
    if setting is not None:
        message += (
            f"; best setting by mean val/acc_best: {setting['setting']} "
            f"({setting['val/acc_best mean']:.4f} over {setting['n']} seeds)"
        )
    elif best is not None:
        message += f"; best by val/acc_best: {best['run_name']} ({best['val/acc_best']:.4f})"
    log.info(message)
    address = run_address(client.tracking_uri, sweep.experiment_id, parent_id)
    log.info("The sweep in the MLflow UI: %s", address)
    return status


def _log_seeds(client, parent_id: str, table, swept) -> Optional[Any]:
    """A sweep over the seed: its settings over their seeds (tables/sweep_settings.json), the
    best one by mean val/acc_best tagged on the parent and on its seeds' runs, and its means
    and standard deviations as the parent's metrics. Returns the best setting's row."""
    by_seeds = seeds.seed_table(table, swept)
    if by_seeds is None:
        return None
    client.log_dict(parent_id, _table_json(by_seeds), "tables/sweep_settings.json")
    setting = seeds.best_setting(by_seeds)
    if setting is None:
        return None
    client.set_tag(parent_id, "best_setting", setting["setting"])
    client.set_tag(parent_id, "best_setting_runs", setting["run_ids"])
    for run_id in setting["run_ids"].split(","):
        client.set_tag(run_id, BEST_SETTING_TAG, parent_id)
    for score in seeds.SCORES:
        for stat, suffix in (("mean", ""), ("std", "_std")):
            value = setting[f"{score} {stat}"]
            if value == value:  # not NaN
                client.log_metric(parent_id, f"{score}{suffix}", float(value))
    client.set_tag(parent_id, "best_setting_seeds", str(setting["n"]))
    return setting


def _table_json(table) -> dict:
    # MLflow's table artifact format (what log_table writes), written whole: log_table
    # would append to the table of an earlier try of the same sweep.
    data = json.loads(table.to_json(orient="split", index=False))
    return {"columns": data["columns"], "data": data["data"]}


def _all_runs(client, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def job_rows(sweep: Sweep) -> list[dict[str, Any]]:
    """One row per job (config) of the sweep: its FINISHED run where it has one, else its
    newest try."""
    pid = sweep.parent_id
    runs = _all_runs(sweep.client, sweep.experiment_id, f"tags.`{PARENT_TAG}` = '{pid}'")
    runs += _all_runs(sweep.client, sweep.experiment_id, f"tags.{ALSO_TAG} LIKE '%{pid}%'")
    chosen: dict[str, Any] = {}
    for run in runs:
        key = run.data.tags.get(CONFIG_TAG, run.info.run_id)
        held = chosen.get(key)
        if held is None or _rank(run) > _rank(held):
            chosen[key] = run
    return [_row(run, sweep) for run in chosen.values()]


def _rank(run) -> tuple:
    return (run.info.status == "FINISHED", run.info.start_time or 0)


def _failed_trial(run, tags) -> Optional[str]:
    return "FAIL" if TRIAL_TAG in tags and run.info.status != "FINISHED" else None


def _row(run, sweep: Sweep) -> dict[str, Any]:
    tags, metrics = run.data.tags, run.data.metrics
    values = json.loads(tags.get(VALUES_TAG, "{}"))
    ended, started = run.info.end_time, run.info.start_time
    nan = float("nan")
    return {
        "run_name": run.info.run_name,
        **{key: values.get(key, run.data.params.get(key)) for key in sweep.swept},
        "run_id": run.info.run_id,
        "status": run.info.status,
        "val/acc_best": metrics.get("val/acc_best", nan),
        "test/acc": metrics.get("test/acc", nan),
        "params_total": int(run.data.params.get("params_total", 0)) or None,
        "duration_s": round((ended - started) / 1000, 1) if ended and started else None,
        "reused": tags.get(PARENT_TAG) != sweep.parent_id,
        "trial": int(tags[TRIAL_TAG]) if TRIAL_TAG in tags else None,
        "trial_state": tags.get(STATE_TAG) or _failed_trial(run, tags),
        "datasets": {
            tag.value: d.dataset.digest
            for d in (run.inputs.dataset_inputs if run.inputs else [])
            for tag in d.tags
            if tag.key == CONTEXT_TAG
        },
    }
