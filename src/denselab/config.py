"""The typed schema of a run's configuration: each setting's type, default and range, once.

The dataclasses here are the single source of every setting. A YAML option in ``conf/`` names
its schema in its defaults list (``- /schema/data/idx@_here_``) and adds only what tells that
option apart (a dataset's name, folder and mirrors); Hydra then rejects a wrong type
(``model.hidden_sizes=[abc]``) or an unknown key while composing, before any data is touched.
A field's range or choice is a :class:`Rule` in its metadata, and :func:`validate_config`
checks every rule of the composed config, also before any work. Python code that needs a
default (a constructor's keyword) reads it with :func:`default_of` instead of repeating it.

This module must not import torch or Lightning: ``--cfg job``, ``--help`` and config errors
answer before those load.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf

from denselab.errors import ConfigError

# The splits a dataset may have, in the order tables list them.
SPLITS = ("train", "val", "test")

# Activation name in the config -> the torch.nn class that implements it.
ACTIVATIONS = {"relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid", "gelu": "GELU"}

# cross_entropy: on logits; mse: squared error of softmax outputs against one-hot targets.
LOSSES = ("cross_entropy", "mse")

# -- ranges and choices --------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """What a setting's value must satisfy, and the sentence a user reads when it does not.

    ``must`` completes "<key> ..." (e.g. "must be a positive integer"); ``fix``, where given,
    follows the value, and may name the key as ``{key}`` and its parent node as ``{parent}``.
    """

    holds: Callable[[Any], bool]
    must: str
    fix: str = ""

    def sentence(self, key: str, value: Any) -> str:
        parent = key.rsplit(".", 1)[0]
        shown = list(value) if isinstance(value, ListConfig) else value
        shown = repr(shown) if isinstance(shown, str) else shown
        fix = f"; {self.fix.format(key=key, parent=parent)}" if self.fix else ""
        return f"{key} {self.must} (got {shown}){fix}."


def _positive(value: Any) -> bool:
    return isinstance(value, (int, float)) and value > 0


POSITIVE_INT = Rule(_positive, "must be a positive integer")
POSITIVE_NUMBER = Rule(_positive, "must be a positive number")
FRACTION = Rule(lambda v: 0.0 < v < 1.0, "must lie strictly between 0 and 1", "use e.g. {key}=0.2")
# A callback setting that counts something (images, pairs, units, epochs).
COUNT = Rule(
    _positive,
    "must be a positive integer",
    "set it to 1 or more, or {parent}=null to switch the figure off",
)
SPLIT_NAMES = Rule(
    lambda v: len(v) > 0 and all(s in SPLITS for s in v),
    f"must name one or more of {', '.join(SPLITS)}",
    "use e.g. {key}=[val,test]",
)


THREADS = Rule(
    _positive,
    "must be a positive number of CPU threads",
    "use e.g. threads=1, or threads=null to let denselab pick the faster count",
)


STEPS_PER_BATCH = Rule(
    lambda v: v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and v > 0),
    "must be auto or a positive number of optimizer steps",
    "use e.g. steps_per_batch=auto, or steps_per_batch=1 for one step per Lightning batch",
)


MODEL_NAME = Rule(
    lambda v: isinstance(v, str) and v.strip() == v and v != "" and not set(v) & set("/:@%"),
    "must be a registered model name without spaces at its ends or the characters / : @ %",
    "use e.g. {key}=fashion",
)


def one_of(choices: Any) -> Rule:
    names = list(choices)
    return Rule(lambda v: v in names, f"must be one of {', '.join(names)}")


def setting(default: Any = MISSING, rule: Optional[Rule] = None) -> Any:
    """A dataclass field with a default (lists are copied per instance) and an optional rule."""
    metadata = {"rule": rule} if rule else {}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def default_of(schema: type, name: str) -> Any:
    """The default of setting ``name`` in ``schema``: for constructors' keyword defaults."""
    for f in dataclasses.fields(schema):
        if f.name == name:
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            return f.default
    raise KeyError(f"{schema.__name__} has no setting {name}")


# -- data -------------------------------------------------------------------------------------


@dataclass
class DataSchema:
    """The keys of every dataset. A dataset's YAML sets ``_target_``, ``name`` and ``dir``."""

    _target_: str = MISSING
    name: str = MISSING
    dir: str = MISSING
    batch_size: int = setting(32, POSITIVE_INT)
    eval_batch_size: int = setting(1024, POSITIVE_INT)
    seed: int = "${seed}"  # the run's seed draws the validation split


@dataclass
class HeldOutDataSchema(DataSchema):
    """A dataset without an official validation split holds out this fraction of its
    training images, drawn by the seed."""

    val_fraction: float = setting(0.2, FRACTION)


