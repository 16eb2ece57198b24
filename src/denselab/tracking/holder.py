"""Who holds a run: the host and process that run it (tags ``host``, ``pid``), and in a
SLURM job the job and its log files (``slurm.*``); and whether that process is still alive.

What resume, a sweep that finishes instead of restarting, and takeover after a crash read.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Mapping, Optional

from mlflow.entities import Run
from submitit.core.utils import JobPaths

from denselab.errors import HolderError
from denselab.tracking.heartbeat import heartbeat_age, heartbeat_stale

HELD_SINCE_TAG = "held_since"  # when the holder created or took over the run

# (MLflow tag, environment variable SLURM sets in a job)
SLURM_VARIABLES = (
    ("slurm.job_id", "SLURM_JOB_ID"),
    ("slurm.array_job_id", "SLURM_ARRAY_JOB_ID"),
    ("slurm.array_task_id", "SLURM_ARRAY_TASK_ID"),
    ("slurm.node", "SLURMD_NODENAME"),
    ("slurm.partition", "SLURM_JOB_PARTITION"),
    # Set once a job has been requeued (a time limit, a preemption, scontrol requeue).
    ("slurm.restart_count", "SLURM_RESTART_COUNT"),
)


def holder_tags(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """This process as the holder of a run: host, pid, since when and, in a SLURM job, the
    job."""
    return {
        "host": socket.gethostname(),
        "pid": str(os.getpid()),
        HELD_SINCE_TAG: time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        **scheduler_tags(environ),
    }


def scheduler_tags(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The SLURM job a run is part of, as MLflow tags: job and array ids, node, partition,
    and the job's stdout/stderr files where submitit started it; {} outside SLURM.

    Read from the job's environment, not from ``scontrol``: no process to start, and a
    slurmctld that is busy or down cannot delay the run."""
    if not environ.get("SLURM_JOB_ID"):
        return {}
    tags = {tag: environ[name] for tag, name in SLURM_VARIABLES if environ.get(name)}
    tags.update(_submitit_logs(environ))
    return tags


def _submitit_logs(environ: Mapping[str, str]) -> dict[str, str]:
    # submitit passes its folder (with %j still in it) to the job; its JobPaths fills in the
    # ids the same way the sbatch script's --output and --error did.
    folder = environ.get("SUBMITIT_FOLDER")
    if not folder:
        return {}
    array_job = environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{environ.get('SLURM_ARRAY_TASK_ID')}" if array_job else None
    paths = JobPaths(
        folder,
        job_id=job or environ["SLURM_JOB_ID"],
        task_id=int(environ.get("SLURM_PROCID", "0") or 0),
    )
    tags = {"slurm.stdout": str(paths.stdout)}
    # stderr_to_stdout=true sends both into stdout and leaves no stderr file to point at.
    if paths.stderr.exists():
        tags["slurm.stderr"] = str(paths.stderr)
    return tags


def process_alive(run: Run) -> Optional[bool]:
    """Whether the process that runs ``run`` is alive: on its own host from its pid; on any
    other, from its heartbeat (:mod:`denselab.tracking.heartbeat`); None when the run is on
    another host and records no heartbeat, so that this one cannot tell."""
    host, pid = run.data.tags.get("host"), run.data.tags.get("pid")
    if run.info.status != "RUNNING":
        return False
    if not host or not pid or host != socket.gethostname():
        stale = heartbeat_stale(run)
        return None if stale is None else not stale
    pid_int = int(pid)
    if pid_int in (os.getpid(), os.getppid()):
        # ourselves, or rank zero of a multi-device run whose launcher started this rank
        return False
    try:
        os.kill(pid_int, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    # A live pid may have been reused by an unrelated process since the run's died.
    cmdline = Path(f"/proc/{pid_int}/cmdline")
    if cmdline.exists():
        return b"denselab" in cmdline.read_bytes()
    return True


def holder_sentence(run: Run) -> str:
    """Who holds ``run``, for the sentence that refuses a second process: host, pid, since
    when, and its last heartbeat where it records one."""
    tags = run.data.tags
    host, pid = tags.get("host", "an unknown host"), tags.get("pid", "?")
    said = f"process {pid} on host {host}"
    if tags.get(HELD_SINCE_TAG):
        said += f" since {tags[HELD_SINCE_TAG]}"
    age = heartbeat_age(run)
    if age is not None:
        said += f", last heartbeat {age:.0f} s ago"
    return said


def refuse_live_holder(run: Run, asked: str, unknown_refused: bool = True) -> None:
    """Raise HolderError when ``run`` is RUNNING and its holder lives (or, with
    ``unknown_refused``, may live: another host, no heartbeat to tell by)."""
    alive = process_alive(run)
    if run.info.status != "RUNNING" or alive is False or (alive is None and not unknown_refused):
        return
    pid, host = run.data.tags.get("pid", "?"), run.data.tags.get("host", "its host")
    if alive:
        fix = f"wait for it to end, or stop it first (kill -TERM {pid} on {host})"
    else:
        fix = f"resume it on {host}, or stop that process first"
    raise HolderError(
        f"{asked}: run {run.info.run_id} is RUNNING, held by {holder_sentence(run)}; {fix}."
    )
