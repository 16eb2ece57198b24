"""Stop a run whose training loss diverged, at the step it happens."""

from __future__ import annotations

import math
from typing import Any, Mapping

import pytorch_lightning as pl
import torch

from denselab.errors import DenselabError


class LossDiverged(DenselabError):
    """The training loss became nan or infinite."""


class DivergenceGuard(pl.Callback):
    """Stop training at the first step whose loss is nan or infinite, or more than
    ``max_growth`` times the loss of the run's first step.

    A diverged network only produces noise from then on, and its checkpoints would be
    worthless: stopping at once keeps ``last.ckpt`` of the last sound epoch. A huge learning
    rate need not reach nan: cross-entropy then sits at ~1e6, where no sound run ever goes
    (it starts near ln(classes) and falls). Reading the loss costs one device sync per step,
    which a dense network on a GPU barely notices.
    """

    def __init__(self, max_growth: float = 1000.0):
        self.max_growth = max_growth
        self.first_loss: float | None = None

    # Kept in the checkpoint: a resumed fit's first step is a trained network's, whose loss
    # on one batch can be ~1e-3, and an ordinary later batch 1000 times that.
    def state_dict(self) -> dict[str, Any]:
        return {"first_loss": self.first_loss}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.first_loss = state_dict.get("first_loss", self.first_loss)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        value = float(loss.detach())
        if self.first_loss is None and math.isfinite(value):
            self.first_loss = value
        if math.isfinite(value) and value <= self.max_growth * max(self.first_loss, 1e-12):
            return
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else float("nan")
        grown = (
            f", over {self.max_growth:g} times its first value ({self.first_loss:.3g})"
            if math.isfinite(value)
            else ""
        )
        raise LossDiverged(
            f"The training loss became {value:.3g} at epoch {trainer.current_epoch}, step "
            f"{trainer.global_step}{grown} (optimizer.lr={lr:g}): lower the learning rate."
        )
