"""The dense network: an MLP LightningModule that knows nothing of the dataset it sees.

Training metrics are summed in tensors during the epoch and logged once at its end, and
validation and test logits are gathered for the epoch and scored once: both are cheaper per
step than logging every batch. What the trained weights make of a split, for figures and
tables, is :mod:`denselab.reporting.evaluation`'s job, not the model's.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable, Optional, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from denselab.config import ModelSchema, default_of
from denselab.data.base import Chunk
from denselab.data.pixels import as_float
from denselab.training.chunking import count_optimizer_steps
from denselab.training.network import Architecture


def classification_loss(kind: str, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if kind == "mse":  # the course's alternative: squared error of softmax vs one-hot
        one_hot = F.one_hot(targets, logits.shape[1]).to(logits.dtype)
        return F.mse_loss(logits.softmax(dim=1), one_hot)
    return F.cross_entropy(logits, targets)


class MLPClassifier(pl.LightningModule):
    """A multi-layer perceptron classifier for images of ``input_shape``."""

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        hidden_sizes: Sequence[int] = default_of(ModelSchema, "hidden_sizes"),
        activation: str = default_of(ModelSchema, "activation"),
        dropout: float = default_of(ModelSchema, "dropout"),
        batch_norm: bool = default_of(ModelSchema, "batch_norm"),
        loss: str = default_of(ModelSchema, "loss"),
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
        architecture = Architecture(
            input_shape, num_classes, hidden_sizes, activation, dropout, batch_norm
        )
        self.net = architecture.build()
        # One image, for Lightning's model summary: each layer's input and output sizes, and
        # the FLOPs of a forward pass (without it the summary prints "Total FLOPs: 0").
        self.example_input_array = torch.zeros(1, *input_shape)
        self.loss_kind = loss
        self.optimizer_factory = optimizer or torch.optim.SGD
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
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.hparams.input_shape)

    @property
    def has_hidden_layer(self) -> bool:
        return bool(self.hparams.hidden_sizes)

    @property
    def layer_widths(self) -> list[int]:
        """Input features, hidden widths, classes: the network's size in one list."""
        hp = self.hparams
        return [math.prod(hp.input_shape), *hp.hidden_sizes, hp.num_classes]

    @property
    def first_layer(self) -> nn.Linear:
        return self.net[1]

    def first_layer_weights(self) -> np.ndarray:
        """The first Linear layer's (units, inputs) weights, as a float NumPy array."""
        return self.first_layer.weight.detach().float().cpu().numpy()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(params=self.parameters())

    # -- training ----------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        self._train_sums = torch.zeros(3, device=self.device)

    def training_step(self, batch, batch_idx: int):
        if isinstance(batch, Chunk):
            return self._train_chunk(batch)
        x, y = batch
        logits = self(x)
        loss = classification_loss(self.loss_kind, logits, y)
        self._count(loss, logits, y)
        return loss

    def _train_chunk(self, chunk: Chunk) -> dict[str, torch.Tensor]:
        """One optimizer step per mini-batch of ``chunk``, each doing what Lightning's
        automatic optimization does for a batch (forward, zero_grad, backward, step), on the
        torch optimizer itself: Lightning's per-step machinery is what chunks save. What that
        machinery would add is known to be nothing here (denselab.training.chunking decides).
        Returns the steps' losses, in order, for the divergence guard."""
        optimizer = self.trainer.optimizers[0]
        losses = []
        for x, y in chunk:
            logits = self(x)
            loss = classification_loss(self.loss_kind, logits, y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            self._count(loss, logits, y)
            losses.append(loss.detach())
        count_optimizer_steps(self.trainer, len(losses))
        return {"loss": torch.stack(losses)}

    @torch.no_grad()
    def _count(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self._train_sums[0] += loss * len(y)
        self._train_sums[1] += (logits.argmax(dim=1) == y).sum()
        self._train_sums[2] += len(y)

    # Lightning reads training_step's signature at every step (does it take batch_idx?);
    # inspect answers from __signature__ when it is set, in a third of the time (~20 us).
    training_step.__signature__ = inspect.signature(training_step)
    # It trains a Chunk too: denselab.training.chunking hands it chunks only where this is
    # the training_step that runs (a subclass's own may not know them).
    training_step.takes_chunks = True

    def on_train_epoch_end(self) -> None:
        # Over every image of the epoch: with several processes, summed over all ranks.
        sums = self.trainer.strategy.reduce(self._train_sums, reduce_op="sum")
        loss_sum, correct, n = sums.tolist()
        if n:
            metrics = {"train/loss": loss_sum / n, "train/acc": correct / n}
            self.log_dict(metrics, prog_bar=True, sync_dist=True)

    # -- validation and test -----------------------------------------------------------

    def _collect(self, batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y = batch
        self._outputs.append((self(x), y))

    def _finish(self, stage: str) -> float:
        """Log the epoch's loss and accuracy of ``stage``; returns the accuracy."""
        logits = torch.cat([logits for logits, _ in self._outputs])
        targets = torch.cat([y for _, y in self._outputs])
        self._outputs = []
        loss = classification_loss(self.loss_kind, logits, targets).item()
        accuracy = (logits.argmax(dim=1) == targets).float().mean().item()
        # Every rank scored the whole split (see TensorBatches): the values agree, and
        # sync_dist only says so to Lightning.
        metrics = {f"{stage}/loss": loss, f"{stage}/acc": accuracy}
        self.log_dict(metrics, prog_bar=True, sync_dist=True)
        return accuracy

    def on_validation_epoch_start(self) -> None:
        self._outputs = []

    def validation_step(self, batch, batch_idx: int) -> None:
        self._collect(batch)

    def on_validation_epoch_end(self) -> None:
        accuracy = self._finish("val")
        if not self.trainer.sanity_checking:
            self.val_acc_best = max(self.val_acc_best, accuracy)
            self.log("val/acc_best", self.val_acc_best, sync_dist=True)

    def on_test_epoch_start(self) -> None:
        self._outputs = []

    def test_step(self, batch, batch_idx: int) -> None:
        self._collect(batch)

    def on_test_epoch_end(self) -> None:
        self._finish("test")

    # -- checkpoints -------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # val/acc_best is a running maximum: a resumed run must go on from it, not from 0.
        checkpoint["val_acc_best"] = self.val_acc_best

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.val_acc_best = checkpoint.get("val_acc_best", 0.0)

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


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
