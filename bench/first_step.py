"""Where the seconds go from the command to the first training step of a run.

Starts ``denselab-train`` in fresh processes (as a user's command does) with probes that
stamp the time at each stage: Python itself, importing the entry point, composing the
config, the imports a run needs (one line each, in import order), the MLflow store and run,
the data, the model, the Trainer, and the fit up to the first ``training_step``. The
process stops there. The first process creates the store (cold); the others find it
(cached), as a user's second run does; the table shows the fastest of those.

    python bench/first_step.py [--runs 3] [override ...]    # default: data=fashion_mnist

Fashion-MNIST is the default because Debian's dataset-fashion-mnist puts it on disk with no
download; pass data=mnist once MNIST is cached in data/mnist.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The modules a run imports when train() starts, in its order, so their cost shows one by
# one (a module this version lacks is skipped).
RUN_IMPORTS = (
    "torch",
    "pytorch_lightning",
    "denselab.training.console",
    "denselab.reporting.evaluation",
    "denselab.training.devices",
    "denselab.tracking.runs",
    "denselab.tracking.logger",
    "denselab.reporting.callbacks",
    "denselab.reporting.artifacts",
)
STOP = 3  # exit code of a probe that reached the first step


def probe(launched: float, out: Path, argv: list[str]) -> None:
    """Runs in the child: stamps the stages into ``out`` and exits at the first step."""
    stamps: list[tuple[str, float]] = [("python started", time.time())]

    def mark(name: str) -> None:
        stamps.append((name, time.time()))

    def stop() -> None:
        out.write_text(json.dumps({"launched": launched, "stamps": stamps}))
        os._exit(STOP)  # the rest of the run is not what this measures

    import denselab.train as entry

    mark("import denselab.train (Hydra, OmegaConf)")
    real_train = entry.train

    def train(cfg, output_dir, overrides=()):
        mark("compose the config")
        import importlib.util

        for name in RUN_IMPORTS:
            if importlib.util.find_spec(name) is not None:
                importlib.import_module(name)
                mark(f"import {name}")
        instrument(mark, stop)
        return real_train(cfg, output_dir, overrides)

    entry.train = train
    sys.argv = ["denselab-train", *argv]
    entry.main()


def instrument(mark, stop) -> None:
    """Stamp the end of each stage of train() by wrapping what starts the next one."""
    import pytorch_lightning as pl

    import denselab.tracking.runs as tracking
    import denselab.training.threads as threads
    from denselab.data.base import ImageDataModule
    from denselab.training.module import MLPClassifier

    seen: set[str] = set()

    def once(label: str) -> None:  # Lightning calls setup again inside fit: not a stage
        if label not in seen:
            seen.add(label)
            mark(label)

    def after(obj, name: str, label: str) -> None:
        real = getattr(obj, name)

        def wrapped(*args, **kwargs):
            result = real(*args, **kwargs)
            once(label)
            return result

        setattr(obj, name, wrapped)

    def before(obj, name: str, label: str) -> None:
        real = getattr(obj, name)

        def wrapped(*args, **kwargs):
            once(label)
            return real(*args, **kwargs)

        setattr(obj, name, wrapped)

    after(tracking, "start_run", "MLflow store, experiment and run")
    before(ImageDataModule, "setup", "find the data files (prepare_data)")
    after(ImageDataModule, "setup", "load the data into tensors (setup)")
    # Not MLPClassifier.__init__: Lightning reads the hyperparameters from its frame.
    before(threads, "apply_threads", "build the model")
    before(pl.Trainer, "__init__", "threads, checkpoint, figure callbacks")
    after(pl.Trainer, "__init__", "build the Trainer and callbacks")

    def first_step(self, batch, batch_idx):
        mark("params logged; fit: setup, on_train_start figures")
        stop()

    MLPClassifier.training_step = first_step


def main() -> None:
    if len(sys.argv) > 3 and sys.argv[1] == "--probe":
        probe(float(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("overrides", nargs="*", default=["data=fashion_mnist"])
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="denselab-first-step-"))
    overrides = [
        *args.overrides,
        f"tracking.uri=sqlite:///{work / 'mlruns' / 'mlflow.db'}",
        f"hydra.run.dir={work / 'out'}",
    ]
    runs = []
    for i in range(args.runs):
        out = work / f"stamps{i}.json"
        launched = time.time()
        done = subprocess.run(
            [sys.executable, __file__, "--probe", repr(launched), str(out), *overrides],
            cwd=work,
            capture_output=True,
            text=True,
        )
        if done.returncode != STOP:
            raise SystemExit(f"the run did not reach its first step:\n{done.stderr[-3000:]}")
        data = json.loads(out.read_text())
        times, last = [], data["launched"]
        for name, stamp in data["stamps"]:
            times.append((name, stamp - last))
            last = stamp
        runs.append(times)

    cold, cached = runs[0], runs[1:] or runs
    print(f"command to first training step: denselab-train {' '.join(args.overrides)}")
    print(f"{'stage':<48} {'cached s':>9} {'cold s':>7}")
    for k, (name, _) in enumerate(cold):
        best = min(run[k][1] for run in cached)
        print(f"{name:<48} {best:>9.2f} {cold[k][1]:>7.2f}")
    totals = [sum(s for _, s in run) for run in runs]
    print(f"{'total':<48} {min(totals[1:] or totals):>9.2f} {totals[0]:>7.2f}")


if __name__ == "__main__":
    main()
