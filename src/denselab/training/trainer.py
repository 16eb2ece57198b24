"""The pieces of one training, built from the run's config: the datamodule with its splits
loaded, the network with its optimizer, the Trainer with its callbacks; and the test on the
best weights."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Sequence

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from denselab.data.base import ImageDataModule
from denselab.training.checkpoint_files import load_checkpoint
from denselab.training.checkpoints import AtomicCheckpointIO, RunCheckpoint
from denselab.training.chunking import StepsPerBatch
from denselab.training.console import progress_bars, quiet_third_party_notices
from denselab.training.divergence import DivergenceGuard
from denselab.training.module import MLPClassifier

log = logging.getLogger("denselab")


def load_data(cfg: DictConfig) -> ImageDataModule:
    """The datamodule of ``cfg.data``, with its splits loaded."""
    data = instantiate(cfg.data)
    data.prepare_data()
    data.setup()
    log.info(data.describe())
    return data


def build_model(cfg: DictConfig, data: ImageDataModule) -> MLPClassifier:
    """The network of ``cfg.model`` for the data's shape and classes, with its optimizer."""
    return instantiate(
        cfg.model,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        class_names=list(data.class_names),
        optimizer=instantiate(cfg.optimizer),
    )


def build_checkpoint(cfg: DictConfig, folder: Path) -> RunCheckpoint:
    """The checkpoint callback of ``cfg.checkpoint``, writing to ``folder``."""
    return instantiate(cfg.checkpoint, dirpath=str(folder))


def build_trainer(
    cfg: DictConfig,
    logger: pl.loggers.Logger,
    checkpoint: RunCheckpoint,
    callbacks: Sequence[pl.Callback],
    output_dir: Path,
) -> pl.Trainer:
    """The Trainer of ``cfg.trainer``, writing to ``logger``: the checkpoint first, then the
    steps per batch, the divergence guard, the progress display and ``callbacks``."""
    return instantiate(
        cfg.trainer,
        logger=logger,
        callbacks=[
            checkpoint,
            StepsPerBatch(cfg.steps_per_batch),
            DivergenceGuard(),
            *progress_bars(cfg.trainer.enable_progress_bar),
            *callbacks,
        ],
        default_root_dir=str(output_dir),
        plugins=[AtomicCheckpointIO()],
    )


def evaluate_best(
    trainer: pl.Trainer, model: MLPClassifier, data: ImageDataModule, checkpoint: RunCheckpoint
) -> None:
    """Test the best checkpoint; where every test label is hidden there is nothing to score,
    but the run still reports on the best weights: load them."""
    if "test" in data.splits:
        trainer.test(model, datamodule=data, ckpt_path="best", verbose=False)
    else:
        restore_weights(model, checkpoint.best_model_path)


def restore_weights(model: MLPClassifier, checkpoint_path: str) -> None:
    """Load a checkpoint's weights into ``model``, as ``trainer.test(ckpt_path=...)`` does."""
    if checkpoint_path:
        model.load_state_dict(load_checkpoint(checkpoint_path, model.device)["state_dict"])


def quiet_irrelevant_warnings() -> None:
    """Lightning's and torch's warnings that say nothing a user of denselab can act on."""
    quiet_third_party_notices()
    # denselab logs metrics once per epoch, so Lightning's step-logging interval is unused
    # and its warning about small datasets would only confuse.
    warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
    # Lightning 2.6 calling torch's own deprecated pytree API: nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated")
    # On a machine with SLURM's tools installed, Lightning asks every run outside SLURM to
    # prepend `srun`: denselab runs one process per job, and its SLURM jobs come from
    # hydra/launcher=slurm, which starts them through srun already.
    warnings.filterwarnings("ignore", message=".*The `srun` command is available.*")
