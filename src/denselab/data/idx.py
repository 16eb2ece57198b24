"""Reading gzipped IDX files (MNIST's format), with the structural checks that make a
truncated, mislabelled or mismatched file fail with a clear message instead of a bad run.

IDX: a big-endian header (magic 0x0000TTNN: TT the element type, NN the number of
dimensions; then NN int32 sizes), followed by the elements. MNIST uses unsigned bytes:
0x00000803 for images (n, 28, 28), 0x00000801 for labels (n,).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from denselab.errors import DataError

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """The array stored in a gzipped IDX file, after checking magic, dtype and length."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(
            f"{path} is truncated or not a gzip file ({err}); delete it and run again "
            "to download a fresh copy."
        ) from None

    if len(raw) < 4:
        raise DataError(f"{path} is too short to be an IDX file; delete it and run again.")
    (magic,) = struct.unpack(">i", raw[:4])
    if magic != expected_magic:
        raise DataError(
            f"{path} has IDX magic number 0x{magic:08x}, expected 0x{expected_magic:08x}: "
            "it is not the file its name says; replace it with the right file."
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    shape = struct.unpack(f">{ndim}i", raw[4:header])
    expected_bytes = header + int(np.prod(shape))
    if len(raw) != expected_bytes:
        raise DataError(
            f"{path} holds {len(raw) - header:,} data bytes but its header promises "
            f"{expected_bytes - header:,} for shape {shape}; the file is damaged: delete it "
            "and run again."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_image_label_pair(
    images_path: Path, labels_path: Path, image_shape: tuple[int, int], num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, H, W) uint8 and labels (n,) uint8 that belong together."""
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.shape[1:] != image_shape:
        raise DataError(
            f"{images_path} holds images of {images.shape[1]}x{images.shape[2]} pixels, "
            f"expected {image_shape[0]}x{image_shape[1]}; replace it with the right file."
        )
    if len(images) != len(labels):
        raise DataError(
            f"{images_path} holds {len(images):,} images but {labels_path} holds "
            f"{len(labels):,} labels; the two files do not belong together: replace both."
        )
    if len(labels) and labels.max() >= num_classes:
        raise DataError(
            f"{labels_path} holds label {labels.max()}, but the dataset has {num_classes} "
            "classes (0 to {}); replace it with the right file.".format(num_classes - 1)
        )
    return images, labels
