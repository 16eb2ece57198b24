"""The composed configuration: course defaults, presets, and bad input caught before work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import no_runs
from hydra.errors import ConfigCompositionException, HydraException
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from denselab.config import check_set_keys, validate_config
from denselab.errors import ConfigError
from denselab.overrides import command_line, set_keys


def test_defaults_are_the_course_mnist_run(compose_cfg):
    cfg = compose_cfg()
    assert cfg.data.name == "mnist"
    assert cfg.data.val_fraction == 0.2 and cfg.data.batch_size == 32
    assert list(cfg.model.hidden_sizes) == [128] and cfg.model.activation == "relu"
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.nesterov) == (0.01, 0.9, True)
    assert cfg.trainer.max_epochs == 10 and cfg.trainer.accelerator == "auto"
    assert cfg.data.seed == cfg.seed
    assert (
        cfg.callbacks.weight_images.hidden_units == 16 and cfg.callbacks.confusion_matrix.top_k == 5
    )
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
        ("trainer.num_nodes=0", "trainer.num_nodes must be a positive integer"),
        ("trainer.devices=two", "trainer.devices must be a number of devices"),
        ("trainer.strategy=''", "trainer.strategy must name a Lightning strategy"),
        ("optimizer.momentum=0", "nesterov=true needs optimizer.momentum > 0"),
        (
            "callbacks.weight_images.hidden_units=0",
            "callbacks.weight_images.hidden_units must be a positive integer",
        ),
        (
            "callbacks.weight_images.every_n_epochs=-1",
            "callbacks.weight_images.every_n_epochs must be a positive",
        ),
        (
            "callbacks.confusion_matrix.top_k=-5",
            "callbacks.confusion_matrix.top_k must be a positive integer",
        ),
        (
            "callbacks.typical_examples.mistakes=0",
            "callbacks.typical_examples.mistakes must be a positive",
        ),
        (
            "callbacks.class_samples.per_class=0",
            "callbacks.class_samples.per_class must be a positive",
        ),
        (
            "callbacks.typical_examples.splits=[]",
            "callbacks.typical_examples.splits must name one or more",
        ),
        (
            "callbacks.confusion_matrix.splits=[val,tset]",
            "callbacks.confusion_matrix.splits must name one or more",
        ),
    ],
)
def test_ranges_and_choices_are_checked(compose_cfg, override, words):
    cfg = compose_cfg([override])
    with pytest.raises(ConfigError, match=words):
        validate_config(cfg)


def test_flowers_config_and_its_checks(compose_cfg):
    cfg = compose_cfg(["data=flowers17"])
    assert (cfg.data.image_size, cfg.data.split_id) == (64, 1)
    assert cfg.data.mirrors == ["https://www.robots.ox.ac.uk/~vgg/data/flowers/17/"]
    assert "val_fraction" not in cfg.data  # the validation split is the official one
    validate_config(cfg)
    for override, words in [
        ("data.image_size=0", "data.image_size must be a positive number of pixels"),
        ("data.split_id=4", "data.split_id must be 1, 2 or 3"),
        ("data.split_id=0", "data.split_id must be 1, 2 or 3"),
    ]:
        with pytest.raises(ConfigError, match=words):
            validate_config(compose_cfg(["data=flowers17", override]))
    with pytest.raises((ConfigCompositionException, HydraException)):
        compose_cfg(["data=flowers17", "data.val_fraction=0.3"])


def test_course_flowers_preset_is_the_course_network(compose_cfg):
    from hydra.utils import instantiate

    from denselab.training.module import count_parameters

    cfg = compose_cfg(["experiment=course_flowers"])
    assert cfg.data.name == "flowers17" and cfg.data.image_size == 64
    assert list(cfg.model.hidden_sizes) == [128, 128, 128]
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert (cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.nesterov) == (0.003, 0.9, True)
    assert cfg.trainer.max_epochs == 100
    model = instantiate(cfg.model, input_shape=(64, 64, 3), num_classes=17)
    assert count_parameters(model) == 1_608_209
    validate_config(cfg)


def test_image_table_paths_follow_the_data_dir_unless_given(compose_cfg):
    cfg = compose_cfg(["data=image_table", "data.dir=/srv/shapes"])
    assert (cfg.data.csv, cfg.data.images) == ("/srv/shapes/metadata.csv", "/srv/shapes/images.npy")
    cfg = compose_cfg(["data=image_table", "data.csv=meta/all.csv"])
    assert cfg.data.csv == "meta/all.csv" and cfg.data.images == "data/image_table/images.npy"
    validate_config(cfg)


CONF = Path(__file__).resolve().parents[1] / "conf"


def _options_with_schemas():
    """(yaml path, its schema class) for every option of conf/ that selects a schema."""
    from denselab.config import SCHEMAS

    for path in sorted(CONF.glob("*/*.yaml")):
        for entry in OmegaConf.load(path).get("defaults", []):
            if isinstance(entry, str) and entry.startswith("/schema/"):
                group, name = entry.split("@")[0].split("/")[2:4]
                yield path, SCHEMAS[group][name]


def test_yaml_options_do_not_repeat_their_schemas_defaults():
    """One place per setting: a YAML option sets a key only to tell itself apart (a value
    other than its schema's default), never to repeat that default."""
    seen = 0
    for path, schema in _options_with_schemas():
        defaults = OmegaConf.structured(schema)
        own = OmegaConf.load(path)
        repeated = [
            key
            for key in own
            if key != "defaults"
            and not OmegaConf.is_missing(defaults, key)
            and OmegaConf.to_container(own)[key] == OmegaConf.to_container(defaults)[key]
        ]
        assert not repeated, f"{path.relative_to(CONF)} repeats its schema's {repeated}"
        seen += 1
    assert seen >= 12


def test_the_config_and_its_constants_load_without_torch():
    code = (
        "import sys, denselab.config, denselab.train; "
        "assert 'torch' not in sys.modules and 'pytorch_lightning' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_constructors_take_their_defaults_from_the_schemas():
    import inspect

    from denselab.config import ConfusionMatrixSchema, ModelSchema, WeightImagesSchema
    from denselab.reporting.callbacks import ConfusionMatrix, WeightImages
    from denselab.training.module import MLPClassifier

    def default(cls, name):
        return inspect.signature(cls).parameters[name].default

    assert default(ConfusionMatrix, "top_k") == ConfusionMatrixSchema.top_k
    assert default(WeightImages, "hidden_units") == WeightImagesSchema.hidden_units
    assert default(MLPClassifier, "activation") == ModelSchema.activation
    assert default(MLPClassifier, "hidden_sizes") == [128]


CONFIG_ERROR_LOADS_NOTHING_HEAVY = """
import sys
from pathlib import Path

from hydra import compose, initialize_config_module

from denselab.config import register_schemas
from denselab.errors import ConfigError
from denselab.train import train

register_schemas()
with initialize_config_module(config_module="denselab.conf", version_base="1.3"):
    cfg = compose("config", overrides=["optimizer.lr=-1"])
try:
    train(cfg, Path(sys.argv[1]))
except ConfigError as err:
    print(err)
heavy = sorted(m for m in ("torch", "pytorch_lightning", "mlflow") if m in sys.modules)
assert not heavy, f"a config error loaded {heavy}"
"""


def test_a_config_error_answers_before_anything_heavy_is_imported(tmp_path):
    # train() checks the config before it imports torch, Lightning or MLflow (seconds): what
    # keeps a typo's sentence instant, measured by what is loaded, not by a clock.
    result = subprocess.run(
        [sys.executable, "-c", CONFIG_ERROR_LOADS_NOTHING_HEAVY, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "optimizer.lr must be a positive number" in result.stdout
    assert not any(tmp_path.iterdir()), "a config error wrote files"


@pytest.mark.parametrize(
    "override, words",
    [
        # Hydra's own hint for a typo is to add it with +: that must not make a run either.
        (
            "+model.hidden_size=[64]",
            "model.hidden_size is not a setting of model (did you mean model.hidden_sizes?)",
        ),
        (
            "+trainer.max_epoch=2",
            "trainer.max_epoch is not an argument of Lightning's Trainer "
            "(did you mean trainer.max_epochs?)",
        ),
        ("+sed=3", "sed is not a setting (did you mean seed?)"),
        ("+optimizer.momentun=0.5", "(did you mean optimizer.momentum?)"),
        ("+callbacks.confusion_matrix.topk=2", "(did you mean callbacks.confusion_matrix.top_k?)"),
        ("+data.zzz=1", "data.zzz is not a setting of data; correct or drop the override"),
    ],
)
def test_a_key_no_schema_has_is_refused_with_the_one_meant(compose_cfg, override, words):
    cfg = compose_cfg(["data=digits", override])
    with pytest.raises(ConfigError) as refused:
        validate_config(cfg)
    assert words in str(refused.value)


def test_trainer_arguments_and_own_callbacks_pass(compose_cfg):
    validate_config(
        compose_cfg(
            [
                "+trainer.gradient_clip_val=1",
                "+trainer.accumulate_grad_batches=2",
                "+callbacks.mine._target_=pytorch_lightning.callbacks.EarlyStopping",
                "+callbacks.mine.monitor=val/acc",
            ]
        )
    )


@pytest.mark.parametrize(
    "argv, words",
    [
        (["model.hidden_size=[64]"], "model.hidden_size is not a setting of model (did you mean"),
        (["-m", "trainer.max_epoch=2,3"], "(did you mean trainer.max_epochs?)"),
        (["--cfg", "job", "sed=3"], "sed is not a setting (did you mean seed?)"),
        (["callbacks.confusion_matrix.topk=2"], "(did you mean callbacks.confusion_matrix.top_k?)"),
        (["data=digits", "data.zzz=1"], "data.zzz is not a setting of data;"),
    ],
)
def test_a_key_set_without_plus_is_named_before_hydra_composes(argv, words):
    with pytest.raises(ConfigError) as refused:
        check_set_keys(set_keys(command_line(argv)))
    assert words in str(refused.value)


@pytest.mark.parametrize(
    "argv",
    [
        # Groups, Hydra's own keys, added keys, a setting only one option of a group has, and
        # a name that may be a config group of the user's own: all Hydra's to judge.
        ["data=digits", "experiment=course_multinomial", "hydra/sweeper=basic", "seed=1,2"],
        ["hydra.sweeper.max_batch_size=2", "+trainer.gradient_clip_val=1", "~data.mirrors"],
        ["optimizer=adam", "optimizer.momentum=0.5", "data.csv=x.csv", "myconfig=a"],
        ["trainer.gradient_clip_val=1", "callbacks.mine.x=1", "--config-name", "config"],
    ],
)
def test_keys_hydra_judges_itself_pass_the_early_check(argv):
    check_set_keys(set_keys(command_line(argv)))


@pytest.mark.parametrize("classes", ["[10]", "[-1]", "[2,2]"])
def test_class_samples_of_a_class_the_data_lacks_make_no_run(
    compose_cfg, tmp_path, store_uri, classes
):
    cfg = compose_cfg(
        ["data=digits", f"tracking.uri={store_uri}", f"callbacks.class_samples.classes={classes}"]
    )
    from denselab.train import train

    with pytest.raises(ConfigError) as refused:
        train(cfg, tmp_path / "out")
    assert "must be distinct class indices of digits, 0 to 9 (0 is '0')" in str(refused.value)
    no_runs(store_uri)
