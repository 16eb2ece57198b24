"""What data a run saw, as short digests of the content, not of where it lies.

A run's identity (:func:`denselab.tracking.params.config_hash`) includes the digest of its
data, so two datasets with the same settings are never taken for one job, and a resume on
other data is refused. The digest covers what the run trains and is scored on: each split's images
(their shape, dtype and bytes) and labels, the hidden-label rows, and the class names. The
same files in another folder give the same digest; one changed pixel, label, or a validation
split drawn by another seed gives another.

It costs a small part of loading the data (``bench/digest.py`` prints both).
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping, Optional, Sequence

import numpy as np

# The run tag that holds it. This module imports no torch: resume and sweeps read the tag
# before Lightning loads.
DATA_TAG = "data_digest"
DIGEST_CHARS = 16  # as config_hash: plenty to tell datasets apart, short enough to read


def _update(hasher, array: Any) -> None:
    if hasattr(array, "detach"):  # a torch tensor, wherever it lives
        array = array.detach().cpu().numpy()
    values = np.ascontiguousarray(array)
    hasher.update(f"{values.dtype.str}{values.shape}".encode())
    hasher.update(memoryview(values).cast("B"))


def array_digest(*arrays: Any) -> str:
    """The digest of ``arrays``' dtypes, shapes and bytes, in order."""
    hasher = hashlib.sha256()
    for array in arrays:
        _update(hasher, array)
    return hasher.hexdigest()[:DIGEST_CHARS]


def data_digest(
    split_digests: Mapping[str, str],
    class_names: Sequence[str],
    unlabeled_digest: Optional[str] = None,
) -> str:
    """One digest of a dataset from its splits' digests (by name), its class names and its
    hidden-label rows."""
    hasher = hashlib.sha256()
    for name in sorted(split_digests):
        hasher.update(f"{name}={split_digests[name]};".encode())
    hasher.update(("classes=" + "\x1f".join(map(str, class_names)) + ";").encode())
    if unlabeled_digest:
        hasher.update(f"unlabeled={unlabeled_digest};".encode())
    return hasher.hexdigest()[:DIGEST_CHARS]
