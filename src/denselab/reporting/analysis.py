"""The numbers behind the course's figures, from plain arrays: no plotting, no tracking.

Every function takes NumPy arrays (probabilities (N, K), labels (N,), weights (U, D)) and
returns arrays or a pandas DataFrame, so a test can check each number a figure shows.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch
from torchmetrics.functional.classification import (
    multiclass_f1_score,
    multiclass_precision,
    multiclass_recall,
)


def confusion_counts(targets: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    cells = np.asarray(targets, dtype=np.int64) * num_classes + np.asarray(
        predicted, dtype=np.int64
    )
    return np.bincount(cells, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def confusion_frame(counts: np.ndarray, class_names: Sequence[str]) -> pd.DataFrame:
    """The counts with class names: index = true class, columns = predicted class."""
    names = list(class_names)
    frame = pd.DataFrame(counts, index=pd.Index(names, name="true"), columns=names)
    frame.columns.name = "predicted"
    return frame


def most_confused(counts: np.ndarray, class_names: Sequence[str], top_k: int = 5) -> pd.DataFrame:
    """The ``top_k`` largest off-diagonal cells, largest first: which class is taken for which.

    ``share_of_true`` is the cell over its row sum: the fraction of the true class's images
    that went to the predicted class. Pairs that never happened are left out.
    """
    mistakes = np.array(counts, dtype=np.int64)
    np.fill_diagonal(mistakes, 0)
    order = np.argsort(-mistakes, axis=None, kind="stable")[:top_k]
    row_sums = counts.sum(axis=1)
    rows = []
    for true, predicted in zip(*np.unravel_index(order, mistakes.shape)):
        count = int(mistakes[true, predicted])
        if count == 0:
            break
        rows.append(
            {
                "mistake": f"{class_names[true]} taken for {class_names[predicted]}",
                "true": class_names[true],
                "predicted": class_names[predicted],
                "count": count,
                "share_of_true": count / row_sums[true],
            }
        )
    return pd.DataFrame(rows, columns=["mistake", "true", "predicted", "count", "share_of_true"])


def typical_indices(probs: np.ndarray) -> np.ndarray:
    """For each class k, the index of the image with the highest probability of class k."""
    return np.asarray(probs).argmax(axis=0)


def confident_mistakes(probs: np.ndarray, targets: np.ndarray, top_k: int = 16) -> np.ndarray:
    """Indices of the misclassified images, most confident (highest predicted prob) first."""
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != targets)
    confidence = probs[wrong, predicted[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")[:top_k]]


def class_sample_indices(
    targets: np.ndarray,
    per_class: int,
    num_classes: int,
    seed: int = 0,
    classes: Optional[Sequence[int]] = None,
) -> list[np.ndarray]:
    """For each class (or each of ``classes``), up to ``per_class`` random indices of its
    images (sorted)."""
    rng = np.random.default_rng(seed)
    samples = []
    for k in range(num_classes) if classes is None else classes:
        members = np.flatnonzero(targets == k)
        chosen = rng.choice(members, size=min(per_class, len(members)), replace=False)
        samples.append(np.sort(chosen))
    return samples


def weight_tiles(
    weights: np.ndarray, input_shape: Sequence[int], units: int | None = None
) -> np.ndarray:
    """The incoming weights of the first ``units`` units, each row reshaped to the input image.

    ``weights`` is a Linear layer's (out_features, in_features) matrix; the result is
    (units, *input_shape).
    """
    weights = np.asarray(weights)
    count = len(weights) if units is None else min(units, len(weights))
    return weights[:count].reshape(count, *input_shape)


def scale_per_tile(tiles: np.ndarray) -> np.ndarray:
    """Each tile min-max scaled to [0, 1] on its own (how RGB weight tiles are shown)."""
    flat = tiles.reshape(len(tiles), -1)
    low = flat.min(axis=1, keepdims=True)
    span = flat.max(axis=1, keepdims=True) - low
    return ((flat - low) / np.where(span > 0, span, 1.0)).reshape(tiles.shape)


def class_metrics(
    probs: np.ndarray, targets: np.ndarray, class_names: Sequence[str]
) -> pd.DataFrame:
    """Per-class precision, recall, F1 (torchmetrics) and support: one row per class."""
    num_classes = len(class_names)
    preds = torch.as_tensor(probs).argmax(dim=1)
    target = torch.as_tensor(targets, dtype=torch.int64)
    scores = {
        name: fn(preds, target, num_classes=num_classes, average=None).numpy()
        for name, fn in (
            ("precision", multiclass_precision),
            ("recall", multiclass_recall),
            ("f1", multiclass_f1_score),
        )
    }
    return pd.DataFrame(
        {
            "class": list(class_names),
            **scores,
            "support": np.bincount(target.numpy(), minlength=num_classes),
        }
    )


def image_series_every(max_epochs: int, images: int = 20) -> int:
    """Epochs between two images of a series: every epoch for short runs, ~``images`` in all."""
    return max(1, math.ceil(max_epochs / images))
