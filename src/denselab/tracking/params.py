"""What a run is compared by: its params (the settings that change the result, flattened),
and its config hash, which makes two runs the same run."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from denselab.data.digest import DATA_TAG
from denselab.tracking.store import hide_passwords

CONFIG_TAG = "config_hash"

# What says how a run is recorded, located or shown, not what was trained: no param of its
# own (config.yaml, logged to every run, holds the whole config).
PLUMBING_GROUPS = ("tracking", "logger", "checkpoint", "callbacks", "hydra")
PLUMBING_KEYS = (
    "rerun",  # where the settings came from, not what they are (tag rerun_of)
    "data.dir",
    "data.csv",
    "data.images",
    "data.mirrors",
    "data.system_dirs",
    "data.eval_batch_size",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.num_sanity_val_steps",
    "trainer.log_every_n_steps",
    "trainer.default_root_dir",
)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"hidden_sizes": [128]}}`` -> ``{"model.hidden_sizes": "[128]"}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value if isinstance(value, (int, float, bool, str)) else str(value)
    return flat


def run_params(cfg: DictConfig) -> dict[str, Any]:
    """The settings a person compares runs by: the data, the model, the optimizer (by class
    name, ``optimizer=SGD``), the trainer's settings that change the result, and the seed.
    No ``_target_``/``_partial_``, no unset values, no plumbing."""
    container = OmegaConf.to_container(cfg, resolve=True)
    flat = flatten({k: v for k, v in container.items() if k not in PLUMBING_GROUPS})
    params = {
        key: value
        for key, value in flat.items()
        if value is not None
        and key.rsplit(".", 1)[-1] not in ("_target_", "_partial_")
        and key not in PLUMBING_KEYS
        and not (key == "data.seed" and value == cfg.seed)  # the run's seed, said once
    }
    params["optimizer"] = cfg.optimizer._target_.rsplit(".", 1)[-1]
    return dict(sorted(params.items()))


def config_hash(cfg: DictConfig, data_digest: str) -> str:
    """What makes two runs the same run: the settings they are compared by (the run's
    params), not where they are stored, how fast they train, or what they draw; and the
    content of the data they train and are scored on (``data_digest``, see
    :mod:`denselab.data.digest`), not where it lies."""
    params = run_params(cfg)
    for key in ("threads", "steps_per_batch", "resume"):
        params.pop(key, None)
    params[DATA_TAG] = data_digest
    blob = json.dumps(params, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def log_run_settings(
    run, cfg: DictConfig, parameters: int, input_shape, threads: int, resumed: bool = False
) -> None:
    """Params (the resolved config, flattened, and the ``parameters`` count), the config as
    YAML (any URI's password in it masked), the input shape and the torch threads it trains
    with (tag ``torch_threads``: a sweep's parallel jobs share the CPUs). A resumed run keeps
    the params it started with."""
    params = run_params(cfg)
    params["params_total"] = parameters
    if not resumed:
        run.log_hyperparams(params)
    run.text(hide_passwords(OmegaConf.to_yaml(cfg, resolve=True)), "config.yaml")
    run.tag("input_shape", "x".join(map(str, input_shape)))
    run.tag("torch_threads", str(threads))
