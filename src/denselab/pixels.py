"""Pixels as stored and pixels as the network sees them.

Splits keep their images in the dtype they were stored in (uint8 for every photo and digit
file): a quarter of the memory of float32, and a quarter of the host-to-device copy.
:func:`as_float` is the one place stored pixels become model inputs, float32 in [0, 1]; it
runs per batch, on whatever device the batch is on.
"""

from __future__ import annotations

import torch

# The pixel value that means full intensity in each stored dtype.
UINT8_MAX = 255.0


def as_float(x: torch.Tensor) -> torch.Tensor:
    """Stored images as float32 in [0, 1]: uint8 divided by 255, floats (already in [0, 1])
    widened to float32. Float32 input is returned as is, without a copy."""
    if x.dtype == torch.uint8:
        # The same two operations (widen, then divide by 255) as scaling the whole split
        # once did, so a batch holds bit for bit the values it held before.
        return x.to(torch.float32).div_(UINT8_MAX)
    return x if x.dtype == torch.float32 else x.to(torch.float32)
