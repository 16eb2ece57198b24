"""Pixels as stored and pixels as the network (or a figure) sees them.

Splits keep their images in the dtype they were stored in (uint8 for every photo and digit
file): a quarter of the memory of float32, and a quarter of the host-to-device copy.
:func:`as_float` is the one place stored pixels become model inputs, float32 in [0, 1]; it
runs per batch, on whatever device the batch is on. :func:`as_float_array` does the same
for the few NumPy images a figure shows. No torch import here: figure code uses it too.
"""

from __future__ import annotations

import numpy as np

# The pixel value that means full intensity in a uint8 image.
UINT8_MAX = 255.0


def as_float(x):
    """Stored images (a torch tensor) as float32 in [0, 1]: uint8 divided by 255, floats
    (already in [0, 1]) widened to float32. Float32 input is returned as is, without a copy."""
    if not x.dtype.is_floating_point:  # uint8, the only integer pixel type a split holds
        # The same two operations (widen, then divide by 255) as scaling the whole split
        # once did, so a batch holds bit for bit the values it held before.
        return x.float().div_(UINT8_MAX)
    return x.float()  # returns x itself when it is float32 already


def as_float_array(images: np.ndarray) -> np.ndarray:
    """:func:`as_float` for NumPy images: the same float32 values, bit for bit."""
    if images.dtype == np.uint8:
        return images.astype(np.float32) / np.float32(UINT8_MAX)
    return images.astype(np.float32, copy=False)
