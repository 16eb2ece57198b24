"""Decoded image arrays kept on disk, trusted only while they still match their source.

A cache (.npz) holds the array and the size and modification time of the file it was
decoded from. It is used only if it reads cleanly, has the expected shape and type, and
its source is unchanged; anything else is rebuilt. It is written to a temporary file and
moved into place, so an interrupted write never leaves a half cache behind.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)


def source_stamp(source: Path) -> np.ndarray:
    """What identifies a version of ``source``: its size and modification time (ns)."""
    stat = source.stat()
    return np.array([stat.st_size, stat.st_mtime_ns], dtype=np.int64)


def load_cache(path: Path, source: Path, shape: tuple[int, ...]) -> Optional[np.ndarray]:
    """The uint8 array of ``shape`` cached at ``path`` from ``source``, or None if untrusted."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as cache:
            stamp, images = cache["source"], cache["images"]
    except Exception as err:  # noqa: BLE001 - a damaged zip fails in many ways; all mean rebuild
        log.warning("Rebuilding %s: it cannot be read (%s: %s)", path, type(err).__name__, err)
        return None
    if not np.array_equal(stamp, source_stamp(source)):
        log.info("Rebuilding %s: %s changed since it was built", path, source.name)
        return None
    if images.shape != shape or images.dtype != np.uint8:
        log.warning(
            "Rebuilding %s: it holds %s %s, expected uint8 %s",
            path,
            images.dtype,
            images.shape,
            shape,
        )
        return None
    return images


def save_cache(path: Path, images: np.ndarray, source: Path) -> None:
    """Write ``images`` to ``path`` atomically, stamped with the current ``source``."""
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=images, source=source_stamp(source))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