@dataclass
class IdxDataSchema(HeldOutDataSchema):
    mirrors: List[str] = setting([])
    # Folders searched (in order, after ``dir``) for files already installed, e.g. by Debian.
    system_dirs: List[str] = setting([])


@dataclass
class DigitsDataSchema(HeldOutDataSchema):
    test_fraction: float = setting(0.2, FRACTION)


@dataclass
class FlowersDataSchema(DataSchema):
    """No val_fraction: Flowers-17 ships its own train/val/test splits."""

    mirrors: List[str] = setting([])
    # Photos are centre-cropped to a square and resized to image_size x image_size.
    image_size: int = setting(
        64,
        Rule(_positive, "must be a positive number of pixels", "use e.g. {key}=64"),
    )
    # Which of the three official splits of datasplits.mat (trn/val/tst 1, 2 or 3).
    split_id: int = setting(
        1, Rule(lambda v: v in (1, 2, 3), "must be 1, 2 or 3, one of the dataset's official splits")
    )


@dataclass
class ImageTableDataSchema(HeldOutDataSchema):
    """val_fraction applies only when no labelled row of the CSV has train_id valid."""

    csv: str = "${.dir}/metadata.csv"
    images: str = "${.dir}/images.npy"


# -- model and optimizers ---------------------------------------------------------------------


@dataclass
class ModelSchema:
    _target_: str = "denselab.training.module.MLPClassifier"
    # []: no hidden layer, the course's "multinomial" model (softmax regression).
    hidden_sizes: List[int] = setting(
        [128],
        Rule(
            lambda v: all(size >= 1 for size in v),
            "must hold positive layer widths",
            "use e.g. {key}=[128], or [] for no hidden layer",
        ),
    )
    activation: str = setting("relu", one_of(ACTIVATIONS))
    dropout: float = setting(0.0, Rule(lambda v: 0.0 <= v < 1.0, "must lie in [0, 1)"))
    batch_norm: bool = False
    loss: str = setting("cross_entropy", one_of(LOSSES))


LEARNING_RATE = Rule(_positive, "must be a positive number", "use e.g. {key}=0.01")
NOT_NEGATIVE = Rule(lambda v: v >= 0, "must not be negative")


@dataclass
class OptimizerSchema:
    """A torch.optim class, built partially: the model hands it its parameters."""

    _target_: str = MISSING
    _partial_: bool = True
    lr: float = setting(MISSING, LEARNING_RATE)
    weight_decay: float = setting(0.0, NOT_NEGATIVE)


@dataclass
class SGDSchema(OptimizerSchema):
    _target_: str = "torch.optim.SGD"
    lr: float = setting(0.01, LEARNING_RATE)
    momentum: float = setting(0.9, NOT_NEGATIVE)
    nesterov: bool = True


@dataclass
class RMSpropSchema(OptimizerSchema):
    """alpha and eps follow Keras' RMSprop (rho=0.9, epsilon=1e-7), which the course used."""

    _target_: str = "torch.optim.RMSprop"
    lr: float = setting(0.001, LEARNING_RATE)
    alpha: float = 0.9
    eps: float = 1.0e-07
    momentum: float = setting(0.0, NOT_NEGATIVE)


@dataclass
class AdamSchema(OptimizerSchema):
    _target_: str = "torch.optim.Adam"
    lr: float = setting(0.001, LEARNING_RATE)
    betas: List[float] = setting([0.9, 0.999])
    eps: float = 1.0e-08


# -- tracking, logger, checkpoint -------------------------------------------------------------


@dataclass
class TrackingSchema:
    # None: the embedded sqlite store under ./mlruns of the directory the command started in.
    uri: Optional[str] = None
    # None: the dataset's name (data.name).
    experiment_name: Optional[str] = None
    # None: "<dataset>-mlp[<hidden sizes>]-<optimizer>", e.g. mnist-mlp[128]-sgd.
    run_name: Optional[str] = None
    # Log the best checkpoint to the run (checkpoints/<name>.ckpt).
    log_checkpoint: bool = True
    # Log the best network as the run's MLflow model (runs:/<run id>/model), see serving.py.
    log_model: bool = True
    # A registered model name: the run's model becomes its newest version (models:/<name>@latest),
    # and models:/<name>@champion when its val/acc_best beats the champion's. None: not registered.
    register_as: Optional[str] = setting(None, MODEL_NAME)
    # In a sweep, a job whose identical config already FINISHED in the experiment is not run
    # again, and a stopped job of the same sweep goes on from its checkpoint. False: all anew.
    skip_finished: bool = True
    # MLflow's system metrics (system/...: CPU, memory, disk, network; a GPU's utilisation and
    # memory), one point per interval: 5 s gives a course run (~25 s) five points and costs
    # well under 1 % of it (README, "What lands where").
    system_metrics: bool = True
    system_metrics_interval: float = setting(5.0, POSITIVE_NUMBER)
    # A training run writes the time to its tag "heartbeat" this often (seconds); one whose
    # heartbeat is 3 intervals old is dead wherever it ran, and resume may take it over.
    heartbeat_interval: float = setting(30.0, POSITIVE_NUMBER)


