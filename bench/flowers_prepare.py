"""Seconds to prepare Oxford Flowers-17: first time (extract, decode, cache) and cached.

The real archive cannot be fetched everywhere, so this builds a stand-in of the same shape:
1,360 JPEGs whose short side is 500 pixels (the long side 500-750), about 40-60 kB each
like the real photos, grayscale and CMYK ones among them, in a 17flowers.tgz with its
datasplits.mat. Goals: first preparation under 20 s on 2 cores, a cached load under 1 s.

    python bench/flowers_prepare.py [--sizes 32 64 128] [--short-side 500] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers import write_flowers  # noqa: E402

from denselab.data import images as image_decoding  # noqa: E402
from denselab.data.flowers import FlowersDataModule  # noqa: E402


def timed_setup(folder: Path, size: int) -> float:
    start = time.perf_counter()
    datamodule = FlowersDataModule(dir=str(folder), image_size=size)
    datamodule.prepare_data()
    datamodule.setup()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 32, 128])
    parser.add_argument("--short-side", type=int, default=500)
    parser.add_argument("--workers", type=int, default=None, help="decoding threads")
    args = parser.parse_args()

    if args.workers:
        decode = image_decoding.decode_images
        image_decoding.decode_images = lambda p, s, w=None: decode(p, s, args.workers)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        write_flowers(folder, short_side=args.short_side)
        archive = folder / "17flowers.tgz"
        print(
            f"stand-in archive: {archive.stat().st_size / 1e6:.1f} MB, built in "
            f"{time.perf_counter() - start:.1f} s; {os.cpu_count()} CPUs, "
            f"{args.workers or os.cpu_count()} decoding threads"
        )
        for size in args.sizes:
            first = timed_setup(folder, size)
            cached = timed_setup(folder, size)
            print(f"{size:>4}x{size}: first {first:5.2f} s (goal < 20), cached {cached:.3f} s")


if __name__ == "__main__":
    main()
