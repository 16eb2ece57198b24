"""Will the data fit? The bytes a dataset needs against the memory the machine has free.

Checked before the data is read, so that data too large for the machine ends in a sentence
that says what to change, rather than in the kernel's out-of-memory kill (no message, and
the run left RUNNING).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from denselab.errors import DataError

# What a run needs beside its images: Python, torch, Lightning, MLflow, matplotlib, the
# model and a few batches: bench/memory.py measures what an almost empty run takes.
RUN_RESERVE_BYTES = 2**30


def gigabytes(n: int) -> str:
    return f"{n / 1e9:.1f} GB"


def available_bytes() -> Optional[int]:
    """Memory this process could still take: the kernel's MemAvailable, or less when a
    container (cgroup) limits the process to less; None where neither can be read."""
    known = [v for v in (_meminfo_available(), _cgroup_room()) if v is not None]
    return min(known) if known else None


def _meminfo_available() -> Optional[int]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # not Linux: physical pages still free
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _cgroup_room() -> Optional[int]:
    """The cgroup v2 limit minus what the cgroup uses now; None without a limit."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((root / "memory.current").read_text())
    except (OSError, ValueError):
        return None


def check_fits(needed: int, what: str, fix: str, available: Optional[int] = None) -> None:
    """DataError, one sentence, when ``needed`` bytes of data and the run's own reserve do
    not fit in the memory available (measured now unless given; unknown: no check)."""
    available = available_bytes() if available is None else available
    if available is not None and needed + RUN_RESERVE_BYTES > available:
        raise DataError(
            f"{what} needs {gigabytes(needed)} of memory, and the run itself about "
            f"{gigabytes(RUN_RESERVE_BYTES)} more, but only {gigabytes(available)} is "
            f"available; {fix}."
        )
