"""The typed schema of a run's configuration, and the checks types alone cannot express.

The YAML files in ``conf/`` hold the values; the dataclasses here hold the types. Each YAML
option names its schema in its defaults list (``- /schema/data/idx@_here_``), so Hydra rejects
a wrong type (``model.hidden_sizes=[abc]``) or an unknown key while composing, before any data
is touched. :func:`validate_config` then checks ranges and choices, also before any work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from denselab.errors import ConfigError

ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu")
SPLITS = ("train", "val", "test")
# Callback settings that count something: each must be at least 1.
CALLBACK_COUNTS = ("per_class", "top_k", "hidden_units", "mistakes", "every_n_epochs")
LOSSES = ("cross_entropy", "mse")


@dataclass
class DataSchema:
    """The keys of every dataset."""

    _target_: str = MISSING
    name: str = MISSING
    dir: str = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    seed: int = MISSING


@dataclass
class HeldOutDataSchema(DataSchema):
    """A dataset without an official validation split holds out this fraction of its
    training images, drawn by the seed."""

    val_fraction: float = MISSING


@dataclass
class IdxDataSchema(HeldOutDataSchema):
    mirrors: List[str] = MISSING
    # Folders searched (in order, after ``dir``) for files already installed, e.g. by Debian.
    system_dirs: List[str] = field(default_factory=list)


@dataclass
class DigitsDataSchema(HeldOutDataSchema):
    test_fraction: float = MISSING


@dataclass
class FlowersDataSchema(DataSchema):
    """No val_fraction: Flowers-17 ships its own train/val/test splits."""

    mirrors: List[str] = MISSING
    # Photos are centre-cropped to a square and resized to image_size x image_size.
    image_size: int = MISSING
    # Which of the three official splits of datasplits.mat (trn/val/tst 1, 2 or 3).
    split_id: int = MISSING


@dataclass
class ImageTableDataSchema(HeldOutDataSchema):
    """val_fraction applies only when no labelled row of the CSV has train_id valid."""

    csv: str = MISSING
    images: str = MISSING


@dataclass
class ModelSchema:
    _target_: str = MISSING
    hidden_sizes: List[int] = MISSING
    activation: str = MISSING
    dropout: float = MISSING
    batch_norm: bool = MISSING
    loss: str = MISSING


@dataclass
class SGDSchema:
    _target_: str = MISSING
    _partial_: bool = True
    lr: float = MISSING
    momentum: float = MISSING
    nesterov: bool = MISSING
    weight_decay: float = MISSING


@dataclass
class RMSpropSchema:
    _target_: str = MISSING
    _partial_: bool = True
    lr: float = MISSING
    alpha: float = MISSING
    eps: float = MISSING
    momentum: float = MISSING
    weight_decay: float = MISSING


@dataclass
class AdamSchema:
    _target_: str = MISSING
    _partial_: bool = True
    lr: float = MISSING
    betas: List[float] = MISSING
    eps: float = MISSING
    weight_decay: float = MISSING


@dataclass
class TrackingSchema:
    # None: the embedded sqlite store under ./mlruns of the directory the command started in.
    uri: Optional[str] = None
    experiment_name: Optional[str] = None
    run_name: Optional[str] = None
    log_checkpoint: bool = True


@dataclass
class CallbackSchema:
    _target_: str = MISSING


@dataclass
class SplitCallbackSchema(CallbackSchema):
    """A figure drawn per split, from the splits named here."""

    splits: List[str] = MISSING


@dataclass
class ClassSamplesSchema(CallbackSchema):
    per_class: int = MISSING
    seed: int = MISSING


@dataclass
class ConfusionMatrixSchema(SplitCallbackSchema):
    top_k: int = MISSING


@dataclass
class WeightImagesSchema(CallbackSchema):
    hidden_units: int = MISSING
    # None: an image every epoch up to 20 epochs, then about 20 images in all.
    every_n_epochs: Optional[int] = MISSING


@dataclass
class TypicalExamplesSchema(SplitCallbackSchema):
    mistakes: int = MISSING


@dataclass
class FiguresSchema:
    """The figure callbacks; each may be null (off). A closed set: a misspelt name fails
    while composing instead of silently drawing nothing."""

    class_samples: Optional[ClassSamplesSchema] = None
    confusion_matrix: Optional[ConfusionMatrixSchema] = None
    weight_images: Optional[WeightImagesSchema] = None
    typical_examples: Optional[TypicalExamplesSchema] = None
    training_curves: Optional[CallbackSchema] = None
    class_metrics: Optional[SplitCallbackSchema] = None


@dataclass
class RunSchema:
    """The top level. Groups are typed by their own schemas, so they are ``Any`` here."""

    data: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    trainer: Any = MISSING
    tracking: Any = MISSING
    # name -> Lightning callback config (``_target_``); see conf/callbacks/.
    callbacks: Any = None
    seed: int = MISSING
    # torch's CPU threads; None: the faster count for the network (denselab.threads).
    threads: Optional[int] = None


def register_schemas() -> None:
    """Make the schemas known to Hydra; the entry point calls this before composing."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunSchema)
    cs.store(group="schema/data", name="idx", node=IdxDataSchema)
    cs.store(group="schema/data", name="digits", node=DigitsDataSchema)
    cs.store(group="schema/data", name="flowers17", node=FlowersDataSchema)
    cs.store(group="schema/data", name="image_table", node=ImageTableDataSchema)
    cs.store(group="schema/model", name="mlp", node=ModelSchema)
    cs.store(group="schema/optimizer", name="sgd", node=SGDSchema)
    cs.store(group="schema/optimizer", name="rmsprop", node=RMSpropSchema)
    cs.store(group="schema/optimizer", name="adam", node=AdamSchema)
    cs.store(group="schema/tracking", name="mlflow", node=TrackingSchema)
    cs.store(group="schema/callbacks", name="figures", node=FiguresSchema)


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError, naming the key and a valid value, for a config that cannot run."""
    data, model, opt, trainer = cfg.data, cfg.model, cfg.optimizer, cfg.trainer

    if "val_fraction" in data and not 0.0 < data.val_fraction < 1.0:
        raise ConfigError(
            f"data.val_fraction must lie strictly between 0 and 1 (got {data.val_fraction}); "
            "use e.g. data.val_fraction=0.2."
        )
    if "test_fraction" in data and not 0.0 < data.test_fraction < 1.0:
        raise ConfigError(
            f"data.test_fraction must lie strictly between 0 and 1 (got {data.test_fraction}); "
            "use e.g. data.test_fraction=0.2."
        )
    for key in ("batch_size", "eval_batch_size"):
        if data[key] < 1:
            raise ConfigError(f"data.{key} must be a positive integer (got {data[key]}).")
    if "image_size" in data and data.image_size < 1:
        raise ConfigError(
            f"data.image_size must be a positive number of pixels (got {data.image_size}); "
            "use e.g. data.image_size=64."
        )
    if "split_id" in data and data.split_id not in (1, 2, 3):
        raise ConfigError(
            f"data.split_id must be 1, 2 or 3, one of the dataset's official splits "
            f"(got {data.split_id})."
        )

    bad_sizes = [size for size in model.hidden_sizes if size < 1]
    if bad_sizes:
        raise ConfigError(
            f"model.hidden_sizes must hold positive layer widths (got {list(model.hidden_sizes)}); "
            "use e.g. model.hidden_sizes=[128], or [] for no hidden layer."
        )
    if model.activation not in ACTIVATIONS:
        raise ConfigError(
            f"model.activation must be one of {', '.join(ACTIVATIONS)} (got {model.activation!r})."
        )
    if model.loss not in LOSSES:
        raise ConfigError(f"model.loss must be one of {', '.join(LOSSES)} (got {model.loss!r}).")
    if not 0.0 <= model.dropout < 1.0:
        raise ConfigError(f"model.dropout must lie in [0, 1) (got {model.dropout}).")

    if opt.lr <= 0:
        raise ConfigError(
            f"optimizer.lr must be a positive number (got {opt.lr}); use e.g. optimizer.lr=0.01."
        )
    if opt.get("momentum", 0.0) < 0:
        raise ConfigError(f"optimizer.momentum must not be negative (got {opt.momentum}).")
    if opt.get("nesterov", False) and opt.momentum <= 0:
        raise ConfigError(
            "optimizer.nesterov=true needs optimizer.momentum > 0; "
            "set a momentum or nesterov=false."
        )

    threads = cfg.get("threads")
    if threads is not None and threads < 1:
        raise ConfigError(
            f"threads must be a positive number of CPU threads (got {threads}); use e.g. "
            "threads=1, or threads=null to let denselab pick the faster count."
        )

    max_epochs = trainer.get("max_epochs")
    if not isinstance(max_epochs, int) or max_epochs < 1:
        raise ConfigError(f"trainer.max_epochs must be a positive integer (got {max_epochs}).")

    for name, callback in (cfg.get("callbacks") or {}).items():
        if callback:
            _validate_callback(name, callback)


def _validate_callback(name: str, callback: DictConfig) -> None:
    for key in CALLBACK_COUNTS:
        value = callback.get(key)
        if value is not None and value < 1:
            raise ConfigError(
                f"callbacks.{name}.{key} must be a positive integer (got {value}); "
                f"set it to 1 or more, or callbacks.{name}=null to switch the figure off."
            )
    splits = callback.get("splits")
    if splits is not None and (not splits or any(s not in SPLITS for s in splits)):
        raise ConfigError(
            f"callbacks.{name}.splits must name one or more of {', '.join(SPLITS)} "
            f"(got {list(splits)}); use e.g. callbacks.{name}.splits=[val,test]."
        )
