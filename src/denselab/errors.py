"""Errors a user can cause and fix: they are reported as one sentence, without a traceback.

Every exception class of denselab is here, so that a caller catches them from one place.
No torch, Lightning or MLflow: the entry points import this before anything heavy.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Optional


class DenselabError(Exception):
    """Base class: the message names the cause and the fix."""


class ConfigError(DenselabError):
    """A composed configuration that cannot be run."""


class DataError(DenselabError):
    """Data that is missing, unreachable or corrupt."""


class TrackingError(DenselabError):
    """An MLflow tracking store that cannot be used."""


class SearchError(DenselabError):
    """A hyperparameter search (hydra/sweeper=optuna) that cannot be run or continued."""


class HolderError(DenselabError):
    """A run is held by a living process: a second one may not resume or take it over."""


class CheckpointError(DenselabError):
    """A checkpoint that cannot be (safely) read."""


class ModelNotFoundError(DenselabError):
    """A model URI or path that names nothing loadable."""


class InputError(DenselabError):
    """Images that cannot be turned into the network's input."""


class UsageError(DenselabError):
    """Arguments the command does not understand."""


class LossDiverged(DenselabError):
    """The training loss became nan or infinite."""


# The signals that warn of a time limit (sbatch --signal=USR1@..., submitit's USR2): a run
# stopped by one is tagged resumable (see denselab.tracking.signals).
TIME_LIMIT_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


class RunStopped(BaseException):
    """A stop signal arrived. A BaseException, like KeyboardInterrupt, so that no library's
    ``except Exception`` swallows it; Lightning passes it through after its own cleanup."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
        self.run_id: Optional[str] = None  # None: stopped before the run existed
        self.resume_command: Optional[str] = None
        self.last_checkpoint: Optional[Path] = None

    def ended_run(self, run_id: str, resume_command: str, last_checkpoint: Optional[Path]) -> None:
        """Record the run this stop ended (KILLED), for the closing sentence."""
        self.run_id, self.resume_command = run_id, resume_command
        self.last_checkpoint = last_checkpoint

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def resumable(self) -> bool:
        return self.signum in TIME_LIMIT_SIGNALS

    def sentence(self) -> str:
        name = signal.Signals(self.signum).name
        if self.run_id is None:
            return f"Stopped by {name} before the MLflow run was created."
        where = (
            f"it continues from {self.last_checkpoint}"
            if self.last_checkpoint and self.last_checkpoint.is_file()
            else "it had no checkpoint yet and starts again from epoch 0"
        )
        return (
            f"Stopped by {name}: run {self.run_id} ended KILLED; {where} with "
            f"`{self.resume_command}`."
        )


def first_line(err: BaseException) -> str:
    """An exception's message cut to its first line (libraries' messages can run to pages),
    or its type's name when it has none: what fits in a one-sentence error."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
