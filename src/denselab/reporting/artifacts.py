"""The run's figures and tables, as pure functions of evaluations, weights and history.

Each function takes what :mod:`denselab.reporting.evaluation` made (or the first layer's weights, or
the epoch history) and returns :class:`Artifacts`: named matplotlib figures and pandas
tables, ready for the run writer. The numbers come from :mod:`denselab.reporting.analysis`, the
drawing from :mod:`.figures`; nothing here knows Lightning or MLflow, so a test can
call each one on arrays it made itself.

Artifact names (``<split>`` is train, val or test):

    figures/class_samples.png             class_samples
    figures/first_layer_weights.png       first_layer_weights (+ the image series)
    figures/training_curves.png           training_curves
    figures/confusion_matrix_<split>.png  confusion_matrix, with tables/confusion_matrix_<split>.csv
                                          and tables/most_confused_<split>.json
    figures/typical_examples.png          typical_examples, with figures/confident_mistakes.png
                                          and tables/confident_mistakes.json
    tables/class_metrics_<split>.json     class_metrics
    tables/accuracy_by_split.json         written by reporting/results.py from the evaluator
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from denselab.data.pixels import as_float_array
from denselab.reporting import analysis, figures

# The per-epoch metrics the training curves draw, train against validation.
CURVE_METRICS = ("train/loss", "val/loss", "train/acc", "val/acc")

if TYPE_CHECKING:  # evaluation imports Lightning
    from denselab.reporting.evaluation import Evaluation, LabelledImages  # noqa: F401


@dataclass
class Artifacts:
    """Named figures (``figures/<name>.png``), tables (``tables/<name>.json``) and CSV tables
    (``tables/<name>.csv``) for one run."""

    figures: dict[str, Figure] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    csvs: dict[str, pd.DataFrame] = field(default_factory=dict)


def confusion(evaluation: "Evaluation", top_k: int) -> Artifacts:
    """Counts heatmap, the counts as CSV, and the ``top_k`` most confused pairs."""
    split, names = evaluation.split, list(evaluation.class_names)
    counts = analysis.confusion_counts(evaluation.targets, evaluation.predicted, len(names))
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    title = f"Confusion matrix, {split} split: {counts.sum():,} images, accuracy {accuracy:.1%}"
    return Artifacts(
        figures={f"confusion_matrix_{split}": figures.confusion_figure(counts, names, title)},
        tables={f"most_confused_{split}": analysis.most_confused(counts, names, top_k)},
        csvs={f"confusion_matrix_{split}": analysis.confusion_frame(counts, names)},
    )


def class_metrics(evaluation: "Evaluation") -> Artifacts:
    """Per-class precision, recall, F1 and support."""
    table = analysis.class_metrics(evaluation.probs, evaluation.targets, evaluation.class_names)
    return Artifacts(tables={f"class_metrics_{evaluation.split}": table})


def typical_examples(evaluations: Sequence["Evaluation"], mistakes: int) -> Artifacts:
    """For each class the image it is most sure of, over all ``evaluations`` together, and
    the ``mistakes`` most confident misclassifications (figure and table)."""
    probs = np.concatenate([e.probs for e in evaluations])
    targets = np.concatenate([e.targets for e in evaluations])
    starts = np.cumsum([0] + [len(e) for e in evaluations])
    names = list(evaluations[0].class_names)
    where = " + ".join(e.split for e in evaluations)

    def locate(i: int) -> tuple["Evaluation", int]:
        part = int(np.searchsorted(starts, i, side="right")) - 1
        return evaluations[part], int(i - starts[part])

    def image(i: int) -> np.ndarray:
        evaluation, index = locate(i)
        return as_float_array(evaluation.images[index])

    made = Artifacts()
    typical = analysis.typical_indices(probs)
    titles = [
        f"{names[k]}\np = {probs[i, k]:.3f}"
        + ("" if targets[i] == k else f"\nbut a {names[targets[i]]}")
        for k, i in enumerate(typical)
    ]
    made.figures["typical_examples"] = figures.examples_figure(
        np.stack([image(i) for i in typical]), titles, f"Most typical image of each class ({where})"
    )

    wrong = analysis.confident_mistakes(probs, targets, mistakes)
    predicted = probs.argmax(axis=1)
    rows = [
        {
            "split": locate(i)[0].split,
            "index": locate(i)[1],
            "true": names[targets[i]],
            "predicted": names[predicted[i]],
            "probability": float(probs[i, predicted[i]]),
        }
        for i in wrong
    ]
    made.tables["confident_mistakes"] = pd.DataFrame(
        rows, columns=["split", "index", "true", "predicted", "probability"]
    )
    if len(wrong):
        titles = [f"{r['true']}\n-> {r['predicted']}\np = {r['probability']:.3f}" for r in rows]
        made.figures["confident_mistakes"] = figures.examples_figure(
            np.stack([image(i) for i in wrong]),
            titles,
            f"Most confident mistakes ({where}): true -> predicted",
        )
    return made


def class_samples(
    data: "LabelledImages", per_class: int, seed: int, classes: Optional[Sequence[int]] = None
) -> Artifacts:
    """``per_class`` random images of each class (or of each of ``classes``, by index): a
    look at the data before any number. One class alone is drawn ten images to a row, as
    the course's 60 examples of the digit 2."""
    names = list(data.class_names)
    chosen = list(range(len(names)) if classes is None else classes)
    picks = analysis.class_sample_indices(data.targets, per_class, len(names), seed, chosen)
    samples = [as_float_array(data.images[p]) for p in picks]
    rows = [names[k] for k in chosen]
    title = f"{per_class} random training images of each class"
    if len(chosen) == 1:
        title = f"{per_class} random training images of class {names[chosen[0]]}"
        one = samples[0]
        samples = [one[i : i + SAMPLES_PER_ROW] for i in range(0, len(one), SAMPLES_PER_ROW)]
        rows = [rows[0]] + [""] * (len(samples) - 1)
    fig = figures.class_samples_figure(samples, rows, title)
    return Artifacts(figures={"class_samples": fig})


