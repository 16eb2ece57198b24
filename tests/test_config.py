"""The composed configuration: course defaults, presets, and bad input caught before work."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException, HydraException
from omegaconf.errors import ValidationError

from denselab.config import validate_config
from denselab.errors import ConfigError


def test_defaults_are_the_course_mnist_run(compose_cfg):
    cfg = compose_cfg()
    assert cfg.data.name == "mnist"
    assert cfg.data.val_fraction == 0.2 and cfg.data.batch_size == 32
    assert list(cfg.model.hidden_sizes) == [128] and cfg.model.activation == "relu"
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.nesterov) == (0.01, 0.9, True)
    assert cfg.trainer.max_epochs == 10 and cfg.trainer.accelerator == "auto"
    assert cfg.data.seed == cfg.seed
    assert cfg.callbacks.weight_images.hidden_units == 16 and cfg.callbacks.confusion_matrix.top_k == 5
    validate_config(cfg)


def test_presets_say_what_they_are(compose_cfg):
    course = compose_cfg(["experiment=course_mnist"])
    assert list(course.model.hidden_sizes) == [128] and course.optimizer.lr == 0.01
    multinomial = compose_cfg(["experiment=course_multinomial"])
    assert list(multinomial.model.hidden_sizes) == []
    assert multinomial.optimizer._target_ == "torch.optim.RMSprop"
    assert multinomial.data.name == "mnist"


def test_groups_and_overrides_compose(compose_cfg):
    cfg = compose_cfg(
        ["data=fashion_mnist", "model.hidden_sizes=[256,128]", "optimizer=adam", "seed=3"]
    )
    assert cfg.data.name == "fashion_mnist" and cfg.data.seed == 3
    assert list(cfg.model.hidden_sizes) == [256, 128]
    assert list(cfg.optimizer.betas) == [0.9, 0.999]
    validate_config(cfg)


@pytest.mark.parametrize(
    "override",
    [
        "model.hidden_sizes=[abc]",  # not an integer
        "optimizer.lr=fast",  # not a number
        "data.batch_size=1.5",  # not an integer
        "model.widths=[3]",  # no such key
        "callbacks.weight_images.hidden_units=many",  # not an integer
        "callbacks.confusion_matrx=null",  # no such figure
    ],
)
def test_schema_rejects_bad_types_while_composing(compose_cfg, override):
    with pytest.raises((ConfigCompositionException, ValidationError, HydraException)):
        compose_cfg([override])


def test_unknown_group_option_is_refused(compose_cfg):
    with pytest.raises((ConfigCompositionException, HydraException), match="data/nosuch"):
        compose_cfg(["data=nosuch"])


@pytest.mark.parametrize(
    "override, words",
    [
        ("optimizer.lr=0", "optimizer.lr must be a positive number"),
        ("optimizer.lr=-0.1", "optimizer.lr must be a positive number"),
        ("model.hidden_sizes=[128,-4]", "model.hidden_sizes must hold positive"),
        ("data.val_fraction=0", "data.val_fraction must lie strictly between 0 and 1"),
        ("data.val_fraction=1.5", "data.val_fraction must lie strictly between 0 and 1"),
        ("model.activation=swish", "model.activation must be one of"),
        ("model.loss=hinge", "model.loss must be one of"),
        ("trainer.max_epochs=0", "trainer.max_epochs must be a positive integer"),
        ("optimizer.momentum=0", "nesterov=true needs optimizer.momentum > 0"),
        ("callbacks.weight_images.hidden_units=0", "callbacks.weight_images.hidden_units must be a positive integer"),
        ("callbacks.weight_images.every_n_epochs=-1", "callbacks.weight_images.every_n_epochs must be a positive"),
        ("callbacks.confusion_matrix.top_k=-5", "callbacks.confusion_matrix.top_k must be a positive integer"),
        ("callbacks.typical_examples.mistakes=0", "callbacks.typical_examples.mistakes must be a positive"),
        ("callbacks.class_samples.per_class=0", "callbacks.class_samples.per_class must be a positive"),
        ("callbacks.typical_examples.splits=[]", "callbacks.typical_examples.splits must name one or more"),
        ("callbacks.confusion_matrix.splits=[val,tset]", "callbacks.confusion_matrix.splits must name one or more"),
    ],
)
def test_ranges_and_choices_are_checked(compose_cfg, override, words):
    cfg = compose_cfg([override])
    with pytest.raises(ConfigError, match=words):
        validate_config(cfg)
