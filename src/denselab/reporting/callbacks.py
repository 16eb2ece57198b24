"""Lightning callbacks that decide when each of the course's figures is drawn.

A callback here holds no numbers and draws nothing itself: at its moment it asks the run's
:class:`~denselab.reporting.evaluation.Evaluator` for evaluations (or the model for its weights, or
the run for its epoch history), hands them to a function of :mod:`.artifacts`, and gives
the result to the run writer (:class:`~denselab.tracking.logger.RunLogger`).
:func:`figure_callbacks` binds both to every :class:`RunCallback` before fitting. They act on
rank zero only, so that several devices do not log the same files twice.

When:
- class samples: when training starts;
- the first layer's weights: as an image series every n epochs, and as a figure at the end
  of fit (the last epoch's weights);
- training curves: at the end of fit;
- every figure and table that needs predictions: once, on the weights the run is reported
  on, when they are final: after testing (the best checkpoint), or at the end of fit when the
  data has no labelled test split.
"""

from __future__ import annotations

from typing import Optional, Sequence

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.utilities import rank_zero_only

from denselab.config import (
    ClassMetricsSchema,
    ClassSamplesSchema,
    ConfusionMatrixSchema,
    TypicalExamplesSchema,
    WeightImagesSchema,
    default_of,
)
from denselab.reporting import analysis
from denselab.reporting import artifacts as report
from denselab.reporting.artifacts import CURVE_METRICS
from denselab.reporting.evaluation import Evaluation, Evaluator
from denselab.tracking.logger import RunLogger
from denselab.training.callback_group import joined_by_kind


class RunCallback(pl.Callback):
    """Base class: a callback that hands figures and tables to an MLflow run."""

    run: Optional["RunLogger"] = None
    evaluator: Optional[Evaluator] = None

    def bind(self, run: "RunLogger", evaluator: Evaluator) -> None:
        """The run to write to, and the evaluator that owns the run's predictions."""
        self.run, self.evaluator = run, evaluator

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.run is None or self.evaluator is None:
            raise TypeError(
                f"{type(self).__name__} logs figures to an MLflow run: bind it to the run's "
                "logger and evaluator (denselab.train does), or switch the figures off with "
                "callbacks=none."
            )


class FinalEvaluationCallback(RunCallback):
    """Draws from the evaluations of the weights the run is reported on, once they are final:
    after testing, or at the end of fit when there is no labelled test split to test on."""

    def draw(self) -> None:
        raise NotImplementedError

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if "test" not in self.evaluator.splits:
            self.draw()

    @rank_zero_only
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.draw()


class ConfusionMatrix(FinalEvaluationCallback):
    """Counts heatmap, the counts as CSV, and the ``top_k`` most confused pairs, per split."""

    def __init__(
        self,
        splits: Sequence[str] = default_of(ConfusionMatrixSchema, "splits"),
        top_k: int = default_of(ConfusionMatrixSchema, "top_k"),
    ):
        self.splits = tuple(splits)
        self.top_k = top_k

    def draw(self) -> None:
        for evaluation in self.evaluator.evaluations(self.splits):
            self.run.artifacts(report.confusion(evaluation, self.top_k))


class ClassMetrics(FinalEvaluationCallback):
    """Per-class precision, recall, F1 and support as a table, per split."""

    def __init__(self, splits: Sequence[str] = default_of(ClassMetricsSchema, "splits")):
        self.splits = tuple(splits)

    def draw(self) -> None:
        for evaluation in self.evaluator.evaluations(self.splits):
            self.run.artifacts(report.class_metrics(evaluation))


class TypicalExamples(FinalEvaluationCallback):
    """For each class the image it is most sure of over ``splits``; beside it the
    ``mistakes`` most confident misclassifications (figure and table)."""

    def __init__(
        self,
        splits: Sequence[str] = default_of(TypicalExamplesSchema, "splits"),
        mistakes: int = default_of(TypicalExamplesSchema, "mistakes"),
    ):
        self.splits = tuple(splits)
        self.mistakes = mistakes

    def draw(self) -> None:
        evaluations: list[Evaluation] = self.evaluator.evaluations(self.splits)
        if evaluations:
            self.run.artifacts(report.typical_examples(evaluations, self.mistakes))


class WeightImages(RunCallback):
    """First-layer weights drawn as input images (see :func:`.artifacts.weight_tiles`):
    an MLflow image series (key ``SERIES_KEY``, step = epoch) every ``every_n_epochs`` and
    after the last epoch, and a figure at the end of fit. ``every_n_epochs`` None: every
    epoch up to 20 epochs, then about 20 images in all."""

    SERIES_KEY = "weights/first_layer"

    def __init__(
        self,
        hidden_units: int = default_of(WeightImagesSchema, "hidden_units"),
        every_n_epochs: Optional[int] = default_of(WeightImagesSchema, "every_n_epochs"),
    ):
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
            self.run.image(report.weights_image(tiles), self.SERIES_KEY, epoch)

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.run.artifacts(report.first_layer_weights(*self.tiles(pl_module)))

    def tiles(self, model: pl.LightningModule):
        """(tiles, tile titles, figure title) of ``model``'s current first layer."""
        return report.weight_tiles(
            model.first_layer_weights(),
            model.input_shape,
            model.class_names,
            model.has_hidden_layer,
            self.hidden_units,
        )


class ClassSamples(RunCallback):
    """``per_class`` random training images of each class, once when training starts: a
    look at the data before trusting any number computed from it."""

    def __init__(
        self,
        per_class: int = default_of(ClassSamplesSchema, "per_class"),
        seed: int = 0,
        classes: Optional[Sequence[int]] = None,
    ):
        self.per_class = per_class
        self.seed = seed
        self.classes = list(classes) if classes else None

    @rank_zero_only
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        train = self.evaluator.labelled("train")
        made = report.class_samples(train, self.per_class, self.seed, self.classes)
        self.run.artifacts(made)


class TrainingCurves(RunCallback):
    """Loss and accuracy per epoch, train against validation, as the run logged them."""

    @rank_zero_only
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.run.artifacts(report.training_curves(self.run.history(CURVE_METRICS)))


def instantiate_callbacks(callbacks_cfg: Optional[DictConfig], run=None, evaluator=None) -> list:
    """The ``callbacks`` group: a mapping of names to callback configs; null ones are off.
    Callbacks that write to the run are bound to ``run`` and ``evaluator``."""
    if not callbacks_cfg:
        return []
    made = [instantiate(cb) for cb in callbacks_cfg.values() if cb and "_target_" in cb]
    for callback in made:
        if isinstance(callback, RunCallback) and run is not None:
            callback.bind(run, evaluator)
    return made


def figure_callbacks(callbacks_cfg: Optional[DictConfig], run, evaluator) -> list:
    """The callbacks of :func:`instantiate_callbacks`, with those that act only around
    epochs joined in one (:mod:`denselab.training.callback_group`): Lightning calls every
    hook of every callback at every step."""
    return joined_by_kind(instantiate_callbacks(callbacks_cfg, run, evaluator), RunCallback)
