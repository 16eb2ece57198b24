"""Seconds a run spends drawing and logging figures, against its fit time.

Runs real trainings in-process (default: Fashion-MNIST from Debian's package, MNIST's shape
and sizes, the course's 784-128-10 network), times every hook of the figure callbacks, and
prints their sum against the fit time without them. Goal: under 10 % for the default
10-epoch run. --compare also trains with callbacks=none; --repeats N alternates N runs of
each kind and keeps the fastest, as other processes on the machine only ever add time.

    python bench/figures.py [--compare] [--repeats N] [override ...]
    python bench/figures.py --compare --repeats 2 trainer.max_epochs=10
"""

from __future__ import annotations

import argparse
import collections
import functools
import logging
import tempfile
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
from hydra import compose, initialize_config_module

import denselab.train
from denselab.config import register_schemas
from denselab.reporting import callbacks as callbacks_module
from denselab.reporting import results
from denselab.reporting.callbacks import RunCallback

HOOKS = (
    "setup",
    "on_fit_start",
    "on_train_start",
    "on_train_epoch_end",
    "on_fit_end",
    "on_test_end",
)
DEFAULTS = [
    "data=fashion_mnist",
    "data.dir=/usr/share/datasets/fashion-mnist",
    "data.mirrors=[]",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
]

seconds: dict[str, float] = collections.defaultdict(float)


def timed(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[name] += time.perf_counter() - start

    return wrapper


def instrument() -> None:
    """Time Trainer.fit and .test, and each hook of each figure callback the run creates."""
    pl.Trainer.fit = timed("fit", pl.Trainer.fit)
    pl.Trainer.test = timed("test", pl.Trainer.test)
    results.report_run = timed("report", results.report_run)
    make_callbacks = callbacks_module.instantiate_callbacks

    def instantiate_timed(cfg, *args):
        callbacks = make_callbacks(cfg, *args)
        for callback in callbacks:
            if isinstance(callback, RunCallback):
                for hook in HOOKS:
                    label = f"figures:{type(callback).__name__}.{hook}"
                    setattr(callback, hook, timed(label, getattr(callback, hook)))
        return callbacks

    callbacks_module.instantiate_callbacks = instantiate_timed


def run(overrides: list[str]) -> dict[str, float]:
    seconds.clear()
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        with initialize_config_module(config_module="denselab.conf", version_base="1.3"):
            cfg = compose("config", overrides=[*DEFAULTS, f"tracking.uri={store}", *overrides])
        denselab.train.train(cfg, Path(tmp) / "out")
    return dict(seconds)


def figure_seconds(times: dict[str, float], in_fit_only: bool = False) -> float:
    hooks = {k: v for k, v in times.items() if k.startswith("figures:")}
    return sum(v for k, v in hooks.items() if not (in_fit_only and k.endswith("on_test_end")))


def bare_fit(times: dict[str, float]) -> float:
    return times["fit"] - figure_seconds(times, in_fit_only=True)


def report(title: str, times: dict[str, float]) -> None:
    print(f"\n{title}")
    for name, value in sorted(times.items()):
        if name.startswith("figures:") and value >= 0.005:
            print(f"  {name[8:]:<40} {value:7.2f} s")
    print(
        f"  fit {times['fit']:.1f} s, test {times['test']:.1f} s, "
        f"figures {figure_seconds(times):.1f} s, report {times.get('report', 0.0):.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--compare", action="store_true", help="also train with callbacks=none")
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs of each kind; the fastest fit counts"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. trainer.max_epochs=10")
    args = parser.parse_args()
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    register_schemas()
    instrument()

    # Alternating the two kinds spreads any load from other processes over both.
    runs: dict[str, list[dict[str, float]]] = {"default": [], "none": []}
    for _ in range(args.repeats):
        runs["default"].append(run(args.overrides))
        if args.compare:
            runs["none"].append(run([*args.overrides, "callbacks=none"]))
    # Other processes on the machine only ever add time: the fastest run is the truest.
    with_figures = min(runs["default"], key=lambda t: t["fit"])
    report("With figures (callbacks=default), fastest run", with_figures)
    if args.compare:
        report(
            "Without figures (callbacks=none), fastest run",
            min(runs["none"], key=lambda t: t["fit"]),
        )
    fit = min(bare_fit(t) for kind in runs.values() for t in kind)
    spent = figure_seconds(with_figures)
    print(
        f"\nfigures: {spent:.1f} s = {spent / fit:.1%} of the fit time without them ({fit:.1f} s)"
    )
    print(
        "fit seconds of each run:",
        {kind: [round(t["fit"], 1) for t in ts] for kind, ts in runs.items() if ts},
    )


if __name__ == "__main__":
    main()
