"""Lightning callbacks that draw the course's figures and log them to the run.

Each callback only gathers arrays (the module's predictions, the images, the first layer's
weights), calls denselab.analysis and denselab.figures, and hands the result to the run
through the MLflow logger's client and run id: fluent ``mlflow.log_*`` would open a second
run. They act on rank zero only, so that several devices do not log the same files twice.

Artifacts of a run (``<split>`` is val, test, ...):

    figures/class_samples.png             when training starts
    figures/first_layer_weights.png       at the end of fit
    images/first_layer_weights*           every n epochs (an MLflow image series)
    figures/training_curves.png           at the end of fit
    figures/confusion_matrix_<split>.png  with tables/confusion_matrix_<split>.csv
                                          and tables/most_confused_<split>.json
    figures/typical_examples.png          with figures/confident_mistakes.png
                                          and tables/confident_mistakes.json
    tables/class_metrics_<split>.json
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import pytorch_lightning as pl
from matplotlib.figure import Figure
from pytorch_lightning.loggers import MLFlowLogger
from pytorch_lightning.utilities import rank_zero_only

from denselab import analysis, figures
from denselab.data.base import Split
from denselab.model import Predictions

DPI = 100
CURVE_METRICS = ("train/loss", "val/loss", "train/acc", "val/acc")


class RunArtifacts:
    """The MLflow run of the trainer's logger, as a place to put figures and tables."""

    def __init__(self, logger: MLFlowLogger):
        self.client = logger.experiment
        self.run_id = logger.run_id

    def figure(self, fig: Figure, name: str) -> None:
        self.client.log_figure(self.run_id, fig, f"figures/{name}.png", save_kwargs={"dpi": DPI})

    def table(self, frame: pd.DataFrame, name: str) -> None:
        self.client.log_table(self.run_id, frame, f"tables/{name}.json")

    def csv(self, frame: pd.DataFrame, name: str) -> None:
        self.client.log_text(self.run_id, frame.to_csv(), f"tables/{name}.csv")

    def image(self, image: np.ndarray, key: str, step: int) -> None:
        self.client.log_image(self.run_id, image, key=key, step=step)

    def metric_history(self, keys: Sequence[str]) -> pd.DataFrame:
        """The logged values of ``keys``, one column each, indexed by step (the epoch)."""
        columns = {
            key: pd.Series(
                {m.step: m.value for m in self.client.get_metric_history(self.run_id, key)}
            )
            for key in keys
        }
        return pd.DataFrame(columns).sort_index()


# -- predictions the figures share -------------------------------------------------------------

# The split whose predictions the module itself made last, by what the trainer was doing.
OWN_SPLIT = {"fit": "val", "validate": "val", "test": "test"}


@dataclass
class _Shared:
    key: tuple
    own: Optional[Predictions]
    by_split: dict[str, Predictions] = field(default_factory=dict)


_shared: "weakref.WeakKeyDictionary[pl.LightningModule, _Shared]" = weakref.WeakKeyDictionary()


def split_predictions(
    trainer: pl.Trainer, pl_module: pl.LightningModule, split: str
) -> Predictions:
    """The current weights' predictions on ``split``.

    The split the module's last loop ran (validation at fit end, test at test end) comes
    from the module. Any other split costs one batched forward pass, made once and shared by
    every callback until the weights or the module's own predictions change.
    """
    own_split = OWN_SPLIT.get(trainer.state.fn.value)
    own = pl_module.predictions.get(own_split) if own_split else None
    if split == own_split and own is not None:
        return own
    key = (trainer.state.fn, trainer.global_step)
    shared = _shared.get(pl_module)
    if shared is None or shared.key != key or shared.own is not own:
        shared = _shared[pl_module] = _Shared(key, own)
    if split not in shared.by_split:
        data = trainer.datamodule
        shared.by_split[split] = predict(pl_module, data.splits[split], data.eval_batch_size)
    return shared.by_split[split]


def predict(pl_module: pl.LightningModule, split: Split, batch_size: int) -> Predictions:
    """Class probabilities of ``split`` from the current weights, on the CPU."""
    probs = pl_module.predict_logits(split.x, batch_size).softmax(dim=1).cpu()
    return Predictions(probs, split.y)


