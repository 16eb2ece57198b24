"""A run's checkpoints: written whole or not at all, at the end of each epoch, owned by a run.

``last.ckpt`` is what a resumed run continues from (``denselab-train resume=<run id>``), so:

- it is written to a temporary file and renamed over the old one: a kill during the write
  leaves the previous epoch's checkpoint, never half a file;
- it is written at the very end of the epoch, after the epoch's metrics reached the run: a
  run killed between the two resumes into a metric history with no gap (the logger drops
  points it already has, so the epoch trained again adds no duplicates either);
- it records its run id and the global torch RNG state (dropout); the data order lives in
  the DataModule's state, which Lightning saves beside it;
- a copy goes to the run (artifact ``resume/last.ckpt``) each epoch, for resuming where the
  local folder is gone: another machine, a wiped scratch disk. An epoch-end copy, rather than
  one at kill time, also covers SIGKILL and lost machines, which give no time for uploads.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Optional

import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import MLFlowLogger

from denselab.errors import RunStopped
from denselab.training.checkpoint_files import RESUME_ARTIFACT_DIR, STATE_KEY


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file beside the target, then an atomic rename over it."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Optional[Any] = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except Exception as err:
            # A stop signal raised inside torch.save's zip writer surfaces as the writer's
            # own error ("unexpected pos ..."): the stop it hides is what happened.
            stop = _stop_behind(err)
            if stop is not None:
                raise stop from None
            raise
        finally:
            tmp.unlink(missing_ok=True)


def _stop_behind(err: BaseException) -> Optional[RunStopped]:
    seen = err.__context__
    while seen is not None:
        if isinstance(seen, RunStopped):
            return seen
        seen = seen.__context__
    return None


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint that saves at the end of each training epoch (after validation) and
    keeps ``last.ckpt``; it records its folder on the run (tag ``checkpoint_dir``), logs the
    epoch's metrics before saving, and copies ``last.ckpt`` to the run when ``upload_last``.

    Takes ModelCheckpoint's arguments; ``save_on_train_epoch_end`` is always on: Lightning
    resumes from such a checkpoint at the next epoch, with nothing of the old one repeated.
    """

    def __init__(self, upload_last: bool = True, **kwargs: Any):
        kwargs["save_on_train_epoch_end"] = True
        kwargs.setdefault("save_last", True)
        super().__init__(**kwargs)
        self.upload_last = upload_last

    @functools.cached_property
    def state_key(self) -> str:
        # Lightning reads it at every callback hook it calls, six times a step, and
        # ModelCheckpoint builds it anew each time from settings fixed at __init__.
        return super().state_key

    def single_step_reason(self) -> Optional[str]:
        """Why checkpoints need Lightning to see every optimizer step (chunking.py); None
        when they are saved at epoch ends only."""
        if self._every_n_train_steps >= 1:
            return "checkpoint.every_n_train_steps counts steps"
        if self._train_time_interval is not None:
            return "checkpoint.train_time_interval is checked at every step"
        return None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        # Saving every N steps or every so often is off unless asked for: then there is
        # nothing to decide at each step, and this hook runs at every one.
        if self._every_n_train_steps >= 1 or self._train_time_interval is not None:
            super().on_train_batch_end(trainer, pl_module, *args)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        logger = trainer.logger
        if stage == "fit" and isinstance(logger, MLFlowLogger) and self.dirpath:
            logger.experiment.set_tag(
                logger.run_id, "checkpoint_dir", str(Path(self.dirpath).resolve())
            )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        logger = trainer.logger
        if getattr(logger, "drops_repeated_points", False):
            # Lightning logs the train metrics only after this hook: send them now, so the
            # checkpoint never gets ahead of the run's history (the logger skips the repeat).
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
            logger.log_metrics(metrics, step=trainer.current_epoch)
        super().on_train_epoch_end(trainer, pl_module)
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            # Lightning 2.6 writes last.ckpt only in an epoch that also saved a best one: once
            # val/acc stops improving, last.ckpt would stay at the best epoch, and a stopped
            # run would train every epoch since again. Resume needs every epoch's end.
            if not trainer.sanity_checking and not trainer.fast_dev_run:
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        if self.upload_last and isinstance(logger, MLFlowLogger) and self.last_model_path:
            if Path(self.last_model_path).is_file():
                logger.experiment.log_artifact(
                    logger.run_id, self.last_model_path, RESUME_ARTIFACT_DIR
                )

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        logger = trainer.logger
        checkpoint[STATE_KEY] = {
            "run_id": logger.run_id if isinstance(logger, MLFlowLogger) else None,
            "torch_rng_state": torch.get_rng_state(),
        }

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        state = checkpoint.get(STATE_KEY) or {}
        if state.get("torch_rng_state") is not None:
            torch.set_rng_state(state["torch_rng_state"])
