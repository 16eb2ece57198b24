"""A search's job, as its trial: it reports ``val/acc`` every epoch to the study, through
the study's storage, and stops at the end of an epoch the pruner gives up on.

A pruned trial's run ends FINISHED like any other: tested, drawn and its model logged from
its best checkpoint, and tagged ``optuna.state=PRUNED`` with the epoch it stopped after. When
the job is done, its objectives' values (and its run) are left on the trial, where the
sweeper reads them to tell the study COMPLETE or PRUNED.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import optuna
import pytorch_lightning as pl

from denselab.sweeps import STORAGE_ENV, STUDY_ENV, TRIAL_ENV
from denselab.sweeps.job import STATE_TAG
from denselab.sweeps.study import OBJECTIVES_ATTR, PRUNER_ATTR, make_pruner, open_storage

log = logging.getLogger("denselab")

PRUNED_EPOCH_TAG = "optuna.pruned_epoch"
# Left on the trial by its job (user attributes), read by the sweeper.
VALUES_ATTR = "denselab.values"
RUN_ATTR = "denselab.run_id"
PRUNED_ATTR = "denselab.pruned_epoch"
# What a job reports each epoch: the pruner compares trials on it.
REPORTED = "val/acc"


@dataclass
class TrialLink:
    """This job's trial in the study."""

    study: optuna.Study
    trial: optuna.Trial
    number: int

    @classmethod
    def from_env(cls) -> Optional["TrialLink"]:
        """The trial this process's job runs for; None outside a search."""
        number = os.environ.get(TRIAL_ENV)
        if not number or not os.environ.get(STUDY_ENV) or not os.environ.get(STORAGE_ENV):
            return None
        storage = open_storage(os.environ[STORAGE_ENV], create=False)
        name = os.environ[STUDY_ENV]
        study_id = storage.get_study_id_from_name(name)
        pruner = make_pruner(storage.get_study_user_attrs(study_id)[PRUNER_ATTR])
        study = optuna.load_study(study_name=name, storage=storage, pruner=pruner)
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, int(number))
        return cls(study, optuna.trial.Trial(study, trial_id), int(number))

    def callbacks(self) -> list[pl.Callback]:
        """The epochs' reporter; none for two objectives, which Optuna does not prune."""
        return [ReportEpochs(self)] if len(self.study.directions) == 1 else []

    def record(self, client: Any, run_id: str, own: bool) -> None:
        """Leave the job's outcome on the trial: its objectives' values from its run, the
        run, the epoch it was pruned after; tag its own run with the trial's state."""
        run = client.get_run(run_id)
        objectives = self.study.user_attrs.get(OBJECTIVES_ATTR, ["val/acc_best"])
        values = [_objective(run, name) for name in objectives]
        self.trial.set_user_attr(VALUES_ATTR, values)
        self.trial.set_user_attr(RUN_ATTR, run_id)
        pruned = None
        if run.data.tags.get(STATE_TAG) == "PRUNED":
            pruned = run.data.tags.get(PRUNED_EPOCH_TAG)
        if pruned is not None:
            self.trial.set_user_attr(PRUNED_ATTR, int(pruned))
        if own and pruned is None:
            client.set_tag(run_id, STATE_TAG, "COMPLETE")


def _objective(run: Any, name: str) -> Optional[float]:
    if name in run.data.metrics:
        return float(run.data.metrics[name])
    if name in run.data.params:
        return float(run.data.params[name])
    return None


class ReportEpochs(pl.Callback):
    """Report each epoch's ``val/acc`` to the trial; stop training at the end of an epoch
    the pruner gives up on, and tag the run PRUNED with that epoch."""

    def __init__(self, link: TrialLink) -> None:
        self.link = link
        self.pruned_epoch: Optional[int] = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the module's own epoch end, where val/acc is logged; not the sanity check.
        value = trainer.callback_metrics.get(REPORTED)
        if trainer.sanity_checking or value is None or not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch
        with warnings.catch_warnings():
            # A continued trial reports again the epochs its stopped try reported: ignored.
            warnings.simplefilter("ignore")
            self.link.trial.report(float(value), epoch)
        if self.link.trial.should_prune():
            self.pruned_epoch = epoch
            trainer.should_stop = True
            log.info(
                "Trial %d pruned after epoch %d (val/acc %.4f): below the trials before it; "
                "it ends with its best epoch's model",
                self.link.number, epoch, float(value),
            )
            for logger in trainer.loggers:
                if hasattr(logger, "tag"):
                    logger.tag(STATE_TAG, "PRUNED")
                    logger.tag(PRUNED_EPOCH_TAG, str(epoch))
