"""The figure callbacks in real runs: what lands in the MLflow run, and how it is configured."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import fashion_mnist_or_skip, only_run
from hydra.utils import instantiate
from mlflow import MlflowClient
from PIL import Image

from denselab.data.mnist import FashionMNISTDataModule
from denselab.errors import ConfigError
from denselab.reporting import callbacks
from denselab.reporting.callbacks import instantiate_callbacks
from denselab.train import train
from denselab.training.module import MLPClassifier

FIGURES = {
    "class_samples",
    "confusion_matrix_val",
    "confusion_matrix_test",
    "first_layer_weights",
    "training_curves",
    "typical_examples",
    "confident_mistakes",
}
TABLES = {
    "confusion_matrix_val.csv",
    "confusion_matrix_test.csv",
    "most_confused_val.json",
    "most_confused_test.json",
    "confident_mistakes.json",
    "class_metrics_test.json",
}
FASHION_CLASSES = list(FashionMNISTDataModule.class_names)


def artifact_files(client: MlflowClient, run_id: str, folder: str) -> set[str]:
    return {Path(a.path).name for a in client.list_artifacts(run_id, folder)}


def download(client: MlflowClient, run_id: str, path: str, folder: Path) -> Path:
    return Path(client.download_artifacts(run_id, path, str(folder)))


def read_table(path: Path) -> pd.DataFrame:
    # dtype=False: class names such as "4" stay strings
    return pd.read_json(io.StringIO(path.read_text()), orient="split", dtype=False)


@pytest.fixture
def eval_passes(monkeypatch) -> list[int]:
    """The sizes of the model's forward calls in eval mode: validation and test loops, and
    every evaluation of a split, in the order they happen."""
    sizes: list[int] = []
    real = MLPClassifier.forward

    def counting(self, x):
        if not self.training:
            sizes.append(len(x))
        return real(self, x)

    monkeypatch.setattr(MLPClassifier, "forward", counting)
    return sizes


@pytest.mark.slow  # a whole in-process run with every figure (make test runs it)
def test_a_default_run_logs_every_figure_and_table(
    compose_cfg, fixture_overrides, store_uri, tmp_path, eval_passes, monkeypatch
):
    def read_back(*args, **kwargs):
        raise AssertionError("a figure read its numbers back from MLflow")

    monkeypatch.setattr(MlflowClient, "get_metric_history", read_back)
    # A weak start (small lr) so that the test split keeps some mistakes to show.
    cfg = compose_cfg(
        [
            *fixture_overrides,
            "trainer.max_epochs=3",
            "optimizer.lr=0.003",
            "callbacks.weight_images.every_n_epochs=2",
        ]
    )
    metrics = train(cfg, tmp_path / "out").metrics
    client, run = only_run(store_uri)  # one run: no figure went to a second, fluent one
    run_id = run.info.run_id

    # No pass over the data per figure or table: Lightning's model summary (one example
    # image), 3 validation epochs (120 images), the test loop (200), then each split once
    # for every figure, table and the accuracy table.
    assert eval_passes[:5] == [1, 120, 120, 120, 200]
    assert sorted(eval_passes[5:]) == [120, 200, 480]

    assert artifact_files(client, run_id, "figures") == {f"{name}.png" for name in FIGURES}
    assert TABLES <= artifact_files(client, run_id, "tables")
    for name in FIGURES:
        pixels = np.asarray(
            Image.open(download(client, run_id, f"figures/{name}.png", tmp_path)).convert("RGB")
        )
        height, width = pixels.shape[:2]
        assert 250 <= height <= 2500 and 300 <= width <= 2500, (name, pixels.shape)
        assert pixels.var() > 0, name

    # The image series: every second epoch, and the last one.
    # The series has a key with a prefix, so MLflow's UI gives it a section of its own.
    series = [a.path for a in client.list_artifacts(run_id, "images") if a.path.endswith(".png")]
    assert all("weights~first_layer+step+" in path for path in series), series
    assert sorted(int(p.split("+step+")[1].split("+")[0]) for p in series) == [1, 2]
    tile = np.asarray(Image.open(download(client, run_id, series[0], tmp_path)))
    assert tile.ndim == 3 and tile.var() > 0

    def table(name: str) -> pd.DataFrame:
        return read_table(download(client, run_id, f"tables/{name}.json", tmp_path))

    counts = pd.read_csv(
        download(client, run_id, "tables/confusion_matrix_test.csv", tmp_path), index_col=0
    )
    counts.index = counts.index.astype(str)
    assert list(counts.index) == [str(d) for d in range(10)] == list(counts.columns)
    assert counts.to_numpy().sum() == 200
    assert np.trace(counts.to_numpy()) / 200 == pytest.approx(metrics["test/acc"])

    confused = table("most_confused_test")
    assert list(confused.columns) == ["mistake", "true", "predicted", "count", "share_of_true"]
    assert 1 <= len(confused) <= 5 and confused["count"].is_monotonic_decreasing
    first = confused.iloc[0]
    assert counts.loc[first["true"], first["predicted"]] == first["count"]

    class_metrics = table("class_metrics_test")
    assert list(class_metrics.columns) == ["class", "precision", "recall", "f1", "support"]
    diagonal = np.diag(counts.to_numpy())
    assert class_metrics["recall"].to_numpy() == pytest.approx(
        diagonal / counts.to_numpy().sum(axis=1)
    )

    mistakes = table("confident_mistakes")
    assert 1 <= len(mistakes) <= 16 and (mistakes["true"] != mistakes["predicted"]).all()
    assert set(mistakes["split"]) <= {"train", "val", "test"}
    assert mistakes["probability"].is_monotonic_decreasing
    assert len(table("most_confused_val")) <= 5


def test_callbacks_none_or_null_switch_figures_off(compose_cfg):
    def kinds(overrides):
        return {type(c).__name__ for c in instantiate_callbacks(compose_cfg(overrides).callbacks)}

    assert kinds([]) == {
        "ClassSamples",
        "ConfusionMatrix",
        "WeightImages",
        "TypicalExamples",
        "TrainingCurves",
        "ClassMetrics",
    }
    assert "TypicalExamples" not in kinds(["callbacks.typical_examples=null"])
    assert kinds(["callbacks=none"]) == set()


def test_callback_settings_reach_the_callbacks(compose_cfg):
    cfg = compose_cfg(
        [
            "callbacks.weight_images.hidden_units=4",
            "callbacks.confusion_matrix.splits=[test]",
            "seed=7",
        ]
    )
    made = {type(c).__name__: c for c in instantiate_callbacks(cfg.callbacks)}
    assert made["WeightImages"].hidden_units == 4 and made["WeightImages"].every_n_epochs is None
    assert made["ConfusionMatrix"].splits == ("test",) and made["ConfusionMatrix"].top_k == 5
    assert made["ClassSamples"].seed == 7


def test_bad_callback_settings_stop_before_any_run(
    compose_cfg, fixture_overrides, store_uri, tmp_path
):
    cfg = compose_cfg([*fixture_overrides, "callbacks.weight_images.every_n_epochs=-2"])
    with pytest.raises(
        ConfigError,
        match=r"callbacks.weight_images.every_n_epochs must be a positive integer \(got -2\)",
    ):
        train(cfg, tmp_path / "out")
    assert MlflowClient(store_uri).get_experiment_by_name("mnist") is None


def test_figure_callbacks_need_an_mlflow_run():
    import pytorch_lightning as pl

    trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(TypeError, match="callbacks=none"):
        callbacks.TrainingCurves().setup(trainer, None, "fit")


@pytest.mark.slow
def test_multinomial_weights_on_fashion_mnist_look_like_their_class(
    compose_cfg, store_uri, tmp_path
):
    fashion = fashion_mnist_or_skip()
    cfg = compose_cfg(
        [
            "experiment=course_multinomial",
            "data=fashion_mnist",
            f"data.dir={fashion}",
            "data.mirrors=[]",
            f"tracking.uri={store_uri}",
            "trainer.enable_progress_bar=false",
            "trainer.max_epochs=1",
            "data.batch_size=256",
        ]
    )
    train(cfg, tmp_path / "out")
    client, run = only_run(store_uri, "fashion_mnist")
    assert "first_layer_weights.png" in artifact_files(client, run.info.run_id, "figures")

    # The weights the figure drew: those at the end of fit.
    model = MLPClassifier.load_from_checkpoint(tmp_path / "out" / "checkpoints" / "last.ckpt")
    tiles, titles, _ = callbacks.WeightImages().tiles(model)
    assert tiles.shape == (10, 28, 28) and titles == FASHION_CLASSES

    data = instantiate(cfg.data)
    data.setup()
    x, y = data.splits["train"].x.numpy().reshape(-1, 28 * 28), data.splits["train"].y.numpy()
    class_means = np.stack([x[y == k].mean(axis=0) for k in range(10)])
    # correlation[i, j]: template of class i against the mean image of class j
    correlation = np.corrcoef(tiles.reshape(10, -1), class_means)[:10, 10:]
    assert np.all(np.diag(correlation) > 0)
    own_class_wins = correlation.argmax(axis=1) == np.arange(10)
    assert own_class_wins.sum() >= 7, correlation.round(2)
