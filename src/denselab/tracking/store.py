"""The MLflow store as many processes share it: locked creation, waiting writers, bounded HTTP.

Nothing here imports MLflow at module level: :func:`bound_http_waits` must run before any
MLflow call, and the sqlite settings must be in place before MLflow opens its first engine.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Optional

from denselab.errors import TrackingError

# MLflow's own defaults (120 s a request, 7 retries, backoff factor 2) let one call to a dead
# server retry for minutes. These ride out a restart of a few seconds (retries after 0, 2, 4
# and 8 s) and give up within about 20 s on a server that refuses connections, 45 s on one
# that hangs; a user's own setting of any of them wins.
HTTP_WAITS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "6",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "4",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}
# How long a writer waits for another process's sqlite write before failing: sqlite's
# default of 5 s is too short for a dozen jobs starting at once on two cores.
SQLITE_BUSY_TIMEOUT_S = 60
# How long a process waits for another one to create or migrate the store.
STORE_LOCK_TIMEOUT_S = 300


def bound_http_waits() -> None:
    """Bound every HTTP call MLflow makes to a tracking server (read at each request)."""
    for name, value in HTTP_WAITS.items():
        os.environ.setdefault(name, value)


def sqlite_path(uri: str) -> Optional[Path]:
    """The database file of a ``sqlite:///`` URI, else None."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :].split("?", 1)[0])
    return None


_busy_timeout_set = False


def wait_for_sqlite_writers() -> None:
    """Make every sqlite connection of this process wait for other writers instead of
    failing at once with "database is locked" (once per process, on all SQLAlchemy engines)."""
    global _busy_timeout_set
    if _busy_timeout_set:
        return
    import sqlite3

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _busy_timeout(dbapi_connection, connection_record) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            dbapi_connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")

    _busy_timeout_set = True


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold the store's file lock (sqlite stores only): creating or migrating a fresh sqlite
    DB from several processes at once races MLflow's schema migration and can break it."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    from filelock import FileLock, Timeout

    db.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(db) + ".lock", timeout=STORE_LOCK_TIMEOUT_S)
    try:
        lock.acquire()
    except Timeout:
        raise TrackingError(
            f"Waited {STORE_LOCK_TIMEOUT_S} s for another process to finish creating the MLflow "
            f"store {db}; if no denselab process is running, delete {db}.lock and start again."
        ) from None
    try:
        yield
    finally:
        lock.release()
