"""Peak resident memory of a one-epoch image_table run, against the images it holds.

Writes image tables of random 64x64x3 uint8 images (metadata.csv + images.npy) into a
temporary folder, runs the real console script on each in a fresh process (all figures on,
one epoch), and reads each process's peak resident set size from the kernel. The fixed cost
is a run on a tiny table of the same image shape; the slope is the extra peak per extra
byte of images between the two large sizes. Goals (issue 12): slope <= 1.5, the 30k run at
most fixed + 1.5x its image bytes and under 1.25 GB.

    python bench/memory.py [--sizes 30000 60000] [--side 64] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

SLOPE_GOAL = 1.5
PEAK_GOAL_BYTES = 1.25e9
TINY_TABLE = 500


def write_table(folder: Path, n: int, side: int, classes: int = 10) -> int:
    """metadata.csv + images.npy of ``n`` random images; returns the array's bytes. The
    array is written through a memory map, a chunk at a time: this process stays small."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(n)
    images = np.lib.format.open_memmap(
        folder / "images.npy", mode="w+", dtype=np.uint8, shape=(n, side, side, 3)
    )
    for start in range(0, n, 4096):
        stop = min(n, start + 4096)
        images[start:stop] = rng.integers(0, 256, (stop - start, side, side, 3), dtype=np.uint8)
    images.flush()
    nbytes = images.nbytes
    del images
    labels = rng.integers(1, classes + 1, n)
    pd.DataFrame(
        {
            "obs_id": [f"img{i:06d}" for i in range(n)],
            "train_id": np.where(np.arange(n) % 5 == 0, "valid", "train"),
            "class": labels,
        }
    ).to_csv(folder / "metadata.csv", index=False)
    return nbytes


def peak_rss(args: list[str], cwd: Path, log: Path) -> tuple[int, float]:
    """(peak resident bytes, seconds) of one ``denselab-train`` process; output to ``log``."""
    script = Path(sys.executable).parent / "denselab-train"
    start = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(script), *args], cwd=cwd, stdout=out, stderr=out)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"denselab-train {' '.join(args)} failed; see {log}")
    return usage.ru_maxrss * 1024, seconds  # Linux reports kilobytes


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[30_000, 60_000])
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--keep", type=Path, help="write the tables and runs here")
    args = parser.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="denselab-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    store = f"tracking.uri=sqlite:///{work / 'mlruns' / 'mlflow.db'}"
    common = ["trainer.max_epochs=1", "trainer.enable_progress_bar=false", store]

    def run(name: str, overrides: list[str]) -> tuple[int, float]:
        overrides = [*overrides, *common, f"hydra.run.dir={work / 'out' / name}"]
        return peak_rss(overrides, work, work / f"{name}.log")

    digits, digits_s = run("digits", ["data=digits"])
    print(f"empty digits run: peak {gb(digits)} ({digits_s:.1f} s)")
    rows = []
    for n in (TINY_TABLE, *args.sizes):
        folder = work / f"table{n}"
        nbytes = write_table(folder, n, args.side)
        rss, seconds = run(f"table{n}", ["data=image_table", f"data.dir={folder}"])
        rows.append((n, nbytes, rss, seconds))

    (_, _, fixed, _), small, large = rows
    print(f"fixed cost (image_table run of {TINY_TABLE} images): peak {gb(fixed)}")
    print(
        f"{'images':>8} {'image bytes':>12} {'peak':>9} {'peak - fixed':>13} {'x images':>9} "
        f"{'s':>6}"
    )
    for n, nbytes, rss, seconds in rows[1:]:
        extra = rss - fixed
        print(
            f"{n:>8,} {gb(nbytes):>12} {gb(rss):>9} {gb(extra):>13} "
            f"{extra / nbytes:>9.2f} {seconds:>6.1f}"
        )
    slope = (large[2] - small[2]) / (large[1] - small[1])
    print(
        f"slope {slope:.2f} bytes of peak per image byte (goal <= {SLOPE_GOAL}): "
        f"{'ok' if slope <= SLOPE_GOAL else 'MISS'}"
    )
    within = small[2] <= fixed + SLOPE_GOAL * small[1]
    print(
        f"{small[0]:,} images: peak {gb(small[2])}, goal < {gb(PEAK_GOAL_BYTES)} and <= fixed + "
        f"{SLOPE_GOAL}x images ({gb(fixed + SLOPE_GOAL * small[1])}): "
        f"{'ok' if small[2] < PEAK_GOAL_BYTES and within else 'MISS'}"
    )


if __name__ == "__main__":
    main()
