"""A real one-node SLURM for the tests that need one (the ``slurm_cluster`` fixture).

munged, slurmctld and slurmd run on this machine as the session's children, with their key,
config, state, spool, logs and pid files in one folder (ROOT), so that nothing under /etc or
/var is changed and removing ROOT is all the cleaning there is. Commands find this cluster
through ``SLURM_CONF`` in :attr:`Slurm.env`, which the tests pass to what they start.

One session at a time owns ROOT (a file lock). A session that died without stopping its
daemons leaves their pid files in ROOT: the next one stops those daemons before it starts
its own. A SLURM started by someone else (its own slurm.conf) is used as it is when it has a
``debug`` partition, and left running.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import pytest
from helpers import unavailable

ROOT = Path(os.environ.get("DENSELAB_SLURM_DIR", "/tmp/denselab-slurm"))
# Beside ROOT, not in it: ROOT is removed and made again under this lock.
LOCK = ROOT.with_name(ROOT.name + ".lock")
PARTITION = "debug"
DAEMONS = ("munged", "slurmctld", "slurmd")  # in starting order; stopped in reverse
SBIN = ("/usr/sbin", "/usr/bin")
# Bounds on every wait, so that a cluster that does not come up fails the session, not hangs it.
LOCK_WAIT_S = 600  # another session's whole SLURM module
START_S = 60
STOP_S = 30


@dataclass
class Slurm:
    """A running cluster: its partition and node, and the environment its commands need."""

    partition: str
    node: str
    env: dict[str, str] = field(default_factory=dict)  # SLURM_CONF, for every slurm command
    root: Optional[Path] = None  # None: a cluster these tests did not start

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            args, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout
        )

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, StdOut, ...); empty once SLURM forgot it
        (MinJobAge, 300 s by default, after the job ended)."""
        out = self.run("scontrol", "show", "job", "--oneliner", job_id).stdout
        return dict(pair.split("=", 1) for pair in out.split() if "=" in pair)

    def jobs(self, name: Optional[str] = None) -> list[str]:
        """The ids of the jobs SLURM holds (pending, running, completing), or of those named
        ``name`` (a test's own: a cluster these tests did not start may run others' jobs)."""
        named = [f"--name={name}"] if name else []
        return self.run("squeue", "--noheader", "--format=%i", *named).stdout.split()

    def cancel(self, name: Optional[str] = None, timeout: float = STOP_S) -> None:
        """Cancel the jobs named ``name`` (every job: None) and wait until they are gone."""
        if self.jobs(name):
            self.run("scancel", f"--name={name}" if name else f"--partition={self.partition}")
        deadline = time.monotonic() + timeout
        while self.jobs(name) and time.monotonic() < deadline:
            time.sleep(0.5)


def why_no_slurm() -> Optional[str]:
    """Why a SLURM cannot be started here, or None."""
    missing = [name for name in (*DAEMONS, "sbatch", "sinfo") if not _binary(name)]
    if missing:
        return (
            f"SLURM is not installed ({', '.join(missing)} missing): "
            "apt-get install -y slurm-wlm munge"
        )
    if os.geteuid() != 0:
        return "starting slurmctld, slurmd and munged needs root"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Slurm]:
    """A real SLURM with an idle node in partition ``debug``; skips where none can start."""
    reason = why_no_slurm()
    if reason:
        unavailable(reason, "install slurm-wlm and munge and run as root")
    with running_cluster() as cluster:
        yield cluster


@contextlib.contextmanager
def running_cluster() -> Iterator[Slurm]:
    """A one-node cluster with an idle node in partition ``debug``, for as long as the
    context lasts; every job is cancelled and every daemon stopped at its end."""
    from filelock import FileLock, Timeout

    foreign = _foreign_cluster()
    if foreign is not None:
        yield foreign
        return
    try:
        lock = FileLock(str(LOCK), timeout=LOCK_WAIT_S)
        lock.acquire()
    except Timeout:
        unavailable(
            f"another test session held this machine's SLURM ({LOCK}) for {LOCK_WAIT_S} s",
            "run one test session at a time",
        )
    try:
        stop_cluster()  # what a session that died left running
        procs: list[subprocess.Popen] = []
        try:
            cluster = _start(procs)
            yield cluster
        finally:
            stop_cluster(procs)
    finally:
        lock.release()


