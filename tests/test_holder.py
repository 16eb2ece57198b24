"""One holder per run: two resumes of one run at once, one continues and the other is
refused naming the holder; a run held on another host (a second UTS namespace with its own
host name) is refused while its heartbeat is fresh and taken over once it is stale."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import only_run
from helpers import console_script, metric_steps, run_cli, start_cli, unavailable, wait_for_file
from mlflow import MlflowClient
from mlflow.entities import Run, RunData, RunInfo, RunTag

from denselab.tracking.heartbeat import heartbeat, heartbeat_stale
from denselab.tracking.holder import process_alive

DIGITS = ["data=digits", "data.batch_size=8", "callbacks=none", "trainer.enable_progress_bar=false"]


def store(path: Path) -> str:
    return f"sqlite:///{path / 'mlruns' / 'mlflow.db'}"


def a_run(status: str, **tags: str) -> Run:
    info = RunInfo("r1", "0", "u", status, 0, None, "active", run_name="r")
    return Run(info, RunData(tags=[RunTag(k, v) for k, v in tags.items()]))


def test_another_hosts_run_is_alive_while_its_heartbeat_is_fresh():
    now = time.time()
    elsewhere = {"host": "node-b", "pid": "123", "heartbeat_interval": "30"}
    fresh = a_run("RUNNING", heartbeat=str(int(now - 20)), **elsewhere)
    stale = a_run("RUNNING", heartbeat=str(int(now - 100)), **elsewhere)
    assert heartbeat_stale(fresh) is False and process_alive(fresh) is True
    assert heartbeat_stale(stale) is True and process_alive(stale) is False
    assert process_alive(a_run("RUNNING", **elsewhere)) is None  # no heartbeat: cannot tell
    assert process_alive(a_run("KILLED", heartbeat=str(int(now)), **elsewhere)) is False


def test_the_heartbeat_is_written_at_once_and_then_every_interval(tmp_path):
    client = MlflowClient(store(tmp_path))
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    with heartbeat(client, run_id, interval=0.5):
        first = int(client.get_run(run_id).data.tags["heartbeat"])
        time.sleep(1.6)
        later = int(client.get_run(run_id).data.tags["heartbeat"])
    assert client.get_run(run_id).data.tags["heartbeat_interval"] == "0.5"
    assert later >= first and abs(later - time.time()) < 2


@pytest.mark.slow
def test_two_resumes_at_once_one_continues_and_the_other_is_refused(tmp_path):
    first = run_cli([*DIGITS, "trainer.max_epochs=1"], tmp_path)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    client, run = only_run(store(tmp_path), "digits")
    run_id = run.info.run_id
    client.set_terminated(run_id, "KILLED")  # as a stopped run is left

    both = [start_cli([f"resume={run_id}", "trainer.max_epochs=8"], tmp_path) for _ in range(2)]
    said = [proc.communicate(timeout=300)[0] for proc in both]
    codes = [proc.returncode for proc in both]
    assert sorted(codes) == [0, 1], said
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    assert (
        f"is RUNNING, held by process {both[winner].pid} on host" in said[loser]
        or "FINISHED meanwhile" in said[loser]
    ), said[loser][-2000:]
    assert "Traceback" not in said[loser]
    assert client.get_run(run_id).info.status == "FINISHED"
    assert metric_steps(client, run_id, "val/acc") == list(range(8))  # each epoch once


def on_another_host(args: list[str], cwd: Path) -> subprocess.Popen:
    """denselab-train in a UTS namespace of its own, named node-b: another host to MLflow."""
    command = shlex.join([console_script(), *args])
    return subprocess.Popen(
        ["unshare", "--uts", "sh", "-c", f"hostname node-b && exec {command}"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"},
    )


@pytest.mark.slow
def test_a_run_on_another_host_is_taken_over_once_its_heartbeat_is_stale(tmp_path):
    probe = subprocess.run(["unshare", "--uts", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        unavailable(f"unshare --uts failed ({probe.stderr.strip()})", "run the tests as root")
    # Beats every 8 s: stale 3 intervals and a 5 s grace after the last, 29 s; long enough
    # for the first resume to start, load and look while it is still fresh, on a busy CI.
    args = [*DIGITS, "trainer.max_epochs=20", "tracking.heartbeat_interval=8"]
    proc = on_another_host(args, tmp_path)
    try:
        wait_for_file("outputs/*/*/checkpoints/last.ckpt", tmp_path, proc)
        client, run = only_run(store(tmp_path), "digits")
        run_id = run.info.run_id
        wait_for_file(f"mlruns/*/{run_id}/artifacts/resume/last.ckpt", tmp_path, proc)
        proc.send_signal(signal.SIGSTOP)  # a node that hangs: no more heartbeats
        assert client.get_run(run_id).data.tags["host"] == "node-b"

        fresh = run_cli([f"resume={run_id}"], tmp_path)
        said = fresh.stdout + fresh.stderr
        assert fresh.returncode == 1, said[-2000:]
        assert f"is RUNNING, held by process {proc.pid} on host node-b since " in said
        assert "last heartbeat" in said and client.get_run(run_id).data.tags["pid"] == str(proc.pid)

        beat = int(client.get_run(run_id).data.tags["heartbeat"])
        time.sleep(max(0.0, beat + 30 - time.time()))  # then the heartbeat is stale
        taken = run_cli([f"resume={run_id}"], tmp_path)
        assert taken.returncode == 0, taken.stdout[-3000:] + taken.stderr[-3000:]
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["host"] != "node-b"
    assert metric_steps(client, run_id, "val/acc") == list(range(20))  # each epoch once


def test_a_sweeps_parent_held_on_another_host_is_refused_until_its_heartbeat_is_stale(
    tmp_path, monkeypatch
):
    import socket

    from test_sweep_report import sweep_config

    from denselab.errors import HolderError
    from denselab.sweeps.parent import open_sweep

    monkeypatch.chdir(tmp_path)
    cfg = sweep_config(["data=digits", "seed=1,2", f"tracking.uri={store(tmp_path)}"])
    first = open_sweep(cfg)
    client, parent_id = first.client, first.parent_id
    # The same sweep, RUNNING on node-b, whose heartbeat is fresh: the command run here
    # again must not take its parent.
    for key, value in {"host": "node-b", "pid": "123", "heartbeat_interval": "30",
                       "heartbeat": str(int(time.time()))}.items():
        client.set_tag(parent_id, key, value)
    with pytest.raises(HolderError, match="held by process 123 on host node-b"):
        open_sweep(cfg)
    client.set_tag(parent_id, "heartbeat", str(int(time.time() - 200)))  # node-b died
    again = open_sweep(cfg)
    assert again.parent_id == parent_id
    assert client.get_run(parent_id).data.tags["host"] == socket.gethostname()
