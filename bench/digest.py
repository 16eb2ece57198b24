"""What a run's data digest costs (denselab.data.digest): the seconds to hash the splits a
run loads, against the seconds to load them, on Fashion-MNIST (Debian's package) and on an
image table of 30,000 images of 64x64x3. Goal (issue 25): small beside the load.

    python bench/digest.py [--table-size 30000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

FASHION = Path("/usr/share/datasets/fashion-mnist")


def table(folder: Path, n: int, side: int = 64) -> Path:
    rng = np.random.default_rng(0)
    images = np.lib.format.open_memmap(
        folder / "images.npy", mode="w+", dtype=np.uint8, shape=(n, side, side, 3)
    )
    for start in range(0, n, 4096):
        stop = min(n, start + 4096)
        images[start:stop] = rng.integers(0, 256, size=(stop - start, side, side, 3))
    images.flush()
    labels = rng.integers(0, 10, size=n)
    tenth = np.arange(n) % 10
    split = np.where(tenth < 8, "train", np.where(tenth < 9, "valid", "test"))
    pd.DataFrame(
        {"obs_id": [f"o{i}" for i in range(n)], "train_id": split, "class": labels}
    ).to_csv(folder / "metadata.csv", index=False)
    return folder


def measure(make, repeats: int) -> tuple[float, float, int]:
    """(best load seconds, best digest seconds, bytes hashed) of fresh datamodules."""
    loads, digests = [], []
    for _ in range(repeats):
        data = make()
        start = time.perf_counter()
        data.setup()
        loaded = time.perf_counter()
        data.content_digest()
        loads.append(loaded - start)
        digests.append(time.perf_counter() - loaded)
    size = sum(s.x.numel() * s.x.element_size() + s.y.numel() * 8 for s in data.splits.values())
    return min(loads), min(digests), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table-size", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from denselab.data.image_table import ImageTableDataModule
    from denselab.data.mnist import FashionMNISTDataModule

    rows = []
    if (FASHION / "train-images-idx3-ubyte.gz").is_file():
        rows.append(("Fashion-MNIST", *measure(
            lambda: FashionMNISTDataModule(dir=str(FASHION), mirrors=[]), args.repeats)))
    with tempfile.TemporaryDirectory() as tmp:
        folder = table(Path(tmp), args.table_size)
        rows.append((f"image table, {args.table_size:,} x 64x64x3", *measure(
            lambda: ImageTableDataModule(
                csv=str(folder / "metadata.csv"), images=str(folder / "images.npy"),
                dir=str(folder)),
            args.repeats)))
    print(f"{'data':<32} {'MB':>7} {'load s':>7} {'digest s':>9} {'digest/load':>12}")
    for name, load, digest, size in rows:
        print(f"{name:<32} {size / 1e6:7.1f} {load:7.3f} {digest:9.3f} {digest / load:11.2f}x")


if __name__ == "__main__":
    main()
