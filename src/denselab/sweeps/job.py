"""A job's process in a sweep: its run as a child of the sweep's parent run, named for the
values it sweeps; a job whose config and data already FINISHED is reused, and one of this
sweep that was stopped continues its own run.

The process that launches the sweep (:class:`denselab.sweeps.hydra_hooks.SweepRun`) opens the
parent run before the first job and leaves its id in the environment (SWEEP_ENV), where every
launcher hands it on: joblib's workers and submitit's processes inherit it, SLURM's
``sbatch`` exports it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Optional, Sequence

from mlflow import MlflowClient
from mlflow.entities import Run, RunStatus
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig

from denselab.errors import first_line
from denselab.overrides import override_values
from denselab.sweeps import SWEEP_ENV, TRIAL_ENV
from denselab.sweeps.summary import short_value
from denselab.tracking.holder import process_alive
from denselab.tracking.params import CONFIG_TAG, config_hash
from denselab.tracking.runs import create_run, newest_run, run_name, tracking_uri
from denselab.tracking.store import Store

log = logging.getLogger("denselab")

PARENT_TAG = "mlflow.parentRunId"
KEY_TAG = "sweep_key"
SWEPT_TAG = "swept"
VALUES_TAG = "swept_values"
ALSO_TAG = "also_in_sweeps"  # parents that reuse this FINISHED run as one of their jobs
BEST_TAG = "best_in_sweep"
# A search's trial (denselab.sweeps.trial): its number, and the run of a trial that was
# pruned, which stopped early and so is no finished job for another sweep to reuse.
TRIAL_TAG = "optuna.trial"
STATE_TAG = "optuna.state"


@dataclass
class SweepJob:
    """This job's place in a sweep: the parent, and the swept values it runs with."""

    client: MlflowClient
    parent_id: str
    experiment_id: str
    values: dict[str, str]
    skip_finished: bool

    def run_name(self, base: str) -> str:
        said = " ".join(f"{k.split('.')[-1]}={short_value(v)}" for k, v in self.values.items())
        return f"{said} {base}".strip()  # what differs first: the runs table cuts names short

    def tags(self) -> dict[str, str]:
        tags = {PARENT_TAG: self.parent_id, VALUES_TAG: json.dumps(self.values)}
        if os.environ.get(TRIAL_ENV):
            tags[TRIAL_TAG] = os.environ[TRIAL_ENV]
        return tags

    def finished_run(self, fingerprint: str) -> Optional[Run]:
        """A FINISHED run of the same config in the experiment, the newest that trained all
        its epochs (not a pruned trial); None if none (or when the sweep runs everything
        anew)."""
        if not self.skip_finished:
            return None
        return newest_run(
            self.client,
            self.experiment_id,
            f"tags.{CONFIG_TAG} = '{fingerprint}' and attributes.status = 'FINISHED'",
            accept=lambda run: run.data.tags.get(STATE_TAG) != "PRUNED",
        )

    def stopped_run(self, fingerprint: str) -> Optional[Run]:
        """This sweep's own earlier try of the same config that was stopped (KILLED, or
        RUNNING with its process gone) and can go on from its checkpoint; None otherwise.
        A FAILED try is run anew: going on from it would likely fail the same way."""
        if not self.skip_finished:
            return None
        run = newest_run(
            self.client,
            self.experiment_id,
            f"tags.{CONFIG_TAG} = '{fingerprint}' and tags.`{PARENT_TAG}` = '{self.parent_id}'",
        )
        if run is not None and (
            run.info.status == "KILLED"
            or (run.info.status == "RUNNING" and process_alive(run) is False)
        ):
            return run
        return None

    def reuse(self, run: Run) -> None:
        """Count the FINISHED ``run`` as this sweep's job without running it again."""
        tags = run.data.tags
        if tags.get(PARENT_TAG) == self.parent_id:
            return
        parents = [p for p in tags.get(ALSO_TAG, "").split(",") if p]
        if self.parent_id not in parents:
            self.client.set_tag(run.info.run_id, ALSO_TAG, ",".join([*parents, self.parent_id]))

    def record_failure(self, cfg: DictConfig, overrides: Sequence[str], error: BaseException):
        """A job that failed before its run existed (a swept value out of range, data that
        does not load): a FAILED child with the reason, so that the sweep's table shows it."""
        tags = {**self.tags(), "error": f"{type(error).__name__}: {first_line(error)}"[:5000]}
        tags[CONFIG_TAG] = config_hash(cfg, "")  # its data never loaded: matches no run
        tags["overrides"] = " ".join(overrides)
        run_id = create_run(self.client, self.experiment_id, self.run_name(run_name(cfg)), tags)
        self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))


def sweep_job(
    cfg: DictConfig, overrides: Sequence[str], store: Optional[Store] = None
) -> Optional[SweepJob]:
    """This job's :class:`SweepJob` inside a sweep; None in a single run, or when the parent
    is not in this job's store (``store``, default: the store of ``cfg``; a swept
    tracking.uri has one per job)."""
    parent_id = os.environ.get(SWEEP_ENV)
    if not parent_id:
        return None
    client = (store or Store(tracking_uri(cfg))).client
    try:
        parent = client.get_run(parent_id)
    except MlflowException:
        log.warning("Sweep parent run %s is not in this job's store: a run of its own", parent_id)
        return None
    swept = [k for k in parent.data.tags.get(SWEPT_TAG, "").split(",") if k]
    return SweepJob(
        client,
        parent_id,
        parent.info.experiment_id,
        swept_values(swept, overrides),
        bool(cfg.tracking.skip_finished),
    )


def swept_values(swept: Sequence[str], overrides: Sequence[str]) -> dict[str, str]:
    """The job's value of each swept setting, as its override says it (``lr=0.1``)."""
    given = override_values(overrides)
    return {key: given[key] for key in swept if key in given}



def record_failed_job(cfg: DictConfig, overrides: Sequence[str], error: BaseException) -> None:
    """Record a job that failed before its run existed as a FAILED child of its sweep; a
    courtesy: the job's own error is what is reported, whatever happens here."""
    try:
        job = sweep_job(cfg, overrides)
        if job is not None:
            job.record_failure(cfg, overrides, error)
    except Exception as failed:
        log.debug("The failed job was not recorded in the sweep: %s", failed)
