"""README's "Extending denselab" recipes, followed to the letter from a folder of one's own.

A dataset: one module (the class) and one YAML (conf/data/<name>.yaml), found through Hydra's
search path. An optimizer: one YAML (conf/optimizer/<name>.yaml) reusing a schema. A figure:
one module (what it draws and when), switched on from the command line. None of them touches
denselab's own files.
"""

from __future__ import annotations

import textwrap

import pytest
from conftest import only_run
from helpers import run_cli

pytestmark = pytest.mark.slow

DATASET_MODULE = '''
"""Stripes: each class is a bright column in noise (8x8 images)."""
import numpy as np

from denselab.data.base import ImageDataModule


class StripesDataModule(ImageDataModule):
    name = "stripes"
    class_names = ("left", "middle", "right")

    def load_arrays(self):
        rng = np.random.default_rng(0)
        labels = rng.integers(0, 3, size=400)
        images = rng.integers(0, 60, size=(400, 8, 8)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, :, 1 + 3 * label] = 250
        return images[:300], labels[:300], images[300:], labels[300:]
'''

DATASET_YAML = """
# Stripes: three classes of 8x8 images.
defaults:
  - /schema/data/held_out@_here_
  - _self_

_target_: my_extensions.StripesDataModule
name: stripes
dir: data/stripes
"""

OPTIMIZER_YAML = """
# AdamW takes Adam's settings: reuse its schema, change the class.
defaults:
  - /schema/optimizer/adam@_here_
  - _self_

_target_: torch.optim.AdamW
lr: 0.01
weight_decay: 0.01
"""

FIGURE_MODULE = '''
"""A histogram of the test split's confidence in its predictions."""
from denselab.reporting.callbacks import FinalEvaluationCallback
from denselab.reporting.figures import new_figure
from denselab.reporting.artifacts import Artifacts


def confidence_histogram(evaluation):
    fig = new_figure(6.0, 4.0)
    ax = fig.add_subplot()
    ax.hist(evaluation.probs.max(axis=1), bins=10, range=(0, 1))
    ax.set_xlabel("probability of the predicted class")
    return Artifacts(figures={f"confidence_{evaluation.split}": fig})


class Confidence(FinalEvaluationCallback):
    def __init__(self, splits=("test",)):
        self.splits = tuple(splits)

    def draw(self):
        for evaluation in self.evaluator.evaluations(self.splits):
            self.run.artifacts(confidence_histogram(evaluation))
'''


def test_a_dataset_an_optimizer_and_a_figure_of_ones_own(tmp_path, store_uri):
    ext = tmp_path / "ext"
    (ext / "conf" / "data").mkdir(parents=True)
    (ext / "conf" / "optimizer").mkdir()
    (ext / "my_extensions.py").write_text(textwrap.dedent(DATASET_MODULE))
    (ext / "my_figures.py").write_text(textwrap.dedent(FIGURE_MODULE))
    (ext / "conf" / "data" / "stripes.yaml").write_text(DATASET_YAML)
    (ext / "conf" / "optimizer" / "adamw.yaml").write_text(OPTIMIZER_YAML)

    result = run_cli(
        [
            f"hydra.searchpath=[file://{ext / 'conf'}]",
            "data=stripes",
            "optimizer=adamw",
            "+callbacks.confidence._target_=my_figures.Confidence",
            "trainer.max_epochs=1",
            "trainer.enable_progress_bar=false",
            f"tracking.uri={store_uri}",
        ],
        tmp_path,
        env={"PYTHONPATH": str(ext)},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client, run = only_run(store_uri, "stripes")
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "stripes-mlp[128]-adamw"
    assert run.data.params["data.val_fraction"] == "0.2"  # the schema's default
    assert run.data.params["optimizer.weight_decay"] == "0.01"
    assert run.data.metrics["test/acc"] > 0.9  # chance is 1/3
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {"figures/confidence_test.png", "figures/confusion_matrix_test.png"} <= figures
