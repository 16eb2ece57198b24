"""Faults of the machine, not of the run: a full disk, a read-only store or folder, a
permission refused. Each is told in one sentence that names what failed and where, what of
the run is safe, and how to go on once it is fixed, instead of the traceback of whichever
write (an artifact upload, a metric in sqlite, a checkpoint) met it first.

A run on a full disk could not even record its own end in a store on that disk: each run
keeps a little space in reserve beside a sqlite store, given back the moment the disk is
found full, so that the store records the run's end (KILLED, resumable).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

# Enough for sqlite's journal and the few rows that end a run (tags, status).
RESERVE_BYTES = 256 * 1024
_reserves: list[Path] = []


@dataclass
class Fault:
    kind: str  # "full", "read-only", "permission"
    path: Optional[Path]  # where, when the error says
    detail: str  # the system's own words


def machine_fault(err: BaseException) -> Optional[Fault]:
    """The fault of the machine behind ``err`` (anywhere in its chain of causes); None for
    any other error."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        fault = _fault_of(err)
        if fault is not None:
            return fault
        err = err.__cause__ or err.__context__
    return None


def _fault_of(err: BaseException) -> Optional[Fault]:
    text = str(err)
    path = Path(err.filename) if isinstance(err, OSError) and err.filename else None
    number = err.errno if isinstance(err, OSError) else None
    if number == errno.ENOSPC or "No space left on device" in text or "disk is full" in text:
        return Fault("full", path, "no space left on device")
    if number == errno.EROFS or "readonly database" in text or "Read-only file system" in text:
        return Fault("read-only", path, _words(text, "read-only"))
    if number in (errno.EACCES, errno.EPERM) or isinstance(err, PermissionError):
        return Fault("permission", path, os.strerror(number) if number else _words(text, ""))
    return None


def _words(text: str, default: str) -> str:
    for line in text.splitlines():
        if "readonly" in line or "Read-only" in line or "permission" in line.lower():
            return line.split(")", 1)[-1].strip() or default
    return default


def where(fault: Fault, store_path: Optional[Path]) -> Path:
    """The path the fault is about: the error's own, else the store's file (a sqlite error
    names no path)."""
    return fault.path or store_path or Path.cwd()


def free_space(path: Path) -> str:
    """The free space of the file system holding ``path``, said for people."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return "unknown"
    for unit in ("bytes", "KB", "MB", "GB"):
        if free < 1024 or unit == "GB":
            return f"{free:.0f} {unit}" if unit == "bytes" else f"{free:.1f} {unit}"
        free /= 1024
    return f"{free:.1f} TB"


def fault_sentence(fault: Fault, place: Path, ended: str, run_id: str, resume: str) -> str:
    """What failed and where, what of run ``run_id`` is safe (``ended``: how it ended, or
    that the store could not record it), and how to go on (``resume``: the command)."""
    if fault.kind == "full":
        return (
            f"No space left on the device of {place} ({free_space(place)} free): run "
            f"{run_id} {ended}, its checkpoints and what it logged so far are kept; free "
            f"some space, then continue it with `{resume}`."
        )
    if fault.kind == "read-only":
        return (
            f"{place} is read-only ({fault.detail}): run {run_id} {ended}; make it writable "
            f"(a read-write mount, chattr -i, chmod u+w), then continue it with `{resume}`."
        )
    return (
        f"No permission to write {place} ({fault.detail}): run {run_id} {ended}; give this "
        f"user write access to it, then continue it with `{resume}`."
    )


def before_run_sentence(fault: Fault, place: Path, what: str) -> str:
    """A fault met before a run was made or changed, and what to do."""
    if fault.kind == "full":
        return (
            f"No space left on the device of {place} ({free_space(place)} free) while "
            f"{what}: nothing was written; free some space or point it elsewhere."
        )
    fix = "a read-write mount, chattr -i, chmod u+w" if fault.kind == "read-only" else (
        "write access for this user")
    return (
        f"{place} cannot be written ({fault.detail}) while {what}: nothing was written; make "
        f"it writable ({fix}) or point it elsewhere."
    )


@contextlib.contextmanager
def space_reserved(store_path: Optional[Path]) -> Iterator[None]:
    """Keep :data:`RESERVE_BYTES` beside a sqlite store while a run lives (nothing for a
    server's store): :func:`give_back_reserve` frees it when the disk is found full."""
    if store_path is None:
        yield
        return
    reserve = store_path.parent / f".denselab-reserve-{os.getpid()}"
    try:
        with open(reserve, "wb") as f:
            f.write(b"\0" * RESERVE_BYTES)
        _reserves.append(reserve)
    except OSError:  # already full or read-only: the fault shows itself soon enough
        reserve.unlink(missing_ok=True)
    try:
        yield
    finally:
        give_back_reserve()


def give_back_reserve() -> None:
    while _reserves:
        _reserves.pop().unlink(missing_ok=True)


@contextlib.contextmanager
def told(place: Optional[Path], what: str, error: type) -> Iterator[None]:
    """Turn a fault of the machine met while doing ``what`` (before any run was made or
    changed) into ``error`` with :func:`before_run_sentence`; other errors pass."""
    try:
        yield
    except Exception as err:
        fault = machine_fault(err)
        if fault is None:
            raise
        raise error(before_run_sentence(fault, where(fault, place), what)) from None
