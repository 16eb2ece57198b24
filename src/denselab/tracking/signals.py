"""How a run ends when a stop signal arrives (a diverging loss: see training.divergence).

SIGINT (Ctrl-C), SIGTERM (SLURM, systemd, docker stop), SIGUSR1 and SIGUSR2 (a scheduler's
warning before a time limit: ``sbatch --signal=USR1@...``; submitit's jobs get USR2) end the
run KILLED and the process with 128 + the signal's number: 130, 143, 138 and 140, as shells
and schedulers read them. The time-limit signals also tag the run ``resumable``. What a
resumed run continues from is ``last.ckpt`` of the last completed epoch, which
:class:`denselab.training.checkpoints.RunCheckpoint` writes atomically at every epoch's end; the
unfinished epoch is trained again, in the same order, on resume.

Under a scheduler that set its own handler for the time-limit signal before ours (submitit,
for ``hydra/launcher=slurm``), the signal is handed on to it once the run has ended:
submitit then requeues the job, and the requeued job continues the same run from its
checkpoint (:mod:`denselab.sweeps.job`).

The signal handler raises at once, wherever the main thread is, so that a process blocked on a
tracking server that does not answer still ends; the run then has GRACE_S seconds to record
KILLED before the process leaves without it.

Imported by the entry point before anything heavy: no torch, Lightning or MLflow here.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Any, Callable, Iterator, Optional

from denselab.errors import TIME_LIMIT_SIGNALS, RunStopped

log = logging.getLogger("denselab")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, *TIME_LIMIT_SIGNALS)
# Seconds the run gets, after a stop signal, to record its end (KILLED) before the process
# exits without it: what "honoured within 5 s" leaves after a busy machine schedules the handler.
GRACE_S = 3.0
# The same for a time-limit warning: the scheduler allows minutes before its hard kill
# (signal_delay_s), and a busy node's store may need more than GRACE_S. Whatever happens,
# the job is then handed on for requeue (see _leave_now).
TIME_LIMIT_GRACE_S = 30.0


def _grace(signum: int) -> float:
    return TIME_LIMIT_GRACE_S if signum in TIME_LIMIT_SIGNALS else GRACE_S


# What else must end when this process is stopped, run before it leaves: a sweep run by
# Hydra's basic launcher ends its parent run KILLED here. Each gets the signal's number.
_stop_hooks: list[Callable[[int], None]] = []


# Writes under way that a stop signal must not cut in half (signals_held), and the stop
# signals that arrived meanwhile, raised when the last such write is done.
_holds = 0
_deferred: list[int] = []


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold stop signals back while a store write is under way (the run's end, an epoch's
    metrics): one that arrives meanwhile is raised after it, not in its middle, which would
    leave the run RUNNING or the store locked. The signal's grace period (GRACE_S) still
    runs from its arrival, so a write that hangs does not hold the stop for long.

    Held in denselab's own handler (stop_on_signals), not with a signal mask: the kernel
    hands a process's signal to any thread that does not block it (MLflow and torch start
    threads), and Python then runs the handler in the main thread at once all the same."""
    global _holds
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _holds += 1
    try:
        yield
    finally:
        _holds -= 1
        if not _holds and _deferred:  # also when the write failed: the stop comes first
            signum = _deferred.pop(0)
            if _deferred:  # a second signal meanwhile: the user insists
                os._exit(128 + signum)
            raise RunStopped(signum)


def on_stop(hook: Callable[[int], None]) -> None:
    """Call ``hook(signum)`` when a stop signal ends this process, after the run ended."""
    _stop_hooks.append(hook)


class _StopHandler:
    def __init__(self) -> None:
        self.received: Optional[int] = None
        self.watchdog: Optional[threading.Timer] = None
        # The handlers ours replaced, by signal: a time-limit signal is handed on to its own.
        self.previous: dict[int, Any] = {}

    def __call__(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            if _holds:  # the run's end is being written: leave right after it
                _deferred.extend([self.received, signum])
                return
            # A second signal while the run is being ended: the user insists.
            os._exit(128 + self.received)
        self.received = signum
        self.watchdog = threading.Timer(
            _grace(signum), _leave_now, args=(signum, self.previous.get(signum))
        )
        self.watchdog.daemon = True
        self.watchdog.start()
        if _holds:
            _deferred.append(signum)  # raised when the write under way is done
            return
        raise RunStopped(signum)


def _pass_on_time_limit(signum: int, scheduler_handler: Any) -> None:
    """Hand a time-limit signal on to the handler that was there before ours, once the run
    has ended KILLED and resumable: under submitit (hydra/launcher=slurm) that is
    submitit's, which requeues the job; the requeued job finds this run stopped and
    continues it from its last checkpoint (denselab.sweeps.job). Anything it raises only means:
    no requeue. SLURM then ends this process (SIGTERM: straight out, the run is ended)."""
    if not callable(scheduler_handler) or scheduler_handler is signal.default_int_handler:
        return
    name = signal.Signals(signum).name
    log.info("Handing %s on to the scheduler's handler (submitit: requeue the job)", name)
    try:
        scheduler_handler(signum, None)
    except BaseException as err:  # submitit leaves by SystemExit, or says why it did not requeue
        if not isinstance(err, SystemExit):
            log.warning("The job was not requeued: %s", err)


def _leave_now(signum: int, scheduler_handler: Any) -> None:
    # Runs on the watchdog thread when ending the run took too long, typically a tracking
    # server that does not answer: the run may still show RUNNING there; resume takes it over,
    # and so does a requeued sweep job (its stopped run's process is gone), so a time-limit
    # signal is still handed on to the scheduler's handler.
    sys.stderr.write(
        f"Stopped by {signal.Signals(signum).name}; the tracking store did not record the end "
        f"within {_grace(signum):g} s, so the run may still show RUNNING: `denselab-train "
        "resume=<run id>` takes it over.\n"
    )
    sys.stderr.flush()
    if signum in TIME_LIMIT_SIGNALS:
        _pass_on_time_limit(signum, scheduler_handler)
    os._exit(128 + signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn the STOP_SIGNALS into :class:`RunStopped`, and that into one sentence and exit
    code 128 + signal. Lightning adds its own SIGTERM handler during fit; it calls
    this one after its own, so the run still stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    handler = _StopHandler()
    _deferred.clear()
    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    handler.previous = previous
    try:
        yield
    except RunStopped as stop:
        log.error(stop.sentence())
        for hook in _stop_hooks:
            with contextlib.suppress(Exception):
                hook(stop.signum)
        if stop.resumable:
            if handler.watchdog is not None:
                handler.watchdog.cancel()  # the run has ended; the requeue has its own timeout
            _pass_on_time_limit(stop.signum, previous.get(stop.signum))
        # Leave now: the run is ended and its checkpoint on disk, and the interpreter's own
        # shutdown (atexit hooks, freeing torch and MLflow) can take seconds on a busy machine.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(stop.exit_code)
    finally:
        if handler.watchdog is not None:
            handler.watchdog.cancel()
        for signum, old in previous.items():
            signal.signal(signum, old)