def stop_cluster(procs: Sequence[subprocess.Popen] = ()) -> None:
    """Cancel the jobs of the cluster in ROOT, stop its daemons (by their pid files, or the
    processes started here) and remove ROOT."""
    conf = ROOT / "slurm.conf"
    if conf.is_file() and _alive(_pid(_pid_file("slurmctld")), "slurmctld"):
        # Jobs first: slurmd must be alive for their processes to be ended.
        Slurm(PARTITION, "", {"SLURM_CONF": str(conf)}).cancel()
    pids = {name: _pid(_pid_file(name)) for name in DAEMONS}
    pids.update({Path(proc.args[0]).name: proc.pid for proc in procs})
    for name in reversed(DAEMONS):
        _stop(pids.get(name), name)
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=STOP_S)  # reaps it: no zombie left behind
    shutil.rmtree(ROOT, ignore_errors=True)


def _start(procs: list[subprocess.Popen]) -> Slurm:
    node = socket.gethostname().split(".")[0]
    ROOT.mkdir(mode=0o755)
    ROOT.chmod(0o755)  # munged, as user munge, must reach its folder inside
    munge = ROOT / "munge"
    munge.mkdir()
    munge.chmod(0o711)  # munged: everyone may reach its socket, no one list the folder
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    user = pwd.getpwnam("munge")
    for path in (munge, key):
        os.chown(path, user.pw_uid, user.pw_gid)
    conf = ROOT / "slurm.conf"
    conf.write_text(slurm_conf(node, ROOT))
    env = {"SLURM_CONF": str(conf)}
    log = (ROOT / "daemons.log").open("ab")
    # In the foreground (-F, -D), as this process's children in a session of their own:
    # the session reaps them, and Ctrl-C on the test run does not reach them.
    commands = {
        "munged": [
            _binary("munged"),
            "--foreground",
            f"--key-file={key}",
            f"--socket={munge / 'munge.socket'}",
            f"--pid-file={_pid_file('munged')}",
            f"--log-file={munge / 'munged.log'}",
            f"--seed-file={munge / 'munged.seed'}",
        ],
        "slurmctld": [_binary("slurmctld"), "-D", "-i"],
        "slurmd": [_binary("slurmd"), "-D"],
    }
    for name in DAEMONS:
        as_munge = {"user": user.pw_uid, "group": user.pw_gid} if name == "munged" else {}
        procs.append(
            subprocess.Popen(
                commands[name],
                env={**os.environ, **env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **as_munge,
            )
        )
        if name == "munged":
            _wait_for(lambda: (munge / "munge.socket").exists(), "munged's socket", procs)
    cluster = Slurm(PARTITION, node, env, ROOT)
    _wait_for(lambda: _node_state(cluster) == "idle", f"node {node} idle in sinfo", procs)
    return cluster


def slurm_conf(node: str, root: Path) -> str:
    """One node, all its CPUs, a little less than its memory, in partition ``debug``."""
    cpus = os.cpu_count() or 1
    mem_mb = _mem_total_mb()
    lines = [
        "ClusterName=denselab-tests",
        # The node talks to itself over loopback, whatever its name resolves to.
        f"SlurmctldHost={node}(127.0.0.1)",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        # cred_expire: how long a requeued job waits before it may start again (default 120
        # s): the time-limit test requeues jobs, and minutes of waiting test nothing.
        f"AuthInfo=socket={root / 'munge' / 'munge.socket'},cred_expire=10",
        # No cgroups (containers rarely allow them): processes tracked by their parents.
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SlurmUser=root",
        "MpiDefault=none",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'slurmd.log'}",
        # A node that was down (a daemon restarted) comes back by itself.
        "ReturnToService=2",
        # No slurmdbd: sacct fails and submitit falls back to squeue, harmlessly.
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/none",
        # A requeued job waits for its begin time, then for the backfill scheduler's next
        # pass: every 5 s here, not every 30 s.
        "SchedulerParameters=bf_interval=5",
        # A job that ends is shown (scontrol show job) for a minute, not the default five.
        "MinJobAge=60",
        # A cancelled job's processes get 5 s after SIGTERM, not 30, before SIGKILL.
        "KillWait=5",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP",
    ]
    return "\n".join(lines) + "\n"


