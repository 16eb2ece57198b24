"""What the trained weights make of each split: one :class:`Evaluation` per (weights, split).

An :class:`Evaluator` belongs to one run (one model, one datamodule). It makes the evaluation
of a split with one batched forward pass the first time something asks for it, and hands the
same object to everyone else who asks while the weights stay as they are: the figures, the
tables, the accuracy-by-split table and the hidden-label predictions. It notices new weights
by itself (an optimizer step or a loaded checkpoint), so no one has to tell it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch

from denselab.data.base import ImageDataModule
from denselab.training.module import MLPClassifier, classification_loss


@dataclass(frozen=True)
class Evaluation:
    """One split as the weights see it: class probabilities (N, K), true labels (N,), the
    images (N, *input_shape) as stored (uint8, or float in [0, 1]: read them for a figure
    through :func:`denselab.data.pixels.as_float_array`) and the loss, with the class names.
    Arrays are on the CPU; the images are the split's own memory, not a copy."""

    split: str
    probs: np.ndarray
    targets: np.ndarray
    images: np.ndarray
    class_names: tuple[str, ...]
    loss: float

    @cached_property
    def predicted(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    @property
    def accuracy(self) -> float:
        return float((self.predicted == self.targets).mean()) if len(self.targets) else 0.0

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class LabelledImages:
    """A split's images (as stored, see :class:`Evaluation`) and labels, without predictions
    (e.g. to show samples of the data)."""

    images: np.ndarray
    targets: np.ndarray
    class_names: tuple[str, ...]


class Evaluator:
    """The evaluations of ``model`` on ``datamodule``'s splits, each made at most once per
    state of the weights."""

    def __init__(self, model: MLPClassifier, datamodule: ImageDataModule):
        self.model = model
        self.datamodule = datamodule
        self._weights: Optional[tuple] = None
        self._made: dict[str, Evaluation] = {}

    @property
    def splits(self) -> tuple[str, ...]:
        """The labelled splits the data has, in table order (train, val, test)."""
        return tuple(self.datamodule.splits)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.datamodule.class_names)

    def labelled(self, split: str) -> LabelledImages:
        data = self.datamodule.splits[split]
        return LabelledImages(data.x.numpy(), data.y.numpy(), self.class_names)

    def evaluation(self, split: str) -> Evaluation:
        """The current weights' evaluation of ``split``: made now, or the one made before."""
        weights = self._weights_state()
        if weights != self._weights:
            self._weights, self._made = weights, {}
        if split not in self._made:
            self._made[split] = self._evaluate(split)
        return self._made[split]

    def evaluations(self, splits: Sequence[str]) -> list[Evaluation]:
        """The evaluations of those ``splits`` the data has, in the order given."""
        return [self.evaluation(s) for s in splits if s in self.datamodule.splits]

    def accuracy_by_split(self) -> pd.DataFrame:
        """The course's table: accuracy and loss of the current weights on each split."""
        rows = [
            {"split": e.split, "images": len(e), "accuracy": e.accuracy, "loss": e.loss}
            for e in self.evaluations(self.splits)
        ]
        return pd.DataFrame(rows, columns=["split", "images", "accuracy", "loss"])

    def unlabeled_predictions(self) -> Optional[pd.DataFrame]:
        """Each image with a hidden label: its predicted class (label and name) and
        probability; None when the data hides no labels."""
        unlabeled = self.datamodule.unlabeled
        if unlabeled is None:
            return None
        probs = self._probabilities(unlabeled.x)
        predicted = probs.argmax(axis=1)
        return pd.DataFrame(
            {
                "obs_id": unlabeled.obs_ids,
                "predicted_label": [self.datamodule.class_labels[k] for k in predicted],
                "predicted_class": [self.class_names[k] for k in predicted],
                "probability": probs[np.arange(len(predicted)), predicted],
            }
        )

    # -- one pass ----------------------------------------------------------------------

    def _evaluate(self, split: str) -> Evaluation:
        data = self.datamodule.splits[split]
        logits = self.model.predict_logits(data.x, self.datamodule.eval_batch_size)
        targets = data.y.to(logits.device)
        loss = classification_loss(self.model.loss_kind, logits, targets).item()
        return Evaluation(
            split=split,
            probs=logits.softmax(dim=1).float().cpu().numpy(),
            targets=data.y.numpy(),
            images=data.x.numpy(),
            class_names=self.class_names,
            loss=loss,
        )

    def _probabilities(self, images: torch.Tensor) -> np.ndarray:
        logits = self.model.predict_logits(images, self.datamodule.eval_batch_size)
        return logits.softmax(dim=1).float().cpu().numpy()

    def _weights_state(self) -> tuple:
        # Every in-place change of a tensor (an optimizer step, load_state_dict, a batch
        # norm's running statistics) bumps its version counter: together with the tensors'
        # identities they tell whether the weights are still those last evaluated.
        tensors = itertools.chain(self.model.parameters(), self.model.buffers())
        return tuple((id(t), t._version) for t in tensors)