@dataclass
class LoggerSchema:
    """The Lightning logger, and the one writer of everything a run records."""

    _target_: str = "denselab.tracking.logger.RunLogger"


@dataclass
class CheckpointSchema:
    """Lightning's ModelCheckpoint (denselab.training.checkpoints.RunCheckpoint): the best epoch by
    ``monitor`` is what the run is tested and reported on; ``last.ckpt``, written atomically
    at each epoch's end, is what resume continues from. Its folder is the job's output dir,
    or the resumed run's own folder."""

    _target_: str = "denselab.training.checkpoints.RunCheckpoint"
    # Copy last.ckpt to the run each epoch (resume/last.ckpt), for resuming elsewhere.
    upload_last: bool = "${tracking.log_checkpoint}"
    monitor: str = "val/acc"
    mode: str = setting("max", one_of(("max", "min")))
    filename: str = "best-epoch{epoch:02d}"
    auto_insert_metric_name: bool = False
    save_last: bool = True


# -- figure callbacks --------------------------------------------------------------------------


@dataclass
class CallbackSchema:
    _target_: str = MISSING


@dataclass
class ClassSamplesSchema(CallbackSchema):
    """Random training images of each class, when training starts."""

    _target_: str = "denselab.reporting.callbacks.ClassSamples"
    per_class: int = setting(10, COUNT)
    # Class indices to draw (e.g. [2]: the course's 60 examples of one digit); None: all.
    # One class is drawn ten images to a row.
    classes: Optional[List[int]] = None
    seed: int = "${seed}"


@dataclass
class ConfusionMatrixSchema(CallbackSchema):
    """Heatmap, counts CSV and the ``top_k`` most confused pairs of each split."""

    _target_: str = "denselab.reporting.callbacks.ConfusionMatrix"
    splits: List[str] = setting(["val", "test"], SPLIT_NAMES)
    top_k: int = setting(5, COUNT)


@dataclass
class WeightImagesSchema(CallbackSchema):
    """First-layer weights as images, and an image series over the epochs."""

    _target_: str = "denselab.reporting.callbacks.WeightImages"
    hidden_units: int = setting(16, COUNT)
    # None: an image every epoch up to 20 epochs, then about 20 images in all.
    every_n_epochs: Optional[int] = setting(None, COUNT)


@dataclass
class TypicalExamplesSchema(CallbackSchema):
    """Each class's most confident image, and the ``mistakes`` most confident mistakes."""

    _target_: str = "denselab.reporting.callbacks.TypicalExamples"
    splits: List[str] = setting(["train", "val", "test"], SPLIT_NAMES)
    mistakes: int = setting(16, COUNT)


@dataclass
class TrainingCurvesSchema(CallbackSchema):
    """Loss and accuracy per epoch, train against validation."""

    _target_: str = "denselab.reporting.callbacks.TrainingCurves"


@dataclass
class ClassMetricsSchema(CallbackSchema):
    """Per-class precision, recall, F1 and support (a table)."""

    _target_: str = "denselab.reporting.callbacks.ClassMetrics"
    splits: List[str] = setting(["test"], SPLIT_NAMES)


@dataclass
class RunSchema:
    """The top level. Groups are typed by their own schemas, so they are ``Any`` here."""

    data: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    trainer: Any = MISSING
    tracking: Any = MISSING
    logger: Any = MISSING
    checkpoint: Any = MISSING
    # name -> Lightning callback config (``_target_``); see conf/callbacks/.
    callbacks: Any = None
    seed: int = 42
    # torch's CPU threads; None: the faster count for the network (denselab.training.threads).
    threads: Optional[int] = setting(None, THREADS)
    # Optimizer steps per batch Lightning sees: "auto" or a count. The training is the same
    # for every value, only faster with more (denselab.training.chunking).
    steps_per_batch: Any = setting("auto", STEPS_PER_BATCH)
    # An MLflow run id, or "last" (the experiment's newest unfinished run): continue that run
    # with its own settings (README, "When things go wrong").
    resume: Optional[str] = None
    # An MLflow run id: a new run with that run's logged settings (README, "Reruns").
    rerun: Optional[str] = None


