"""Seconds per training epoch: denselab's Trainer path against a hand-written torch loop.

Every path trains the course's 784-128-10 network with SGD (lr 0.01, momentum 0.9,
nesterov) on the same in-memory tensors (48,000 MNIST-shaped images: the course's training
split), in this one process, and the script prints each one's ratio to the hand-written
loop (medians of alternating repeats):

- denselab as a run trains (``steps_per_batch=auto``: several optimizer steps per Lightning
  batch, see denselab/training/chunking.py). Goal (issue 24): <= 1.10x at batch 32 and 128;
- denselab with one step per Lightning batch (``steps_per_batch=1``), what it did before;
- the plainest LightningModule on the same batches: Lightning's own floor at one step per
  batch.

    python bench/epoch.py [--batch-sizes 32 128] [--repeats 5] [--images 48000] [--threads 1]
                          [--clock wall|cpu] [--steps-per-batch auto]

``--clock cpu`` times the process's CPU seconds instead of wall seconds: with one thread
they are the same on an idle machine, and on a shared one other processes do not count.
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings
from typing import Callable

import numpy as np
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from denselab.config import register_schemas
from denselab.data.base import ImageDataModule
from denselab.training.chunking import StepsPerBatch
from denselab.training.network import build_mlp

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
clock = CLOCKS["wall"]


class SyntheticMNIST(ImageDataModule):
    """MNIST-shaped random images: the timing does not depend on what the pixels show."""

    class_names = tuple(str(d) for d in range(10))

    def __init__(self, images: int, **kwargs):
        super().__init__(**kwargs)
        self.images = images

    def load_arrays(self):
        rng = np.random.default_rng(0)
        n = int(self.images / (1 - self.val_fraction))
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n)
        return x, y, x[:100], y[:100]


def compose_config(batch_size: int):
    register_schemas()
    with initialize_config_module(config_module="denselab.conf", version_base="1.3"):
        return compose(
            "config",
            overrides=[
                f"data.batch_size={batch_size}",
                "trainer.max_epochs=1",
                "trainer.enable_progress_bar=false",
                "+trainer.limit_val_batches=0",
                "+trainer.enable_checkpointing=false",
                "+trainer.enable_model_summary=false",
            ],
        )


def denselab_epoch(cfg, datamodule: ImageDataModule, steps_per_batch="auto") -> float:
    """One epoch through the same Trainer and module a denselab run uses."""
    model = instantiate(
        cfg.model,
        input_shape=datamodule.input_shape,
        num_classes=datamodule.num_classes,
        optimizer=instantiate(cfg.optimizer),
    )
    return timed_fit(cfg, model, datamodule, [StepsPerBatch(steps_per_batch)])


def timed_fit(cfg, model: pl.LightningModule, datamodule: ImageDataModule, callbacks=()) -> float:
    """Seconds of one ``fit`` (one epoch) through the Trainer the config makes."""
    trainer = instantiate(cfg.trainer, logger=False, callbacks=list(callbacks))
    start = clock()
    trainer.fit(model, datamodule=datamodule)
    return clock() - start


class PlainModule(pl.LightningModule):
    """Lightning's floor: the plainest LightningModule doing the same step (loss only), on
    the same batches. denselab's time minus this one is what denselab itself adds."""

    def __init__(self, cfg):
        super().__init__()
        self.net = build_mlp(784, list(cfg.model.hidden_sizes), 10)
        self.optimizer = instantiate(cfg.optimizer)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return self.optimizer(params=self.parameters())


def lightning_epoch(cfg, datamodule: ImageDataModule) -> float:
    return timed_fit(cfg, PlainModule(cfg), datamodule)


def handwritten_epoch(cfg, datamodule: ImageDataModule) -> float:
    """The reference: the plainest torch loop doing the same work, the epoch's training loss
    and accuracy included, over the same tensors."""
    split = datamodule.splits["train"]
    net = build_mlp(784, list(cfg.model.hidden_sizes), 10)
    opt = instantiate(cfg.optimizer)(params=net.parameters())
    generator = torch.Generator().manual_seed(0)
    start = clock()
    sums = torch.zeros(3)
    for idx in torch.randperm(len(split), generator=generator).split(cfg.data.batch_size):
        x, y = split.images(idx), split.y[idx]
        logits = net(x)
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            sums[0] += loss * len(y)
            sums[1] += (logits.argmax(dim=1) == y).sum()
            sums[2] += len(y)
    (sums[:2] / sums[2]).tolist()  # the epoch's loss and accuracy, read as denselab logs them
    return clock() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--repeats", type=int, default=5, help="median of N epochs per path")
    parser.add_argument("--images", type=int, default=48_000)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 keeps the timing steady on a small shared machine",
    )
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    parser.add_argument(
        "--steps-per-batch", default="auto", help="denselab's setting: auto or a count"
    )
    args = parser.parse_args()
    global clock
    clock = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")
    setting = args.steps_per_batch if args.steps_per_batch == "auto" else int(args.steps_per_batch)

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images:,} images, "
        f"{args.clock} clock, medians of {args.repeats}"
    )
    print(
        f"{'batch':>6} {'k':>3} {'handwritten s':>14} {'denselab s':>11} {'ratio':>6} {'goal':>6} "
        f"{'k=1 s':>7} {'ratio':>6} {'plain Lightning s':>18} {'ratio':>6}"
    )
    goal = 1.10
    for batch_size in args.batch_sizes:
        cfg = compose_config(batch_size)
        datamodule = SyntheticMNIST(
            images=args.images, dir="unused", val_fraction=0.2, batch_size=batch_size, seed=0
        )
        datamodule.setup()
        # Alternate the paths so drift in machine load hits them alike.
        hand, dense, single, plain = [], [], [], []
        for _ in range(args.repeats):
            hand.append(handwritten_epoch(cfg, datamodule))
            dense.append(denselab_epoch(cfg, datamodule, setting))
            single.append(denselab_epoch(cfg, datamodule, 1))
            plain.append(lightning_epoch(cfg, datamodule))
        h, d, one, p = (float(np.median(t)) for t in (hand, dense, single, plain))
        k = chosen_steps_per_batch(cfg, datamodule, setting)
        mark = "ok" if d / h <= goal else "MISS"
        print(
            f"{batch_size:>6} {k:>3} {h:>14.2f} {d:>11.2f} {d / h:>6.2f} {goal:>6.2f} "
            f"{one:>7.2f} {one / h:>6.2f} {p:>18.2f} {p / h:>6.2f} {mark}"
        )


def chosen_steps_per_batch(cfg, datamodule: ImageDataModule, setting) -> int:
    """The k a run with ``setting`` trains with here: what the chunked path timed."""
    chooser = StepsPerBatch(setting)
    model = instantiate(
        cfg.model, input_shape=datamodule.input_shape, num_classes=datamodule.num_classes
    )
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[chooser], max_epochs=0)
    trainer.fit(model, datamodule=datamodule)
    return chooser.chosen


if __name__ == "__main__":
    main()
