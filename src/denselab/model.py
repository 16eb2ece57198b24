"""The dense network: an MLP LightningModule that knows nothing of the dataset it sees.

Training metrics are summed in tensors during the epoch and logged once at its end, and
validation and test predictions are kept whole for the epoch: that is cheaper per step than
logging every batch, and it leaves the figures (confusion matrix, typical examples) the
predictions they need without another pass over the data.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from denselab.pixels import as_float

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}


def build_mlp(
    in_features: int,
    hidden_sizes: Sequence[int],
    num_classes: int,
    activation: str = "relu",
    dropout: float = 0.0,
    batch_norm: bool = False,
) -> nn.Sequential:
    """Linear layers of ``hidden_sizes`` widths, each followed by [BatchNorm], activation
    and [Dropout], then a Linear layer to class logits. Input: flattened images."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for size in hidden_sizes:
        layers.append(nn.Linear(width, size))
        if batch_norm:
            layers.append(nn.BatchNorm1d(size))
        layers.append(ACTIVATIONS[activation]())
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = size
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def classification_loss(kind: str, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if kind == "mse":  # the course's alternative: squared error of softmax vs one-hot
        one_hot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
        return F.mse_loss(logits.softmax(dim=1), one_hot)
    return F.cross_entropy(logits, targets)


@dataclass
class Predictions:
    """Class probabilities (N, K) and true labels (N,) of one split, in split order."""

    probs: torch.Tensor
    targets: torch.Tensor

    @property
    def predicted(self) -> torch.Tensor:
        return self.probs.argmax(dim=1)

    @property
    def accuracy(self) -> float:
        return (self.predicted == self.targets).float().mean().item()


class MLPClassifier(pl.LightningModule):
    """A multi-layer perceptron classifier for images of ``input_shape``."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden_sizes: Sequence[int] = (128,),
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        loss: str = "cross_entropy",
        optimizer: Optional[Callable[..., torch.optim.Optimizer]] = None,
        class_names: Optional[Sequence[str]] = None,
    ):
        super().__init__()
        hidden_sizes = [int(s) for s in hidden_sizes]
        input_shape = tuple(int(s) for s in input_shape)
        self.save_hyperparameters(
            {
                "input_shape": input_shape,
                "num_classes": num_classes,
                "hidden_sizes": hidden_sizes,
                "activation": activation,
                "dropout": dropout,
                "batch_norm": batch_norm,
                "loss": loss,
                "class_names": list(class_names) if class_names else None,
            },
            logger=False,
        )
        self.net = build_mlp(
            math.prod(input_shape), hidden_sizes, num_classes, activation, dropout, batch_norm
        )
        self.loss_kind = loss
        self.optimizer_factory = optimizer or torch.optim.SGD
        self.predictions: dict[str, Predictions] = {}
        self.val_acc_best = 0.0
        self._train_sums = torch.zeros(3)  # loss * n, correct, n
        self._outputs: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __setattr__(self, name: str, value) -> None:
        # Lightning sets _current_fx_name around every hook it calls, some 40 times a step;
        # nn.Module.__setattr__ checks each value against parameters, buffers and modules,
        # which at batch 32 costs a tenth of the step. A plain string needs none of that.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def class_names(self) -> list[str]:
        return self.hparams.class_names or [str(k) for k in range(self.hparams.num_classes)]

    @property
    def layer_widths(self) -> list[int]:
        """Input features, hidden widths, classes: the network's size in one list."""
        hp = self.hparams
        return [math.prod(hp.input_shape), *hp.hidden_sizes, hp.num_classes]

    @property
    def first_layer(self) -> nn.Linear:
        return self.net[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(params=self.parameters())

    # -- training ----------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        self._train_sums = torch.zeros(3, device=self.device)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        x, y = batch
        logits = self(x)
        loss = classification_loss(self.loss_kind, logits, y)
        with torch.no_grad():
            self._train_sums[0] += loss * len(y)
            self._train_sums[1] += (logits.argmax(dim=1) == y).sum()
            self._train_sums[2] += len(y)
        return loss

    # Lightning reads training_step's signature at every step (does it take batch_idx?);
    # inspect answers from __signature__ when it is set, in a third of the time (~20 us).
    training_step.__signature__ = inspect.signature(training_step)

    def on_train_epoch_end(self) -> None:
        loss_sum, correct, n = self._train_sums.tolist()
        self.log_dict({"train/loss": loss_sum / n, "train/acc": correct / n}, prog_bar=True)

    # -- validation and test -----------------------------------------------------------

    def _collect(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        self._outputs.append((self(x), y))

    def _finish(self, stage: str) -> Predictions:
        logits = torch.cat([logits for logits, _ in self._outputs])
        targets = torch.cat([y for _, y in self._outputs])
        self._outputs = []
        loss = classification_loss(self.loss_kind, logits, targets).item()
        preds = Predictions(logits.softmax(dim=1), targets)
        self.predictions[stage] = preds
        self.log_dict({f"{stage}/loss": loss, f"{stage}/acc": preds.accuracy}, prog_bar=True)
        return preds

    def on_validation_epoch_start(self) -> None:
        self._outputs = []

    def validation_step(self, batch, batch_idx: int) -> None:
        self._collect(batch)

    def on_validation_epoch_end(self) -> None:
        preds = self._finish("val")
        if not self.trainer.sanity_checking:
            self.val_acc_best = max(self.val_acc_best, preds.accuracy)
            self.log("val/acc_best", self.val_acc_best)

    def on_test_epoch_start(self) -> None:
        self._outputs = []

    def test_step(self, batch, batch_idx: int) -> None:
        self._collect(batch)

    def on_test_epoch_end(self) -> None:
        self._finish("test")

    # -- evaluation outside the Trainer ------------------------------------------------

    @torch.no_grad()
    def predict_logits(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Logits (N, K) of the current weights for images ``x`` (as stored: uint8 or float
        in [0, 1]), in eval mode, one batched pass; the result lives on the model's device.
        Each batch is scaled to float on the device, so no float copy of ``x`` is made."""
        was_training = self.training
        self.eval()
        logits = torch.cat(
            [
                self(as_float(x[i : i + batch_size].to(self.device)))
                for i in range(0, len(x), batch_size)
            ]
        )
        self.train(was_training)
        return logits

    def evaluate(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024
    ) -> tuple[float, float]:
        """(loss, accuracy) of the current weights on images ``x`` (as stored) with labels
        ``y``."""
        logits = self.predict_logits(x, batch_size)
        y = y.to(logits.device)
        loss = classification_loss(self.loss_kind, logits, y).item()
        acc = (logits.argmax(dim=1) == y).float().mean().item()
        return loss, acc


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
