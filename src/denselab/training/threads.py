"""How many CPU threads torch should use for a network: the faster count, not the most.

On a small CPU, the threads of one matrix product must meet after every layer, forward and
backward; for a network as small as the course's (784-128-10 at batch 32) that meeting
costs what a second core gives: on 2 idle cores its run is as fast on one thread as on
two, and on a machine whose other core is busy one thread is far faster.
Past a certain amount of arithmetic per step more threads win. ``bench/threads.py``
measures where; :func:`auto_threads` encodes it.
"""

from __future__ import annotations

import logging
import os
from typing import Optional, Sequence

log = logging.getLogger(__name__)

# How many jobs of a sweep share this machine's CPUs: set by the sweep's launching process.
JOBS_ENV = "DENSELAB_JOBS_AT_ONCE"

# Multiply-adds per training step (forward) from which more than one thread is faster: where
# the gain is clear on 2 idle cores, past the step's Python overhead that no thread count
# speeds up (bench/threads.py prints the table). On a machine whose other core is busy, two
# threads wait on each other and can be many times slower: set threads=1.
MANY_THREADS_FROM_MACS = 10_000_000


def step_macs(widths: Sequence[int], batch_size: int) -> int:
    """Multiply-adds of one forward pass of a dense network with layer ``widths`` (input,
    hidden..., classes) over a batch: the size of a step's work."""
    return batch_size * sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def machine_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_threads() -> int:
    """The threads this process may use: OMP_NUM_THREADS when set (joblib's workers have
    it), else its share of the CPUs when a sweep runs several jobs side by side on them
    (JOBS_ENV), else every CPU it may run on."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        pass
    try:
        jobs = max(1, int(os.environ.get(JOBS_ENV, "1")))
    except ValueError:
        jobs = 1
    return max(1, machine_cpus() // jobs)


def auto_threads(widths: Sequence[int], batch_size: int, cpus: int) -> int:
    """The faster thread count for a step of this size on ``cpus`` CPUs: one below
    :data:`MANY_THREADS_FROM_MACS`, all of them above."""
    return cpus if step_macs(widths, batch_size) >= MANY_THREADS_FROM_MACS else 1


def resolve_threads(setting: Optional[int], widths: Sequence[int], batch_size: int) -> int:
    """The ``threads`` setting as a count: itself when given, else :func:`auto_threads`."""
    return setting if setting else auto_threads(widths, batch_size, cpu_threads())


def apply_threads(setting: Optional[int], widths: Sequence[int], batch_size: int) -> int:
    """Set torch's thread count from the ``threads`` setting; returns the count set."""
    import torch

    threads = resolve_threads(setting, widths, batch_size)
    torch.set_num_threads(threads)
    how = "set by threads" if setting else f"auto: {step_macs(widths, batch_size):,} MACs a step"
    log.info("Training with %d torch thread(s) (%s)", threads, how)
    return threads