SAMPLES_PER_ROW = 10  # one class's samples, as rows of this many


def weight_tiles(
    weights: np.ndarray,
    input_shape: Sequence[int],
    class_names: Sequence[str],
    has_hidden_layer: bool,
    hidden_units: int,
) -> tuple[np.ndarray, list[str], str]:
    """(tiles, tile titles, figure title) of a first layer's (units, inputs) weights: every
    output unit's when there is no hidden layer (one template per class), else the first
    ``hidden_units`` hidden units'."""
    if has_hidden_layer:
        tiles = analysis.weight_tiles(weights, input_shape, hidden_units)
        title = f"Incoming weights of hidden units 0-{len(tiles) - 1} (of {len(weights)})"
        return tiles, [f"unit {i}" for i in range(len(tiles))], title
    tiles = analysis.weight_tiles(weights, input_shape)
    return tiles, list(class_names), "Weights of each class's output unit (no hidden layer)"


def weights_image(tiles: np.ndarray) -> np.ndarray:
    """The tiles as one image, for an MLflow image series (one image per epoch)."""
    return figures.weights_mosaic(tiles)


def first_layer_weights(tiles: np.ndarray, titles: Sequence[str], title: str) -> Artifacts:
    return Artifacts(figures={"first_layer_weights": figures.weights_figure(tiles, titles, title)})


def run_description(
    accuracy: pd.DataFrame,
    scored: "Evaluation",
    history: pd.DataFrame,
    figure_paths: Sequence[str],
    parameters: Optional[int] = None,
    notes: Sequence[str] = (),
) -> str:
    """The run's Overview in MLflow (Markdown): the result in one line (where the UI shows a
    description's first lines only), accuracy by split, the three most confused pairs of
    ``scored``'s split, the best epoch, the figures to look at, and ``notes`` (where the
    run came from: a rerun, uncommitted code)."""
    lines = [result_line(accuracy, history, parameters), ""]
    lines += ["**Accuracy by split** (best checkpoint)", "", "| split | images | accuracy | loss |"]
    lines.append("| --- | ---: | ---: | ---: |")
    for row in accuracy.itertuples(index=False):
        lines.append(f"| {row.split} | {row.images:,} | {row.accuracy:.4f} | {row.loss:.4f} |")
    counts = analysis.confusion_counts(scored.targets, scored.predicted, len(scored.class_names))
    confused = analysis.most_confused(counts, list(scored.class_names), 3)
    if len(confused):
        pairs = ", ".join(f"{r.mistake} ({r.count})" for r in confused.itertuples(index=False))
        lines += ["", f"**Most confused** ({scored.split}): {pairs}"]
    if "val/acc" in history and history["val/acc"].notna().any():
        best = history["val/acc"].idxmax()
        lines += [
            "",
            f"**Best epoch**: step {best} (epoch {best + 1} of {len(history)}), "
            f"val/acc {history['val/acc'][best]:.4f}",
        ]
    if figure_paths:
        lines += ["", "**Figures** (Artifacts): " + ", ".join(f"`{p}`" for p in figure_paths)]
    for note in notes:
        lines += ["", note]
    return "\n".join(lines) + "\n"


def result_line(
    accuracy: pd.DataFrame, history: pd.DataFrame, parameters: Optional[int] = None
) -> str:
    """``**Test accuracy 0.9612** · validation 0.9650 · best epoch 7 of 10 · 101,770
    parameters``: what a run made, at a glance (validation first where test labels are
    hidden)."""
    scores = dict(zip(accuracy["split"], accuracy["accuracy"]))
    named = (("test", "test accuracy"), ("val", "validation"))
    said = [f"{name} {scores[split]:.4f}" for split, name in named if split in scores]
    parts = [f"**{said[0][0].upper()}{said[0][1:]}**", *said[1:]] if said else []
    if "val/acc" in history and history["val/acc"].notna().any():
        parts.append(f"best epoch {history['val/acc'].idxmax() + 1} of {len(history)}")
    if parameters:
        parts.append(f"{parameters:,} parameters")
    return " · ".join(parts)


def training_curves(history: pd.DataFrame) -> Artifacts:
    """Loss and accuracy per epoch, train against validation; nothing without history."""
    if history.empty:
        return Artifacts()
    return Artifacts(figures={"training_curves": figures.curves_figure(history, "Training curves")})
