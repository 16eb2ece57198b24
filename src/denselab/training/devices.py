"""One MLflow run per command, however many processes train it.

With several devices, Lightning's launcher starts the same command again for every local
rank above zero (``LOCAL_RANK`` set in their environment), and each would create a run of
its own. Rank zero creates the run and leaves its id in the environment, which the
launcher copies into the other ranks; they join that run and write nothing to it
(Lightning's logger and denselab's callbacks act on rank zero only).
"""

from __future__ import annotations

import os
from typing import Optional

RUN_ID_ENV = "DENSELAB_RUN_ID"


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0") or 0)


def joined_run() -> Optional[str]:
    """The run id rank zero shared, in a process the launcher started for another rank;
    None in rank zero (and in any single-process run)."""
    run_id = os.environ.get(RUN_ID_ENV)
    return run_id if run_id and local_rank() > 0 else None


def share_run(run_id: str) -> None:
    """Leave ``run_id`` for the processes Lightning's launcher will start for other ranks."""
    os.environ[RUN_ID_ENV] = run_id


def device_count(devices) -> Optional[int]:
    """How many devices ``trainer.devices`` asks for, where it says so (``2``, ``[0, 1]``,
    ``"2"``, ``"0,1"``); None for ``auto`` or ``-1``, which depend on the machine."""
    if isinstance(devices, bool):
        return None
    if isinstance(devices, int):
        return devices if devices > 0 else None
    if isinstance(devices, str):
        text = devices.strip()
        if text.isdigit():
            return int(text)
        if "," in text:
            return len([d for d in text.split(",") if d.strip()])
        return None
    try:
        return len(devices)
    except TypeError:
        return None
