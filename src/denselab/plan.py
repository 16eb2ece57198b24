"""Which run this is, decided once, before any run is created or changed: a new run, a run
to continue (``resume=``), a sweep job whose config and data already FINISHED (reused, not
run again), or a sweep job stopped earlier (continued from its checkpoint).

A job is its config and its data, so the plan loads the data first: data that cannot be
loaded is a sentence, not a FAILED run. The plan holds the one store client the command
uses, and opens the run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import pytorch_lightning as pl
from hydra.utils import instantiate
from mlflow.entities import Run
from omegaconf import DictConfig, open_dict

from denselab.config import check_against_data
from denselab.data.base import ImageDataModule
from denselab.errors import ConfigError
from denselab.overrides import override_keys
from denselab.sweeps import TRIAL_ENV
from denselab.sweeps.job import SweepJob, sweep_job
from denselab.tracking.code_state import log_code_state
from denselab.tracking.heartbeat import DEFAULT_INTERVAL, heartbeat
from denselab.tracking.logger import RunLogger
from denselab.tracking.params import config_hash
from denselab.tracking.rerun import RERUN_TAG, prepare_rerun
from denselab.tracking.resume import Resume, may_change, prepare_resume, refuse_other_data
from denselab.tracking.runs import run_name, run_status, start_run, tracking_uri
from denselab.tracking.store import Store, shown_uri
from denselab.tracking.system_metrics import system_metrics
from denselab.training.devices import joined_run, share_run
from denselab.training.trainer import load_data, quiet_irrelevant_warnings

log = logging.getLogger("denselab")


@dataclasses.dataclass
class RunPlan:
    """What one command trains, and in which MLflow run."""

    cfg: DictConfig  # the run's settings: a resumed run's own, with the changes allowed
    data: ImageDataModule  # its splits loaded
    data_digest: str  # what the data is (denselab.data.digest)
    store: Store
    output_dir: Path
    overrides: tuple[str, ...] = ()
    resume: Optional[Resume] = None  # the run to continue, and from which checkpoint
    job: Optional[SweepJob] = None  # its place in a sweep
    finished: Optional[Run] = None  # a FINISHED run with the same config and data, reused
    trial: Any = None  # a search's job: its trial (denselab.sweeps.trial.TrialLink)

    @property
    def run_name(self) -> str:
        """The MLflow run's name: what ran; in a sweep, what the job varies first."""
        name = run_name(self.cfg)
        return self.job.run_name(name) if self.job else name

    @property
    def checkpoint_dir(self) -> Path:
        return self.resume.checkpoint_dir if self.resume else self.output_dir / "checkpoints"

    @property
    def checkpoint(self) -> Optional[Path]:
        """What training continues from; None: from epoch 0."""
        return self.resume.checkpoint if self.resume else None

    def callbacks(self) -> list:
        """What the run's Trainer needs beyond its figures: a search's trial reporter."""
        return self.trial.callbacks() if self.trial is not None else []

    def record_trial(self, run_id: str) -> None:
        """A search's job, done: its outcome left on its trial for the sweeper to tell."""
        if self.trial is not None:
            self.trial.record(self.store.client, run_id, own=self.finished is None)

    @contextlib.contextmanager
    def open(self) -> Iterator[RunLogger]:
        """The run's writer, inside the run's life: created (or taken over) on rank zero,
        which ends it FINISHED, FAILED or KILLED; joined on the other ranks."""
        run_id = joined_run()
        if run_id is not None:  # not rank zero: rank zero created the run and ends it
            yield instantiate(self.cfg.logger, tracking_uri=self.store.uri, run_id=run_id)
            return
        tags = self.job.tags() if self.job else {}
        if self.cfg.get("rerun"):
            tags[RERUN_TAG] = self.cfg.rerun
        client, run_id, uri = start_run(
            self.cfg,
            self.data_digest,
            self.overrides,
            self.resume.run_id if self.resume else None,
            tags=tags,
            name=self.run_name if self.job else None,
            store=self.store,
        )
        share_run(run_id)
        log.info("MLflow run %s (%s) in %s", run_id, self.run_name, shown_uri(uri))
        interval = float(self.cfg.tracking.get("heartbeat_interval", DEFAULT_INTERVAL))
        with run_status(client, run_id, self.checkpoint_dir / "last.ckpt"):
            with heartbeat(client, run_id, interval), self._system_metrics(run_id, uri):
                run = instantiate(self.cfg.logger, tracking_uri=uri, run_id=run_id)
                self._log_origin(run)
                yield run

    def _log_origin(self, run: RunLogger) -> None:
        """Where the run came from, beyond its settings: the run it reruns, and the code it
        runs on (package versions; uncommitted changes, which its description names)."""
        if self.cfg.get("rerun"):
            run.description_notes.append(f"**Rerun of** run `{self.cfg.rerun}`")
        code = log_code_state(run)
        if code:
            run.description_notes.append(code)

    def _system_metrics(self, run_id: str, uri: str) -> contextlib.AbstractContextManager:
        tracking = self.cfg.tracking
        if not tracking.get("system_metrics", True):
            return contextlib.nullcontext()
        interval = float(tracking.get("system_metrics_interval", 5.0))
        return system_metrics(run_id, uri, interval, resumed=self.resume is not None)


