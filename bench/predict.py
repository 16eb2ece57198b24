"""Images per second through denselab-predict, end to end: a fresh process that loads the
model, reads the inputs, classifies them and writes the CSV, as a user runs it.

The network is the course's 784-128-10 MLP (random weights: speed does not depend on them),
saved as a denselab checkpoint. Inputs: an .npy of N MNIST-sized uint8 images (goal: at least
5,000 images/s end to end), and a folder of M PNG files written from the same images. Each is
timed --repeats times and the fastest kept (other processes only ever add time); the
command's start-up (imports, model load) is reported on its own too.

    python bench/predict.py [--images 70000] [--pngs 5000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from helpers import console_script, learnable_digits, write_checkpoint, write_pngs  # noqa: E402

GOAL = 5_000  # MNIST-sized images per second, end to end from an .npy


def timed_predict(checkpoint: Path, inputs: Path, out: Path) -> tuple[float, float]:
    """(wall seconds of the whole command, seconds it reports for reading + classifying)."""
    start = time.perf_counter()
    result = subprocess.run(
        [console_script("denselab-predict"), f"model={checkpoint}", f"inputs={inputs}",
         f"out={out}", "progress=false"],
        capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(result.stderr)
    inner = float(re.search(r"in ([\d.]+) s", result.stderr + result.stdout).group(1))
    return wall, inner


def best_of(repeats: int, *args) -> tuple[float, float]:
    runs = [timed_predict(*args) for _ in range(repeats)]
    return min(r[0] for r in runs), min(r[1] for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=70_000, help="images in the .npy")
    parser.add_argument("--pngs", type=int, default=5_000, help="PNG files in the folder")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        checkpoint = write_checkpoint(tmp / "best.ckpt", hidden_sizes=(128,))
        images, labels = learnable_digits(args.images, seed=0)
        np.save(tmp / "images.npy", images)
        write_pngs(tmp / "pngs", images[: args.pngs], labels[: args.pngs])
        np.save(tmp / "one.npy", images[:1])

        startup, _ = best_of(args.repeats, checkpoint, tmp / "one.npy", tmp / "one.csv")
        print(f"start-up (imports, model load, 1 image): {startup:.2f} s")
        rows = [
            (f"{args.images:,} images, .npy", args.images, tmp / "images.npy"),
            (f"{args.pngs:,} PNG files", args.pngs, tmp / "pngs"),
        ]
        for name, n, inputs in rows:
            wall, inner = best_of(args.repeats, checkpoint, inputs, tmp / "out.csv")
            print(
                f"{name:>24}: {n / wall:>9,.0f} images/s end to end ({wall:.2f} s), "
                f"{n / inner:>9,.0f} images/s reading + classifying ({inner:.2f} s)"
            )
            if name.endswith(".npy"):
                verdict = "meets" if n / wall >= GOAL else "misses"
                print(f"{'':>24}  {verdict} the goal of {GOAL:,} images/s end to end")


if __name__ == "__main__":
    main()
