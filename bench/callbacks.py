"""What callbacks cost per training step, and what joining them in one CallbackGroup saves.

Lightning calls each of its hooks on every callback in the Trainer, six of them at every
training step, whether the callback overrides the hook or not. This trains the plainest
LightningModule (bench/epoch.py's) for one epoch with no callbacks, with ``--callbacks``
callbacks that act only at the end of the fit (as the figure callbacks do), and with the same
callbacks joined by denselab.training.callback_group, and prints each path's seconds and
its cost per step against none.

    python bench/callbacks.py [--callbacks 6] [--batch-size 32] [--repeats 5] [--images 48000]
"""

from __future__ import annotations

import argparse
import logging
import time
import warnings

import pytorch_lightning as pl
import torch
from epoch import PlainModule, SyntheticMNIST, compose_config
from hydra.utils import instantiate

from denselab.training.callback_group import joined_by_kind


class AtFitEnd(pl.Callback):
    """A callback that acts once, when the fit ends: every other hook is Lightning's no-op."""

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass


def epoch_seconds(cfg, datamodule, callbacks) -> float:
    trainer = instantiate(cfg.trainer, logger=False, callbacks=callbacks)
    start = time.perf_counter()
    trainer.fit(PlainModule(cfg), datamodule=datamodule)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callbacks", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="best of N epochs per path")
    parser.add_argument("--images", type=int, default=48_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore")

    cfg = compose_config(args.batch_size)
    data = SyntheticMNIST(
        images=args.images, dir="unused", val_fraction=0.2, batch_size=args.batch_size, seed=0
    )
    data.setup()
    steps = len(data.train_dataloader())
    paths = {
        "none": lambda: [],
        f"{args.callbacks} apart": lambda: [AtFitEnd() for _ in range(args.callbacks)],
        f"{args.callbacks} joined": lambda: joined_by_kind(
            [AtFitEnd() for _ in range(args.callbacks)], AtFitEnd
        ),
    }
    best = {name: float("inf") for name in paths}
    for _ in range(args.repeats):  # alternate the paths: drift in load hits all alike
        for name, make in paths.items():
            best[name] = min(best[name], epoch_seconds(cfg, data, make()))
    print(f"batch {args.batch_size}, {steps:,} steps, best of {args.repeats} epochs")
    print(f"{'callbacks':>12} {'epoch s':>8} {'us/step':>8} {'us/step/callback':>17}")
    for name, seconds in best.items():
        extra = 1e6 * (seconds - best["none"]) / steps
        per = extra / args.callbacks if name != "none" else 0.0
        print(f"{name:>12} {seconds:>8.2f} {extra:>8.1f} {per:>17.1f}")


if __name__ == "__main__":
    main()
