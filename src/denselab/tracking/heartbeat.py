"""A run's heartbeat: the process that trains a run writes the time to its tag ``heartbeat``
every ``tracking.heartbeat_interval`` seconds (30 by default), on a thread beside training.

A process on the run's own host tells whether the run's process lives from its pid; no
other host can. The heartbeat lets any host tell: a RUNNING run whose heartbeat is older
than a few intervals (``STALE_INTERVALS``) is dead wherever it ran (a SIGKILL, a node that
failed), and ``resume=``, ``resume=last`` and a sweep's rerun may take it over; a fresh one
is held, and they are refused, naming the holder.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Iterator, Optional

from mlflow.entities import Run

log = logging.getLogger(__name__)

HEARTBEAT_TAG = "heartbeat"  # seconds since the epoch, as an integer
INTERVAL_TAG = "heartbeat_interval"  # seconds between beats, as the holder set it
DEFAULT_INTERVAL = 30.0
# Missed beats before a run counts as dead: one late write (a busy server) is not death.
STALE_INTERVALS = 3
GRACE_S = 5.0


def beat_tags(interval: float) -> dict[str, str]:
    return {HEARTBEAT_TAG: str(int(time.time())), INTERVAL_TAG: f"{interval:g}"}


def heartbeat_age(run: Run) -> Optional[float]:
    """Seconds since the run's last heartbeat; None for a run that records none."""
    beat = run.data.tags.get(HEARTBEAT_TAG)
    try:
        return max(0.0, time.time() - float(beat)) if beat else None
    except ValueError:
        return None


def heartbeat_stale(run: Run) -> Optional[bool]:
    """Whether the run's heartbeat stopped (its holder is dead); None without one."""
    age = heartbeat_age(run)
    if age is None:
        return None
    try:
        interval = float(run.data.tags.get(INTERVAL_TAG, DEFAULT_INTERVAL))
    except ValueError:
        interval = DEFAULT_INTERVAL
    return age > STALE_INTERVALS * interval + GRACE_S


@contextlib.contextmanager
def heartbeat(client, run_id: str, interval: float) -> Iterator[None]:
    """Beat for ``run_id`` at once and then every ``interval`` seconds while the block runs.
    A beat that fails (a server away for a moment) is retried at the next one: losing the
    server for good ends the run through its own writes."""
    stop = threading.Event()

    def beat() -> None:
        try:
            client.set_tag(run_id, HEARTBEAT_TAG, str(int(time.time())))
        except Exception as err:  # noqa: BLE001 - the next beat tries again
            log.debug("Heartbeat of run %s not written: %s", run_id, err)

    def loop() -> None:
        while not stop.wait(interval):
            beat()

    for key, value in beat_tags(interval).items():
        client.set_tag(run_id, key, value)
    thread = threading.Thread(target=loop, name="heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval + 5)
