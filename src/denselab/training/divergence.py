"""Stop a run whose training loss diverged, naming the step it happened at."""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

import pytorch_lightning as pl
import torch

from denselab.errors import LossDiverged

# Steps between two reads of the loss on an accelerator: a sync every 64 steps costs
# nothing measurable, and a diverged run trains at most 63 steps of noise.
ACCELERATOR_EVERY = 64


class DivergenceGuard(pl.Callback):
    """Stop training at the first step whose loss is nan or infinite, or more than
    ``max_growth`` times the loss of the run's first step.

    A diverged network only produces noise from then on, and its checkpoints would be
    worthless: stopping keeps ``last.ckpt`` of the last sound epoch. A huge learning
    rate need not reach nan: cross-entropy then sits at ~1e6, where no sound run ever goes
    (it starts near ln(classes) and falls).

    Reading a loss on the host costs nothing on the CPU, so there every step is checked as
    it ends. On an accelerator it is a device sync, which would stall the step pipeline:
    there the losses are kept on the device and read ``check_every`` steps at a time, and at
    each epoch's last batch, before the epoch's checkpoint. The sentence still names the
    step the loss diverged at; training stops up to ``check_every`` - 1 steps later. So it
    does where a Lightning batch holds several steps (denselab.training.chunking): their
    losses are judged in order when the batch ends, and the first bad one is named.
    """

    def __init__(self, max_growth: float = 1000.0, check_every: Optional[int] = None):
        self.max_growth = max_growth
        self.check_every = check_every  # None: every step on the CPU, else ACCELERATOR_EVERY
        self.first_loss: float | None = None
        # (losses on their device, epoch, global step of the first) of the steps not read yet
        self._pending: list[tuple[torch.Tensor, int, int]] = []
        self._pending_steps = 0

    def single_step_reason(self) -> None:
        """Judges several steps' losses at once: Lightning batches of several steps are fine."""
        return None

    # Kept in the checkpoint: a resumed fit's first step is a trained network's, whose loss
    # on one batch can be ~1e-3, and an ordinary later batch 1000 times that.
    def state_dict(self) -> dict[str, Any]:
        return {"first_loss": self.first_loss}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.first_loss = state_dict.get("first_loss", self.first_loss)

    def _every(self, loss: torch.Tensor) -> int:
        if self.check_every is not None:
            return max(1, int(self.check_every))
        return 1 if loss.device.type == "cpu" else ACCELERATOR_EVERY

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # A batch of several optimizer steps (denselab.training.chunking) gives one loss per
        # step, in order; trainer.global_step is the last one's step.
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if not isinstance(loss, torch.Tensor):
            return
        epoch, step = (trainer.current_epoch, trainer.global_step) if trainer else (0, 0)
        if self._every(loss) == 1:  # the CPU: read it now, at no cost (this hook runs every batch)
            if loss.dim() == 0:
                self._judge(float(loss.detach()), trainer)
                return
            values = loss.detach().tolist()
            first = step - len(values) + 1
            for i, value in enumerate(values):
                self._judge(value, trainer, epoch, first + i)
            return
        losses = loss.detach().reshape(-1)
        self._pending.append((losses, epoch, step - len(losses) + 1))
        self._pending_steps += len(losses)
        last_batch = bool(trainer) and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if self._pending_steps >= self._every(loss) or last_batch:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._check(trainer)  # an epoch cut short (limit_train_batches) has no last batch

    def _check(self, trainer: Optional[pl.Trainer]) -> None:
        if not self._pending:
            return
        pending, self._pending, self._pending_steps = self._pending, [], 0
        values = torch.cat([losses for losses, _, _ in pending]).float().cpu().tolist()  # one sync
        steps = [(epoch, first + i) for losses, epoch, first in pending for i in range(len(losses))]
        for value, (epoch, step) in zip(values, steps):
            self._judge(value, trainer, epoch, step)

    def _judge(
        self,
        value: float,
        trainer: Optional[pl.Trainer],
        epoch: Optional[int] = None,
        step: Optional[int] = None,
    ) -> None:
        """Raise LossDiverged if ``value``, the loss of (``epoch``, ``step``; by default the
        trainer's current ones), is not finite or has grown too far."""
        if self.first_loss is None and math.isfinite(value):
            self.first_loss = value
        if math.isfinite(value) and value <= self.max_growth * max(self.first_loss, 1e-12):
            return
        if epoch is None:
            epoch, step = (trainer.current_epoch, trainer.global_step) if trainer else (0, 0)
        raise LossDiverged(self._sentence(trainer, value, epoch, step))

    def _sentence(self, trainer: Optional[pl.Trainer], value: float, epoch: int, step: int) -> str:
        optimizers = trainer.optimizers if trainer else []
        lr = optimizers[0].param_groups[0]["lr"] if optimizers else float("nan")
        grown = (
            f", over {self.max_growth:g} times its first value ({self.first_loss:.3g})"
            if math.isfinite(value)
            else ""
        )
        return (
            f"The training loss became {value:.3g} at epoch {epoch}, step {step}{grown} "
            f"(optimizer.lr={lr:g}): lower the learning rate."
        )