def as_numpy(predictions: Predictions) -> tuple[np.ndarray, np.ndarray]:
    """(probs, targets) as NumPy arrays, wherever the tensors live."""
    return (
        predictions.probs.detach().float().cpu().numpy(),
        predictions.targets.detach().cpu().numpy(),
    )


# -- the callbacks -----------------------------------------------------------------------------


class FigureCallback(pl.Callback):
    """Base class: refuses to start without an MLflow run to log to."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not isinstance(trainer.logger, MLFlowLogger):
            raise TypeError(
                f"{type(self).__name__} logs figures to an MLflow run: give the Trainer an "
                "MLFlowLogger, or switch the figures off with callbacks=none."
            )

    @staticmethod
    def artifacts(trainer: pl.Trainer) -> RunArtifacts:
        return RunArtifacts(trainer.logger)


class SplitFigureCallback(FigureCallback):
    """Draws once per split, when that split's predictions are final: test after testing,
    the others (validation, train) at the end of fit."""

    def __init__(self, splits: Sequence[str]):
        self.splits = tuple(splits)

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        raise NotImplementedError

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for split in self.splits:
            if split != "test" and split in trainer.datamodule.splits:
                self.draw(trainer, pl_module, split)

    @rank_zero_only
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if "test" in self.splits:
            self.draw(trainer, pl_module, "test")


class ConfusionMatrix(SplitFigureCallback):
    """Counts heatmap, the counts as CSV, and the ``top_k`` most confused pairs as a table."""

    def __init__(self, splits: Sequence[str] = ("val", "test"), top_k: int = 5):
        super().__init__(splits)
        self.top_k = top_k

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        probs, targets = as_numpy(split_predictions(trainer, pl_module, split))
        names = list(pl_module.class_names)
        counts = analysis.confusion_counts(targets, probs.argmax(axis=1), len(names))
        accuracy = np.trace(counts) / counts.sum()
        title = f"Confusion matrix, {split} split: {counts.sum():,} images, accuracy {accuracy:.1%}"
        run = self.artifacts(trainer)
        run.figure(figures.confusion_figure(counts, names, title), f"confusion_matrix_{split}")
        run.csv(analysis.confusion_frame(counts, names), f"confusion_matrix_{split}")
        run.table(analysis.most_confused(counts, names, self.top_k), f"most_confused_{split}")


class ClassMetrics(SplitFigureCallback):
    """Per-class precision, recall, F1 and support as a table."""

    def __init__(self, splits: Sequence[str] = ("test",)):
        super().__init__(splits)

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        probs, targets = as_numpy(split_predictions(trainer, pl_module, split))
        table = analysis.class_metrics(probs, targets, pl_module.class_names)
        self.artifacts(trainer).table(table, f"class_metrics_{split}")


class WeightImages(FigureCallback):
    """First-layer weights drawn as input images: every output unit's when there is no
    hidden layer (one template per class), else the first ``hidden_units`` hidden units'.

    Also an MLflow image series (key ``first_layer_weights``, step = epoch) every
    ``every_n_epochs`` and after the last epoch; None: every epoch up to 20 epochs, then
    about 20 images in all.
    """

    SERIES_KEY = "first_layer_weights"

    def __init__(self, hidden_units: int = 16, every_n_epochs: Optional[int] = None):
        self.hidden_units = hidden_units
        self.every_n_epochs = every_n_epochs
        self._every = every_n_epochs or 1

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._every = self.every_n_epochs or analysis.image_series_every(trainer.max_epochs or -1)

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if (epoch + 1) % self._every == 0 or epoch + 1 == trainer.max_epochs:
            tiles, _, _ = self.tiles(pl_module)
            self.artifacts(trainer).image(figures.weights_mosaic(tiles), self.SERIES_KEY, epoch)

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        tiles, titles, title = self.tiles(pl_module)
        self.artifacts(trainer).figure(
            figures.weights_figure(tiles, titles, title), "first_layer_weights"
        )

    def tiles(self, pl_module: pl.LightningModule) -> tuple[np.ndarray, list[str], str]:
        """(tiles, tile titles, figure title) of the module's current first layer."""
        weights = pl_module.first_layer.weight.detach().float().cpu().numpy()
        shape = pl_module.hparams.input_shape
        if pl_module.hparams.hidden_sizes:
            tiles = analysis.weight_tiles(weights, shape, self.hidden_units)
            titles = [f"unit {i}" for i in range(len(tiles))]
            return (
                tiles,
                titles,
                f"Incoming weights of hidden units 0-{len(tiles) - 1} (of {len(weights)})",
            )
        tiles = analysis.weight_tiles(weights, shape)
        return (
            tiles,
            list(pl_module.class_names),
            "Weights of each class's output unit (no hidden layer)",
        )