def plan_run(cfg: DictConfig, overrides: Sequence[str], output_dir: Path) -> RunPlan:
    """The plan of the run ``cfg`` asks for. Raises DenselabError, before any run exists or
    changes, for a run that cannot be made: a resume that cannot be done, data that cannot
    be loaded, other data under a resumed run."""
    store = Store(tracking_uri(cfg))
    job = sweep_job(cfg, overrides, store) if not cfg.get("resume") else None
    resume = prepare_resume(cfg, overrides, output_dir, store)
    cfg = resume.cfg if resume else (prepare_rerun(cfg, overrides, store) or cfg)
    quiet_irrelevant_warnings()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    data = load_data(cfg)
    check_against_data(cfg, data.class_names)
    digest = data.content_digest()
    if resume is not None:
        refuse_other_data(resume, digest)
    plan = RunPlan(cfg, data, digest, store, output_dir, tuple(overrides), resume, job)
    plan.trial = _trial() if job is not None else None
    return _as_sweep_job(plan) if job is not None else plan


def _trial() -> Any:
    """A search's job: its trial in the study; None in any other sweep."""
    if not os.environ.get(TRIAL_ENV):
        return None
    from denselab.sweeps.trial import TrialLink  # Optuna: a search's job only

    return TrialLink.from_env()


def _as_sweep_job(plan: RunPlan) -> RunPlan:
    """A sweep job's plan: the FINISHED run of the same config and data to reuse, or this
    sweep's stopped try of it to continue, or a new run."""
    fingerprint = config_hash(plan.cfg, plan.data_digest)
    done = plan.job.finished_run(fingerprint)
    if done is not None:
        return dataclasses.replace(plan, finished=done)
    resume = _resume_stopped(plan, fingerprint)
    if resume is None:
        return plan
    return dataclasses.replace(plan, cfg=resume.cfg, resume=resume)


def _resume_stopped(plan: RunPlan, fingerprint: str) -> Optional[Resume]:
    """The :class:`Resume` of this sweep's earlier, stopped try of the same job (config
    ``fingerprint``), checked as ``resume=`` checks it; None when there is none that can go
    on, and the job starts anew.

    The stopped run has the same config (its config_hash), so of the job's overrides only
    those a resume may change (where the data and store are, ...) are passed on: comparing
    the others again would trip on what the first resume wrote back (an absolute data.dir).
    """
    stopped = plan.job.stopped_run(fingerprint)
    if stopped is None:
        return None
    resumed = plan.cfg.copy()
    with open_dict(resumed):
        resumed.resume = stopped.info.run_id
    keys = override_keys(plan.overrides, keep_resume=True)
    allowed = [override for override, key in zip(plan.overrides, keys) if may_change(key)]
    try:
        resume = prepare_resume(resumed, allowed, plan.output_dir, plan.store)
    except ConfigError as err:
        log.warning("Not continuing run %s (%s): this job starts anew", stopped.info.run_id, err)
        return None
    log.info("Continuing this job's stopped run %s from its checkpoint", stopped.info.run_id)
    return resume
