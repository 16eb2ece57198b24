"""What a run says on the console: one line per epoch where no one watches a bar, no
third-party notices, and where to find the run at the end.

A progress bar is for a terminal. Piped into a file (a SLURM log, CI, ``tee``) it writes a
carriage-return update per step, about a megabyte for ten epochs of MNIST; there the run
writes one line per epoch instead, through the ``denselab`` logger, so Hydra's job log holds
it too.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Optional

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ProgressBar, TQDMProgressBar

log = logging.getLogger("denselab")

# Lightning's and MLflow's messages that tell a denselab user nothing: sales tips, hardware
# that is absent, and store housekeeping. Everything else of theirs still shows.
NOTICES = (
    "Tip:",
    "TPU available",
    "HPU available",
    "GPU available: False",
    "Restoring states from the checkpoint",
    "Loaded model weights from the checkpoint",
)


class _DropNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(notice in message for notice in NOTICES)


def quiet_third_party_notices() -> None:
    """Drop :data:`NOTICES` from Lightning's logs; MLflow's store set-up speaks at WARNING."""
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotices) for f in logger.filters):
            logger.addFilter(_DropNotices())
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def progress_bars(enabled: bool) -> list[ProgressBar]:
    """The Trainer's progress display (``trainer.enable_progress_bar``): Lightning's bar on a
    terminal (redrawn by the clock), one line per epoch anywhere else, nothing when off."""
    if not enabled:
        return []
    return [TimedProgressBar() if sys.stdout.isatty() else EpochLines()]


# A bar redrawn five times a second looks as live as one redrawn after every batch.
REDRAW_SECONDS = 0.2


class TimedProgressBar(TQDMProgressBar):
    """Lightning's TQDM bar, redrawn at most every ``interval`` seconds and at the end of
    each loop (so the last count and metrics always show).

    Lightning's own bar redraws and re-reads the metrics after every batch: on the course's
    run (1,500 batches of 32 an epoch, about a millisecond each) that took about a fifth of
    the training loop's time.
    """

    def __init__(self, interval: float = REDRAW_SECONDS, **kwargs):
        super().__init__(**kwargs)
        self.interval = interval
        self._next_redraw = 0.0

    def single_step_reason(self) -> None:
        """Counts mini-batches, whatever a Lightning batch holds: chunks are fine."""
        return None

    @property
    def total_train_batches(self):
        # Mini-batches, where a Lightning batch holds several (denselab.training.chunking):
        # the count a user knows from the batch size, whatever k is.
        loader = self.trainer.train_dataloader
        steps = getattr(loader, "steps", None)
        if steps is None or getattr(loader, "steps_per_batch", 1) == 1:
            return super().total_train_batches
        return steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        end = getattr(batch, "end", None)  # a chunk: the mini-batches done once it is trained
        shown = batch_idx if end is None else end - 1
        super().on_train_batch_end(trainer, pl_module, outputs, batch, shown)

    def _should_update(self, current: int, total) -> bool:
        if not self.is_enabled:
            return False
        now = time.monotonic()
        if current == total or now >= self._next_redraw:
            self._next_redraw = now + self.interval
            return True
        return False


def epoch_line(epoch: int, max_epochs: Optional[int], metrics: dict, seconds: float) -> str:
    """``epoch 2/10: loss 0.3121 acc 0.9075 | val loss 0.2950 acc 0.9132 | 4.1 s``."""

    def pair(prefix: str) -> str:
        parts = [
            f"{name} {metrics[f'{prefix}/{name}']:.4f}"
            for name in ("loss", "acc")
            if f"{prefix}/{name}" in metrics
        ]
        return " ".join(parts)

    of = f"/{max_epochs}" if max_epochs and max_epochs > 0 else ""
    sections = [f"epoch {epoch + 1}{of}: {pair('train')}".rstrip(": ")]
    if pair("val"):
        sections.append(f"val {pair('val')}")
    sections.append(f"{seconds:.1f} s")
    return " | ".join(sections)


class EpochLines(ProgressBar):
    """A progress display for logs: one line per epoch with the epoch's metrics.

    An epoch's line is written once its metrics are all in: Lightning calls callbacks'
    ``on_train_epoch_end`` before the module's, which logs the training metrics, so the line
    waits for the next epoch's start (or the end of training).
    """

    def __init__(self) -> None:
        super().__init__()
        self._enabled = True
        self._started = 0.0
        self._pending: Optional[tuple[int, float]] = None  # (epoch, seconds) not yet written

    def single_step_reason(self) -> None:
        """Writes once per epoch: Lightning batches of several steps are fine."""
        return None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer)
        self._started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._pending = (trainer.current_epoch, time.perf_counter() - self._started)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer)

    def _write(self, trainer: pl.Trainer) -> None:
        if self._pending is None:
            return
        epoch, seconds = self._pending
        self._pending = None
        if self._enabled and trainer.is_global_zero:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            log.info(epoch_line(epoch, trainer.max_epochs, metrics, seconds))