# Group -> option name -> schema. A YAML option selects its schema by this path
# (``/schema/<group>/<name>``); an option of your own may reuse any of them.
SCHEMAS: dict[str, dict[str, type]] = {
    "data": {
        "held_out": HeldOutDataSchema,
        "idx": IdxDataSchema,
        "digits": DigitsDataSchema,
        "flowers17": FlowersDataSchema,
        "image_table": ImageTableDataSchema,
    },
    "model": {"mlp": ModelSchema},
    "optimizer": {"sgd": SGDSchema, "rmsprop": RMSpropSchema, "adam": AdamSchema},
    "tracking": {"mlflow": TrackingSchema},
    "logger": {"mlflow": LoggerSchema},
    "checkpoint": {"best": CheckpointSchema},
    "callbacks": {
        "class_samples": ClassSamplesSchema,
        "confusion_matrix": ConfusionMatrixSchema,
        "weight_images": WeightImagesSchema,
        "typical_examples": TypicalExamplesSchema,
        "training_curves": TrainingCurvesSchema,
        "class_metrics": ClassMetricsSchema,
    },
}


def register_schemas() -> None:
    """Make the schemas known to Hydra; the entry point calls this before composing."""
    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunSchema)
    for group, options in SCHEMAS.items():
        for name, schema in options.items():
            cs.store(group=f"schema/{group}", name=name, node=schema)


# -- checks before any work --------------------------------------------------------------------


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError, naming the key and a valid value, for a config that cannot run."""
    _check_keys(cfg)
    _check_rules(cfg, "")

    opt = cfg.optimizer
    if opt.get("nesterov", False) and opt.momentum <= 0:
        raise ConfigError(
            "optimizer.nesterov=true needs optimizer.momentum > 0; "
            "set a momentum or nesterov=false."
        )
    if cfg.get("rerun") and cfg.get("resume"):
        raise ConfigError(
            f"rerun={cfg.rerun} and resume={cfg.resume} ask for a new run and for continuing "
            "one; give one of the two."
        )
    if cfg.tracking.get("register_as") and not cfg.tracking.get("log_model", True):
        raise ConfigError(
            "tracking.register_as needs the run's model, but tracking.log_model=false; drop "
            "one of the two overrides."
        )
    # The trainer group takes any Lightning Trainer argument (+trainer.<name>=...), so it has
    # no closed schema: the settings denselab relies on are checked here instead.
    for key, rule in TRAINER_RULES.items():
        value = cfg.trainer.get(key)
        if not rule.holds(value):
            raise ConfigError(rule.sentence(f"trainer.{key}", value))


def _check_keys(cfg: DictConfig) -> None:
    """Refuse a key no schema has (``+model.hidden_size=[64]``, Hydra's own hint for a typo)
    before any run exists, with the closest key it may have meant. A group's keys are its
    schema's fields; the trainer's, the arguments of Lightning's Trainer; a callback of the
    user's own (``+callbacks.x._target_=...``) has no schema and passes."""
    groups = [("", cfg)] + [(f"{name}.", cfg[name]) for name in GROUPS if name in cfg]
    callbacks = cfg.get("callbacks") or {}
    groups += [(f"callbacks.{name}.", callbacks[name]) for name in callbacks if callbacks[name]]
    for prefix, node in groups:
        if not isinstance(node, DictConfig):
            continue
        schema = OmegaConf.get_type(node)
        if dataclasses.is_dataclass(schema):
            known = {f.name for f in dataclasses.fields(schema)}
            if not prefix:
                known.add("hydra")  # Hydra's own node, beside the settings where a sweep starts
        elif prefix == "trainer." and trainer_arguments():
            known = trainer_arguments() | {"_target_"}
        else:
            continue
        for key in node:
            if key not in known:
                raise ConfigError(_unknown_key(prefix, str(key), known))


def check_set_keys(keys: Sequence[str]) -> None:
    """Refuse, before Hydra composes, a key set without ``+`` (``model.hidden_size=[64]``)
    that no schema of its group has. Hydra would refuse it too, but with the hint "use
    +model.hidden_size=[64]", which leads to the wrong key; this names the key meant. A key
    only some option of a group has is left to Hydra, which knows the option chosen; so is a
    top-level name close to no setting (it may be a config group of the user's own)."""
    for key in keys:
        path = key.split(".")
        if path[0] == "hydra":
            continue
        if len(path) == 1:
            known = {f.name for f in dataclasses.fields(RunSchema)}
            if key not in known and difflib.get_close_matches(key, sorted(known), n=1):
                raise ConfigError(_unknown_key("", key, known))
            continue
        prefix, name = f"{path[0]}.", path[1]
        if path[0] == "trainer":
            known = set(trainer_arguments())
        elif path[0] in SCHEMAS and path[0] != "callbacks":
            known = {f.name for s in SCHEMAS[path[0]].values() for f in dataclasses.fields(s)}
        elif path[0] == "callbacks" and name in SCHEMAS["callbacks"] and len(path) > 2:
            schema = SCHEMAS["callbacks"][name]
            prefix, name = f"callbacks.{name}.", path[2]
            known = {f.name for f in dataclasses.fields(schema)}
        else:
            continue
        if known and name not in known:
            raise ConfigError(_unknown_key(prefix, name, known))


# The groups of the top level, each typed by its own schema.
GROUPS = ("data", "model", "optimizer", "trainer", "tracking", "logger", "checkpoint")


def _unknown_key(prefix: str, key: str, known: set[str]) -> str:
    if prefix == "trainer.":
        what = "an argument of Lightning's Trainer"
    else:
        what = f"a setting of {prefix.rstrip('.')}" if prefix else "a setting"
    near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    hint = f" (did you mean {prefix}{near[0]}?)" if near else ""
    return (
        f"{prefix}{key} is not {what}{hint}; correct or drop the override "
        "(`denselab-train --cfg job` lists every setting)."
    )


@functools.lru_cache(maxsize=None)
def trainer_arguments() -> frozenset[str]:
    """The keyword arguments of ``pytorch_lightning.Trainer``, read from its source: importing
    Lightning takes seconds, and a config error answers at once. Empty where a Lightning
    keeps its Trainer elsewhere: then Lightning itself refuses an unknown argument."""
    spec = importlib.util.find_spec("pytorch_lightning")  # the package's own, not imported
    source = Path(spec.origin).parent / "trainer" / "trainer.py" if spec and spec.origin else None
    if source is None or not source.is_file():
        return frozenset()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ClassDef) and node.name == "Trainer":
            for init in node.body:
                if isinstance(init, ast.FunctionDef) and init.name == "__init__":
                    args = [*init.args.args, *init.args.kwonlyargs]
                    return frozenset(a.arg for a in args if a.arg != "self")
    return frozenset()


