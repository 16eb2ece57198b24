"""Hydra callbacks: work done once per command, around the jobs it launches."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import sys
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from denselab.config import validate_config
from denselab.errors import ConfigError, DenselabError
from denselab.sweeps import SWEEP_ENV
from denselab.training.devices import device_count

log = logging.getLogger(__name__)


# The parent's heartbeat, kept out of the callback: joblib's launcher pickles the callbacks
# with every job, and a running context cannot be pickled.
_PARENT_BEATS = contextlib.ExitStack()


class SweepRun(Callback):
    """A sweep's parent run in MLflow (:mod:`denselab.sweeps.parent`), open while its jobs run.

    Opened before the first job (which also creates the store and experiment once: a fresh
    sqlite DB opened by parallel jobs races its schema migration), closed with the jobs'
    summary when the sweep ends. Hydra skips ``on_multirun_end`` when a job failed, and a
    signal skips it too, so the parent is also closed when the process exits.
    """

    def __init__(self) -> None:
        self.sweep = None
        self.stopped: Optional[int] = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Here, not at the top: Hydra imports this module for every command, and MLflow
        # takes seconds to import; a config error must answer at once.
        from denselab.sweeps import parent as sweeps
        from denselab.tracking.heartbeat import DEFAULT_INTERVAL, heartbeat
        from denselab.tracking.signals import on_stop
        from denselab.training.threads import JOBS_ENV

        try:
            validate_config(config)
            self.sweep = sweeps.open_sweep(config)
        except DenselabError as err:
            log.error(str(err))
            sys.exit(1)
        os.environ[SWEEP_ENV] = self.sweep.parent_id
        os.environ[JOBS_ENV] = str(sweeps.jobs_at_once(config))
        # The parent is held by this process like a run: another host tells it alive by
        # its heartbeat, and refuses to take it over (the same sweep started twice).
        interval = float(config.tracking.get("heartbeat_interval", DEFAULT_INTERVAL))
        _PARENT_BEATS.enter_context(heartbeat(self.sweep.client, self.sweep.parent_id, interval))
        atexit.register(self.close)
        on_stop(self._stopped)  # Hydra's basic launcher: the job's own signal handling
        for signum in (signal.SIGINT, signal.SIGTERM):  # other launchers: this process's
            signal.signal(signum, self._on_signal)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.close()

    def close(self) -> None:
        from denselab.sweeps import parent as sweeps

        _PARENT_BEATS.close()
        if self.sweep is not None and not self.sweep.closed:
            try:
                sweeps.close_sweep(self.sweep, stopped=self.stopped is not None)
            except Exception as err:  # the jobs are done; say why the summary is missing
                log.error("The sweep's parent run %s was not summarised: %s",
                          self.sweep.parent_id, err)

    def _stopped(self, signum: int) -> None:
        self.stopped = signum
        self.close()

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopped = signum
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        sys.exit(128 + signum)


class CheckSearch(Callback):
    """Refuse an Optuna search that cannot run (an unknown sampler, a space that does not
    parse, a storage that does not answer or holds another search under the study's name)
    before the sweep's parent run or anything else is made."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        target = str(config.hydra.sweeper.get("_target_", ""))
        if "hydra_optuna_sweeper" in target:
            log.error(
                "hydra/sweeper=optuna picked Hydra's old Optuna plugin (optuna<3, which "
                "minimises by default) over denselab's own: pip uninstall hydra-optuna-sweeper"
            )
            sys.exit(1)
        from denselab.sweeps.study import is_search

        if not is_search(config):
            return
        from denselab.sweeps.search import plan_search  # Optuna: a search only

        try:
            plan_search(config)
        except DenselabError as err:
            log.error(str(err))
            sys.exit(1)


class RefuseRelaunchingDevices(Callback):
    """Refuse a sweep whose jobs would each train on several devices by relaunching.

    Lightning starts more devices by running the command again for each; inside a Hydra
    multirun that command is the whole sweep, which would then run once more per device.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            refuse_relaunching_devices(config)
        except DenselabError as err:
            log.error(str(err))
            sys.exit(1)


def refuse_relaunching_devices(cfg: DictConfig) -> None:
    count = device_count(cfg.trainer.get("devices", 1))
    strategy = str(cfg.trainer.get("strategy", "auto"))
    if (count or 1) * cfg.trainer.get("num_nodes", 1) > 1 and "spawn" not in strategy:
        raise ConfigError(
            f"trainer.devices={cfg.trainer.devices} inside a sweep (-m) would start the whole "
            "sweep again on every device; use trainer.strategy=ddp_spawn, or one device per "
            "job (trainer.devices=1) and a parallel launcher."
        )
