"""``denselab-train rerun=<run id>``: a new run with a logged run's settings, to check its
result or to train it again on another machine.

The settings are read back from the run's ``config.yaml``, as :mod:`resume
<denselab.tracking.resume>` reads them; the command line may change what resume may change
(where the data and the store are, the devices, more epochs, figures), nothing that would
make it a different network. The new run is tagged ``rerun_of``. On the CPU, with the run's
own seed and thread count, it reproduces the original's history exactly.
"""

from __future__ import annotations

from typing import Optional, Sequence

from mlflow.exceptions import MlflowException
from omegaconf import DictConfig

from denselab.errors import ConfigError, TrackingError
from denselab.tracking.resume import run_config
from denselab.tracking.store import Store, sqlite_path

RERUN_TAG = "rerun_of"


def prepare_rerun(cfg: DictConfig, overrides: Sequence[str], store: Store) -> Optional[DictConfig]:
    """The settings of the run ``cfg.rerun`` names, for a new run; None without ``rerun``.
    Raises DenselabError, before any run exists, for a run that cannot be rerun."""
    wanted = cfg.get("rerun")
    if not wanted:
        return None
    if not store.exists():
        raise TrackingError(
            f"rerun={wanted} needs the MLflow store the run lives in, and there is none at "
            f"{sqlite_path(store.uri)}; start from the directory the run started in, or give "
            "tracking.uri=..."
        )
    try:
        run = store.client.get_run(str(wanted))
    except MlflowException:
        run = None
    if run is None or run.info.lifecycle_stage == "deleted":
        raise ConfigError(
            f"rerun={wanted}: there is no such run in the MLflow store at {store.uri}; copy the "
            "run id from the MLflow UI, or give the store it lives in with tracking.uri=..."
        )
    run_cfg = run_config(store.client, run, cfg, overrides, store.uri, f"rerun={wanted}")
    run_cfg.resume = None
    run_cfg.rerun = run.info.run_id
    return run_cfg
