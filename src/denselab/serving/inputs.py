"""Finding and reading the images a user wants classified: a folder or glob of image files,
a ``.npy`` array, or a gzipped IDX file (MNIST's format).

Each comes back as (sources, raw images): the file paths, or the array's indices, and the
pixels as the files hold them. Image files are decoded to the network's size and colour
mode by :meth:`Preprocessing.read_file` (as in training), on threads: Pillow releases the
GIL while it decodes.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from denselab.data.idx import IMAGES_MAGIC, read_idx
from denselab.errors import DataError, InputError
from denselab.serving.preprocessing import Preprocessing

log = logging.getLogger("denselab.predict")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# Below this many files a progress bar is only noise.
PROGRESS_FROM = 2_000


def read_inputs(
    spec: str, preprocessing: Preprocessing, progress: bool = False
) -> tuple[list[Any], np.ndarray]:
    """(sources, raw images) of ``spec``: a folder (its image files, recursively), a glob,
    an image file, a ``.npy`` file or an IDX ``.gz`` file."""
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(
                f"The folder {path} holds no image files ({', '.join(IMAGE_SUFFIXES)}); "
                "point inputs= at a folder of PNG or JPEG files, a .npy or an IDX .gz file."
            )
        return _read_files(files, preprocessing, progress)
    if path.is_file():
        name = path.name.lower()
        if name.endswith(".npy"):
            return _read_npy(path)
        if name.endswith(".gz"):
            return _read_idx(path)
        return _read_files([path], preprocessing, progress)
    if glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True))
        files = [p for p in files if p.is_file()]
        if not files:
            raise InputError(f"No file matches inputs={spec}; check the pattern.")
        return _read_files(files, preprocessing, progress)
    raise InputError(
        f"inputs={spec} does not exist; pass a folder or glob of image files, a .npy or an "
        "IDX .gz file."
    )


def _read_npy(path: Path) -> tuple[list[int], np.ndarray]:
    try:
        images = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(
            f"{path} cannot be read as a NumPy array without pickle ({err}); save the images "
            "with numpy.save as a plain uint8 or float array."
        ) from None
    if images.ndim not in (3, 4):
        raise InputError(
            f"{path} holds an array of shape {images.shape}; pass images as (N, H, W) or "
            "(N, H, W, C)."
        )
    return list(range(len(images))), images


def _read_idx(path: Path) -> tuple[list[int], np.ndarray]:
    try:
        images = read_idx(path, IMAGES_MAGIC)
    except DataError:
        raise InputError(
            f"{path} is not a gzipped IDX image file (magic 0x{IMAGES_MAGIC:08x}, n x H x W "
            "bytes, as MNIST's t10k-images-idx3-ubyte.gz); check the file."
        ) from None
    return list(range(len(images))), images


def _read_files(
    files: Sequence[Path], preprocessing: Preprocessing, progress: bool
) -> tuple[list[str], np.ndarray]:
    out = np.empty((len(files), *preprocessing.input_shape), dtype=np.uint8)
    sizes: list[tuple[int, int]] = [preprocessing.size] * len(files)  # (height, width)

    def fill(i: int) -> None:
        out[i] = preprocessing.read_file(files[i])
        with contextlib.suppress(OSError, ValueError), Image.open(files[i]) as image:
            sizes[i] = (image.height, image.width)  # from the header: no second decode

    workers = min(len(files), os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = pool.map(fill, range(len(files)))
        if progress and len(files) >= PROGRESS_FROM:
            from tqdm.auto import tqdm

            done = tqdm(done, total=len(files), desc="Reading images", unit="img")
        try:
            for _ in done:  # re-raises the first file's InputError here
                pass
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # stop at the first bad file
            raise
    resized = resize_note(sizes, preprocessing.size)
    if resized:
        log.info(resized)
    return [str(p) for p in files], out


def resize_note(sizes: Sequence[tuple[int, int]], size: tuple[int, int]) -> str:
    """A sentence for image files not of the network's ``size`` (height, width), which were
    cropped and resized to it as training photos are; empty when all were of that size.
    Said, not refused: photos of any size are how a Flowers-17 network is used, while a
    network trained on 8x8 digits given 28x28 scans was probably not meant for them."""
    other = Counter(s for s in sizes if tuple(s) != tuple(size))
    if not other:
        return ""
    shown = ", ".join(f"{h}x{w}" for (h, w), _ in other.most_common(3))
    more = ", ..." if len(other) > 3 else ""
    return (
        f"{sum(other.values())} of {len(sizes)} image files are not {size[0]}x{size[1]} "
        f"({shown}{more}): cropped and resized to the network's {size[0]}x{size[1]}, as "
        "training photos are."
    )
