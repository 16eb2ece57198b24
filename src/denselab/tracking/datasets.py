"""A run's data as MLflow datasets: one per split it saw (contexts ``training``,
``validation``, ``test``, and ``unlabeled`` for rows whose labels are hidden), each named for
the dataset, with where it came from, the digest of its content (see
:mod:`denselab.data.digest`: one pixel, one label or another validation seed changes it) and
what it holds (shape, pixel type, classes, rows per class). MLflow shows them in the run's
"Datasets used" and the runs table's Dataset column. MLflow 3 links a score to a dataset only
as a logged model's metric: the run's model carries its scores so linked
(:meth:`denselab.tracking.logger.RunLogger.link_model_scores`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import numpy as np
from mlflow.entities import Dataset, DatasetInput, InputTag
from mlflow.types import Schema, TensorSpec

# The split -> MLflow's context tag ("mlflow.data.context"), as mlflow.log_input names them.
CONTEXTS = {"train": "training", "val": "validation", "test": "test", "unlabeled": "unlabeled"}
CONTEXT_TAG = "mlflow.data.context"


@dataclass(frozen=True)
class SplitDataset:
    """What MLflow records of one split."""

    split: str
    dataset: Dataset

    @property
    def context(self) -> str:
        return CONTEXTS.get(self.split, self.split)

    def as_input(self) -> DatasetInput:
        return DatasetInput(self.dataset, tags=[InputTag(CONTEXT_TAG, self.context)])


def split_datasets(data) -> list[SplitDataset]:
    """Each split of a set-up datamodule ``data``, as an MLflow dataset."""
    digests = data.split_digests()
    source_type, source = data.source()
    found = [(name, split.x, split.y) for name, split in data.splits.items()]
    if data.unlabeled is not None:
        found.append(("unlabeled", data.unlabeled.x, None))
    return [
        SplitDataset(
            name,
            Dataset(
                name=data.name,
                digest=digests[name],
                source_type=source_type,
                source=json.dumps({"uri": source}),
                schema=_schema(images),
                profile=_profile(images, labels, data.class_names),
            ),
        )
        for name, images, labels in found
    ]


def _schema(images) -> str:
    # The form mlflow.data's NumPy datasets use, so that the UI shows it as theirs.
    images = _numpy(images)
    features = Schema([TensorSpec(images.dtype, (-1, *images.shape[1:]), "images")])
    targets = Schema([TensorSpec(np.dtype(np.int64), (-1,), "labels")])
    return json.dumps(
        {"mlflow_tensorspec": {"features": features.to_json(), "targets": targets.to_json()}}
    )


def _profile(images, labels: Optional[object], class_names) -> str:
    images = _numpy(images)
    profile = {
        "rows": int(images.shape[0]),
        "features_shape": list(images.shape),
        "features_dtype": str(images.dtype),
        "classes": len(class_names),
    }
    if labels is not None:
        counts = np.bincount(_numpy(labels).astype(np.int64), minlength=len(class_names))
        profile["rows_per_class"] = {str(n): int(c) for n, c in zip(class_names, counts)}
    return json.dumps(profile)


def _numpy(array) -> np.ndarray:
    if hasattr(array, "detach"):  # a torch tensor
        return array.detach().cpu().numpy()
    return np.asarray(array)
