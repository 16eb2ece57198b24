"""Hydra callbacks: work done once per command, around the jobs it launches."""

from __future__ import annotations

import logging
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