def check_against_data(cfg: DictConfig, class_names: Sequence[str]) -> None:
    """Settings that name the data's classes, checked once the data is loaded and before
    any run exists: ``callbacks.class_samples.classes`` must be class indices of it."""
    samples = (cfg.get("callbacks") or {}).get("class_samples") or {}
    chosen = list(samples.get("classes") or [])
    wrong = [k for k in chosen if not 0 <= k < len(class_names)]
    if wrong or len(set(chosen)) != len(chosen):
        raise ConfigError(
            f"callbacks.class_samples.classes={chosen} must be distinct class indices of "
            f"{cfg.data.name}, 0 to {len(class_names) - 1} (0 is {class_names[0]!r}); "
            f"use e.g. callbacks.class_samples.classes=[{min(2, len(class_names) - 1)}]."
        )


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


TRAINER_RULES = {
    "max_epochs": Rule(_is_count, "must be a positive integer"),
    "num_nodes": Rule(_is_count, "must be a positive integer"),
    # A count, a list of device ids, "auto", -1 (all), or "0,1".
    "devices": Rule(
        lambda v: (
            _is_count(v)
            or v in ("auto", -1)
            or (isinstance(v, str) and all(p.strip().isdigit() for p in v.split(",")))
            or (isinstance(v, ListConfig) and len(v) > 0)
        ),
        "must be a number of devices, a list of device ids, or auto",
        "use e.g. {key}=2",
    ),
    "strategy": Rule(
        lambda v: isinstance(v, str) and v != "",
        "must name a Lightning strategy",
        "use e.g. {key}=ddp, or auto",
    ),
}


def _check_rules(node: DictConfig, path: str) -> None:
    """Every Rule of every schema-typed node below ``node``, depth first."""
    schema = OmegaConf.get_type(node)
    rules = (
        {f.name: f.metadata["rule"] for f in dataclasses.fields(schema) if "rule" in f.metadata}
        if dataclasses.is_dataclass(schema)
        else {}
    )
    for key in node:
        if not path and key == "hydra":
            continue  # Hydra's own node, present in a sweep's config: not ours to check
        value = node.get(key)
        name = f"{path}{key}"
        if isinstance(value, DictConfig):
            _check_rules(value, f"{name}.")
        elif key in rules and value is not None and not rules[key].holds(value):
            raise ConfigError(rules[key].sentence(name, value))
