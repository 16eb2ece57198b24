"""denselab from Python: ``fit`` a network as ``denselab-train`` would, ``load`` one to classify.

>>> from denselab import fit, load
>>> result = fit("data=digits", "trainer.max_epochs=3")     # the command line's overrides
>>> result.metrics["test/acc"], result.run_id
>>> clf = load(result.model_uri)                            # or models:/<name>@champion, a .ckpt
>>> clf.predict(images)                                     # a DataFrame, one row per image

``fit`` composes the same config from the same overrides (Hydra's compose API), runs in the
caller's process, and logs the same MLflow run; bad overrides raise the same
:class:`~denselab.errors.DenselabError` sentences the command prints.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Iterator, Optional

from hydra import compose, initialize_config_module
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from denselab.config import register_schemas
from denselab.errors import ConfigError, first_line
from denselab.train import RunResult, train

# What fit() returns: the run's result, the same type denselab-train's train() returns.
FitResult = RunResult


def compose_config(overrides: tuple[str, ...]):
    """The run's config, composed from conf/ as ``denselab-train <overrides>`` would."""
    register_schemas()
    try:
        with initialize_config_module(config_module="denselab.conf", version_base="1.3"):
            return compose("config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(
            f"The overrides {' '.join(overrides)} do not compose into a config "
            f"({first_line(err)}); check them with `denselab-train --cfg job <overrides>`."
        ) from None


def fit(*overrides: str, output_dir: Optional[str | Path] = None) -> RunResult:
    """Train one network as ``denselab-train <overrides>`` would, in this process.

    ``output_dir`` receives the checkpoints (default: ``outputs/<date>/<time>`` under the
    current folder, as the command's). Raises DenselabError for bad input; the MLflow run,
    once created, always ends FINISHED, FAILED or KILLED.
    """
    flat: list[str] = []
    for item in overrides:  # fit(["a=1", "b=2"]) as well as fit("a=1", "b=2")
        flat.extend([item] if isinstance(item, str) else list(item))
    cfg = compose_config(tuple(flat))
    out = Path(output_dir) if output_dir else _new_output_dir()
    with process_as_found():
        _say_what_the_command_says()
        return train(cfg, out, flat)


def load(model: str | Path, tracking_uri: Optional[str] = None):
    """A trained network to classify images with: ``runs:/<run id>/model``,
    ``models:/<name>@<alias>``, an MLflow model folder or a ``.ckpt`` checkpoint.
    ``tracking_uri``: the store of runs:/ and models:/ URIs (default: $MLFLOW_TRACKING_URI,
    else ./mlruns). Returns a :class:`~denselab.serving.classifier.Classifier`: ``.predict(images)``
    (an array, or a folder, glob, .npy or IDX path) gives a DataFrame, ``.classes`` the
    class names."""
    with process_as_found():
        from denselab.serving.classifier import load as load_classifier

        return load_classifier(model, tracking_uri)


@contextlib.contextmanager
def process_as_found() -> Iterator[None]:
    """Leave the caller's process as it was: its environment, MLflow's tracking and registry
    URIs, the levels and handlers of its loggers, its warning filters and torch's thread
    count. A notebook's later MLflow calls must not land in the store a fit wrote to, nor a
    second fit find the first one's run id in the environment."""
    import mlflow.tracking._model_registry.utils as registry
    import mlflow.tracking._tracking_service.utils as tracking
    import torch

    saved_env = dict(os.environ)
    uris = (tracking._tracking_uri, registry._registry_uri)
    loggers = {
        name: (logger, logger.level, list(logger.handlers), logger.propagate, logger.disabled)
        for name, logger in [("", logging.getLogger()), *logging.root.manager.loggerDict.items()]
        if isinstance(logger, logging.Logger)
    }
    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():  # the filters as they were, once it ends
            yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        tracking._tracking_uri, registry._registry_uri = uris
        for logger, level, handlers, propagate, disabled in loggers.values():
            logger.setLevel(level)
            logger.handlers[:] = handlers
            logger.propagate, logger.disabled = propagate, disabled
        torch.set_num_threads(threads)


def _say_what_the_command_says() -> None:
    """Where the caller's process has set up no logging (a notebook, a script), print
    denselab's lines as the command does: the run's data, its accuracy table and address.
    A caller who set up logging keeps their own; process_as_found undoes this after."""
    logger = logging.getLogger("denselab")
    if logger.hasHandlers():
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("[denselab] %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def _new_output_dir() -> Path:
    """outputs/<date>/<time> under the current folder, as Hydra names a run's; a second
    fit in the same second gets a suffix."""
    base = Path.cwd() / "outputs" / time.strftime("%Y-%m-%d") / time.strftime("%H-%M-%S")
    out, n = base, 1
    while out.exists():
        out, n = base.with_name(f"{base.name}-{n}"), n + 1
    return out
