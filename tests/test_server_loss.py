"""A real `mlflow server` that pauses, hangs, dies mid-run, and comes back: the run never
hangs with it, and the command it prints continues the same run."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time

import pytest
from helpers import (
    PROMPT_S,
    PortTaken,
    console_script,
    metric_steps,
    start_cli,
    start_mlflow_server,
    stop_and_time,
    wait_for_file,
)
from mlflow import MlflowClient

DIGITS = ["data=digits", "data.batch_size=8", "callbacks=none", "trainer.enable_progress_bar=false"]
EPOCHS = 8


def wait_for_next_checkpoint(last, proc, timeout: float = 120) -> None:
    before = last.stat().st_mtime_ns
    deadline = time.monotonic() + timeout
    while last.stat().st_mtime_ns == before:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "no epoch ended"
        time.sleep(0.1)


@pytest.mark.slow
def test_the_run_outlives_a_paused_hung_and_lost_server(tmp_path):
    server_dir, work = tmp_path / "server", tmp_path / "work"
    work.mkdir()
    server, url = start_mlflow_server(server_dir)
    port = int(url.rsplit(":", 1)[1])
    try:
        proc = start_cli([*DIGITS, f"trainer.max_epochs={EPOCHS}", f"tracking.uri={url}"], work)
        last = wait_for_file("outputs/*/*/checkpoints/last.ckpt", work, proc)
        run_id = (
            MlflowClient(url)
            .search_runs([MlflowClient(url).get_experiment_by_name("digits").experiment_id])[0]
            .info.run_id
        )

        # A blip: the server stops answering for 4 s, then goes on. The run must not notice.
        os.killpg(server.pid, signal.SIGSTOP)
        time.sleep(4)
        os.killpg(server.pid, signal.SIGCONT)
        wait_for_next_checkpoint(last, proc)

        # The server hangs, and the scheduler stops the job: the signal still wins at once.
        os.killpg(server.pid, signal.SIGSTOP)
        time.sleep(1)  # the run is now blocked on the server, or about to be
        output, seconds = stop_and_time(proc, signal.SIGTERM)
        print(f"SIGTERM while the server hangs: exit {proc.returncode} in {seconds:.2f} s")
        assert proc.returncode == 143 and seconds < PROMPT_S, output[-3000:]
        os.killpg(server.pid, signal.SIGCONT)

        # Taken over again, and now the server dies for good mid-run.
        proc = start_cli([f"resume={run_id}", f"tracking.uri={url}", *DIGITS[3:]], work)
        wait_for_next_checkpoint(last, proc)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        lost = time.monotonic()
        output, _ = proc.communicate(timeout=120)
        seconds = time.monotonic() - lost
    finally:
        proc.kill()
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
    print(f"server lost: exit {proc.returncode} after {seconds:.1f} s")
    assert proc.returncode == 1 and seconds < PROMPT_S, output[-3000:]
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1, output[-3000:]
    assert f"The MLflow server at {url} stopped answering" in errors[0]
    assert str(last) in errors[0]
    command = re.search(r"`(denselab-train resume=\S+ tracking.uri=\S+)`", errors[0]).group(1)
    assert f"resume={run_id}" in command

    try:  # the server comes back where it was, as a team's would
        server, url = start_mlflow_server(server_dir, port=port)
    except PortTaken:  # ... unless a test in the other worker took its port meanwhile
        server, new_url = start_mlflow_server(server_dir)
        command, url = command.replace(url, new_url), new_url
    try:
        argv = shlex.split(command)
        resumed = subprocess.run(
            [console_script(argv[0]), *argv[1:]],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        client = MlflowClient(url)
        runs = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
        assert [r.info.run_id for r in runs] == [run_id]
        assert runs[0].info.status == "FINISHED"
        for key in ("train/loss", "val/acc", "val/acc_best"):
            assert metric_steps(client, run_id, key) == list(range(EPOCHS)), key
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
