"""Hydra callbacks: work done once per command, around the jobs it launches."""

from __future__ import annotations

import logging
import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from denselab.config import validate_config
from denselab.errors import DenselabError

log = logging.getLogger(__name__)


class PrepareTrackingStore(Callback):
    """Create the MLflow store and experiment before a sweep's first job starts.

    A fresh sqlite DB opened by parallel jobs races its schema migration and can break for
    good; once it exists, many writers are fine. A single run needs no such step: its one
    job opens the store itself.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # MLflow takes seconds to import: only a sweep pays for it here.
        from denselab.tracking import (
            experiment_name,
            get_or_create_experiment,
            open_store,
            tracking_uri,
        )

        try:
            validate_config(config)
            client = open_store(tracking_uri(config))
            get_or_create_experiment(client, experiment_name(config))
        except DenselabError as err:
            # Each job reports it again, as one sentence, and fails; nothing to add here.
            log.debug("Tracking store not prepared: %s", err)


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
    from denselab.errors import ConfigError
    from denselab.ranks import device_count

    count = device_count(cfg.trainer.get("devices", 1))
    strategy = str(cfg.trainer.get("strategy", "auto"))
    if (count or 1) * cfg.trainer.get("num_nodes", 1) > 1 and "spawn" not in strategy:
        raise ConfigError(
            f"trainer.devices={cfg.trainer.devices} inside a sweep (-m) would start the whole "
            "sweep again on every device; use trainer.strategy=ddp_spawn, or one device per "
            "job (trainer.devices=1) and a parallel launcher."
        )
