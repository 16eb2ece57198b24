"""Who holds a run: the host and process that run it (tags ``host``, ``pid``), and in a
SLURM job the job and its log files (``slurm.*``); and whether that process is still alive.

What resume, a sweep that finishes instead of restarting, and takeover after a crash read.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Mapping, Optional

from mlflow.entities import Run
from submitit.core.utils import JobPaths

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
    """This process as the holder of a run: host, pid and, in a SLURM job, the job."""
    return {"host": socket.gethostname(), "pid": str(os.getpid()), **scheduler_tags(environ)}


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
    """Whether the process that runs ``run`` is alive: True or False on its own host, None
    when the run is on another host (or records no process) and this one cannot tell."""
    host, pid = run.data.tags.get("host"), run.data.tags.get("pid")
    if run.info.status != "RUNNING":
        return False
    if not host or not pid or host != socket.gethostname():
        return None
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