def _mem_total_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            total_mb = int(line.split()[1]) // 1024
            return max(total_mb - 1024, total_mb * 9 // 10)  # slurmd refuses more than it finds
    raise RuntimeError("no MemTotal in /proc/meminfo")


def _node_state(cluster: Slurm) -> str:
    try:
        out = cluster.run(
            "sinfo", "--noheader", "--Node", f"--partition={cluster.partition}", "--format=%t",
            timeout=10,
        )
    except subprocess.TimeoutExpired:
        return ""
    return out.stdout.strip()


def _foreign_cluster() -> Optional[Slurm]:
    """A SLURM that these tests did not start, used as it is if it has partition debug."""
    ours = _pid(_pid_file("slurmctld"))
    running = [pid for pid in _pids_named("slurmctld") if pid != ours]
    if not running:
        return None
    cluster = Slurm(PARTITION, "", {})
    nodes = cluster.run("sinfo", "--noheader", f"--partition={PARTITION}", "--format=%N")
    if nodes.returncode != 0 or not nodes.stdout.strip():
        unavailable(
            f"a SLURM not started by these tests runs here (slurmctld pid {running[0]}) "
            f"without a partition {PARTITION!r}",
            "stop it, or add that partition",
        )
    cluster.node = nodes.stdout.split()[0]
    return cluster


def _wait_for(condition, what: str, procs: list[subprocess.Popen]) -> None:
    deadline = time.monotonic() + START_S
    while not condition():
        ended = [p.args[0] for p in procs if p.poll() is not None]
        if ended or time.monotonic() > deadline:
            logs = "\n".join(
                f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}"
                for p in sorted(ROOT.glob("*.log")) + sorted(ROOT.glob("munge/*.log"))
            )
            cause = f"{', '.join(ended)} ended" if ended else f"not after {START_S} s"
            raise RuntimeError(f"SLURM did not start: no {what} ({cause})\n{logs}")
        time.sleep(0.2)


def _binary(name: str) -> Optional[str]:
    found = shutil.which(name)
    if found:
        return found
    for folder in SBIN:
        if os.access(f"{folder}/{name}", os.X_OK):
            return f"{folder}/{name}"
    return None


def _pid_file(daemon: str) -> Path:
    # munged runs as user munge: it writes in its own folder only.
    return ROOT / "munge" / "munged.pid" if daemon == "munged" else ROOT / f"{daemon}.pid"


def _pid(path: Path) -> Optional[int]:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: Optional[int], name: str) -> bool:
    """Whether ``pid`` is a live (not zombie) process named ``name``: a pid file can outlive
    its daemon, and the number be reused by another process."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    comm, state = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2]
    return comm == name[:15] and state != "Z"


def _pids_named(name: str) -> list[int]:
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [pid for pid in pids if _alive(pid, name)]


def _stop(pid: Optional[int], name: str) -> None:
    if not _alive(pid, name):
        return
    for signum, wait_s in ((signal.SIGTERM, STOP_S), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        deadline = time.monotonic() + wait_s
        while _alive(pid, name) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _alive(pid, name):
            return
