"""Photos to square RGB arrays: decode, centre-crop, resize.

The method, for every photo: decode it with Pillow, convert it to RGB (grayscale, CMYK,
palette and alpha images alike), cut the largest centred square out of it, and resize that
square to ``size`` x ``size`` with Pillow's Lanczos filter, which averages over the pixels it
shrinks (no aliasing). JPEGs are decoded at the largest of libjpeg's 1/2, 1/4, 1/8 scales
that still leaves both sides at least ``size`` pixels (Pillow's draft mode): the DCT does the
first part of the shrinking, several times faster than decoding every pixel.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps

from denselab.errors import DataError


def decode_image(path: Path, size: int) -> np.ndarray:
    """The photo at ``path`` as a (size, size, 3) uint8 array (see the module's method)."""
    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # JPEG only; a no-op for other formats
            rgb = _to_rgb(image)
            square = ImageOps.fit(rgb, (size, size), method=Image.Resampling.LANCZOS)
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise DataError(
            f"{path.name} cannot be decoded ({err}); the archive it came from is damaged: "
            "delete it and run again to download a fresh copy."
        ) from None
    return np.asarray(square, dtype=np.uint8)


def _to_rgb(image: Image.Image) -> Image.Image:
    # Palette images may carry transparency that only survives the trip through RGBA;
    # converting them straight to RGB makes Pillow warn.
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    return image if image.mode == "RGB" else image.convert("RGB")


def decode_images(paths: Sequence[Path], size: int, workers: int | None = None) -> np.ndarray:
    """The photos at ``paths`` as one (N, size, size, 3) uint8 array, in the order given.

    Pillow releases the GIL while it decodes and resizes, so threads use every core
    without the start-up and copying costs of processes.
    """
    workers = workers or os.cpu_count() or 1
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)

    def fill(i: int) -> None:
        out[i] = decode_image(paths[i], size)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        # list() re-raises the first worker's DataError here
        list(pool.map(fill, range(len(paths))))
    return out