class TypicalExamples(FigureCallback):
    """For each class the image it is most sure of, over ``splits``; beside it the ``mistakes``
    most confident misclassifications (figure and table). Drawn after testing when the test
    split is among ``splits``, else at the end of fit."""

    def __init__(self, splits: Sequence[str] = ("train", "val", "test"), mistakes: int = 16):
        self.splits = tuple(splits)
        self.mistakes = mistakes

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Without a test split (all test labels hidden) no test loop runs: draw now.
        if "test" not in self.splits or "test" not in trainer.datamodule.splits:
            self.draw(trainer, pl_module)

    @rank_zero_only
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if "test" in self.splits:
            self.draw(trainer, pl_module)

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        splits = [s for s in self.splits if s in trainer.datamodule.splits]
        parts = [as_numpy(split_predictions(trainer, pl_module, split)) for split in splits]
        probs = np.concatenate([p for p, _ in parts])
        targets = np.concatenate([t for _, t in parts])
        starts = np.cumsum([0] + [len(t) for _, t in parts])
        names = list(pl_module.class_names)
        where = " + ".join(splits)

        def locate(i: int) -> tuple[str, int]:
            part = int(np.searchsorted(starts, i, side="right")) - 1
            return splits[part], int(i - starts[part])

        def image(i: int) -> np.ndarray:
            split, index = locate(i)
            return trainer.datamodule.splits[split].images(index).numpy()

        run = self.artifacts(trainer)
        typical = analysis.typical_indices(probs)
        titles = [
            f"{names[k]}\np = {probs[i, k]:.3f}"
            + ("" if targets[i] == k else f"\nbut a {names[targets[i]]}")
            for k, i in enumerate(typical)
        ]
        images = np.stack([image(i) for i in typical])
        run.figure(
            figures.examples_figure(images, titles, f"Most typical image of each class ({where})"),
            "typical_examples",
        )

        wrong = analysis.confident_mistakes(probs, targets, self.mistakes)
        predicted = probs.argmax(axis=1)
        rows = [
            {
                "split": locate(i)[0],
                "index": locate(i)[1],
                "true": names[targets[i]],
                "predicted": names[predicted[i]],
                "probability": float(probs[i, predicted[i]]),
            }
            for i in wrong
        ]
        table = pd.DataFrame(rows, columns=["split", "index", "true", "predicted", "probability"])
        run.table(table, "confident_mistakes")
        if len(wrong):
            titles = [f"{r['true']}\n-> {r['predicted']}\np = {r['probability']:.3f}" for r in rows]
            title = f"Most confident mistakes ({where}): true -> predicted"
            fig = figures.examples_figure(np.stack([image(i) for i in wrong]), titles, title)
            run.figure(fig, "confident_mistakes")


class ClassSamples(FigureCallback):
    """``per_class`` random training images of each class, once when training starts: a
    look at the data before trusting any number computed from it."""

    def __init__(self, per_class: int = 10, seed: int = 0):
        self.per_class = per_class
        self.seed = seed

    @rank_zero_only
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        data = trainer.datamodule
        train = data.splits["train"]
        picks = analysis.class_sample_indices(
            train.y.numpy(), self.per_class, data.num_classes, self.seed
        )
        title = f"{self.per_class} random training images of each class"
        fig = figures.class_samples_figure(
            [train.images(p).numpy() for p in picks], data.class_names, title
        )
        self.artifacts(trainer).figure(fig, "class_samples")


class TrainingCurves(FigureCallback):
    """Loss and accuracy per epoch, train against validation, from the run's own metrics."""

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        run = self.artifacts(trainer)
        history = run.metric_history(CURVE_METRICS)
        if not history.empty:
            run.figure(figures.curves_figure(history, "Training curves"), "training_curves")
