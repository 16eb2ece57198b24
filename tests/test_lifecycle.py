"""What ends a run early: stop signals and a diverging loss, in real processes; and the
pieces that make the end safe (atomic checkpoint writes, the data order in the checkpoint)."""

from __future__ import annotations

import signal

import pytest
import torch
from conftest import only_run
from helpers import start_cli, stop_and_time, wait_for_file

from denselab.checkpoints import STATE_KEY, AtomicCheckpointIO
from denselab.data.digits import DigitsDataModule
from denselab.divergence import DivergenceGuard

# Digits in batches of 8: epochs of ~150 steps, long enough that a signal sent after the
# first checkpoint lands mid-run, short enough to keep each test at seconds.
DIGITS = ["data=digits", "data.batch_size=8", "callbacks=none", "trainer.enable_progress_bar=false"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum, exit_code",
    # SIGTERM (143) is sent by test_resume.py, which then resumes the run.
    [(signal.SIGINT, 130), (signal.SIGUSR1, 138)],
    ids=["SIGINT", "SIGUSR1"],
)
def test_stop_signal_ends_the_run_killed_with_its_exit_code(tmp_path, signum, exit_code):
    proc = start_cli([*DIGITS, "trainer.max_epochs=1000"], tmp_path)
    last = wait_for_file("outputs/*/*/checkpoints/last.ckpt", tmp_path, proc)
    output, seconds = stop_and_time(proc, signum)

    assert proc.returncode == exit_code, output[-3000:]
    assert seconds < 5, f"took {seconds:.1f} s to stop"
    _, run = only_run(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", "digits")
    assert run.info.status == "KILLED"
    assert (run.data.tags.get("resumable") == "true") == (signum == signal.SIGUSR1)
    assert run.data.tags["checkpoint_dir"] == str(last.parent)
    assert run.data.tags["host"] and run.data.tags["pid"] == str(proc.pid)
    # one sentence that says how to go on; no traceback
    assert f"resume={run.info.run_id}" in output and "Traceback" not in output
    state = torch.load(last, weights_only=False)
    assert state[STATE_KEY]["run_id"] == run.info.run_id
    assert not list(last.parent.glob(".*.tmp"))  # no half-written checkpoint left behind
    print(f"{signal.Signals(signum).name}: exit {proc.returncode} in {seconds:.2f} s")


@pytest.mark.slow
def test_diverging_loss_stops_the_run_failed_with_one_sentence(tmp_path):
    proc = start_cli([*DIGITS, "optimizer.lr=1e6", "trainer.max_epochs=20"], tmp_path)
    output, _ = proc.communicate(timeout=300)

    assert proc.returncode == 1, output[-3000:]
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and "optimizer.lr=1e+06): lower the learning rate" in errors[0]
    _, run = only_run(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", "digits")
    assert run.info.status == "FAILED"
    assert "loss became" in run.data.tags["error"]
    assert "lower the learning rate" in run.data.tags["error"]
    # a checkpoint left behind holds finite weights only
    for path in tmp_path.glob("outputs/*/*/checkpoints/*.ckpt"):
        weights = torch.load(path, weights_only=False)["state_dict"]
        assert all(torch.isfinite(w).all() for w in weights.values()), path
    print(errors[0])


def test_a_failed_checkpoint_write_leaves_the_previous_one(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="killed mid-write"):
        io.save_checkpoint({"epoch": 2, "w": torch.zeros(1000), "x": Unpicklable()}, path)
    assert torch.load(path, weights_only=False)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_the_training_order_goes_on_from_a_saved_state():
    def module():
        data = DigitsDataModule(dir="unused", seed=5)
        data.setup()
        return data

    def first_batch(data):
        return next(iter(data.train_dataloader()))[1].tolist()

    straight = module()
    first_batch(straight)  # epoch 0
    expected = first_batch(straight)  # epoch 1

    stopped = module()
    first_batch(stopped)
    state = stopped.state_dict()
    resumed = module()
    resumed.load_state_dict(state)
    assert first_batch(resumed) == expected
    assert first_batch(module()) != expected  # the state matters: epoch 0's order differs


HANDED_ON = """
import os, signal, sys
from pathlib import Path
from denselab.lifecycle import stop_on_signals

marker = Path(sys.argv[1])
# What submitit does in a SLURM job before the task starts: its own SIGUSR1 handler.
signal.signal(signal.SIGUSR1, lambda signum, frame: marker.write_text("requeued"))
with stop_on_signals():
    os.kill(os.getpid(), signal.SIGUSR1)
    signal.pause()
"""


def test_time_limit_signal_is_handed_on_to_the_schedulers_handler(tmp_path):
    import subprocess
    import sys

    marker = tmp_path / "marker"
    done = subprocess.run(
        [sys.executable, "-c", HANDED_ON, str(marker)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 128 + signal.SIGUSR1, done.stderr
    assert marker.read_text() == "requeued"
    assert "Stopped by SIGUSR1 before the MLflow run was created." in done.stderr


def test_a_resumed_fit_measures_growth_from_the_runs_first_loss():
    started = DivergenceGuard()
    started.on_train_batch_end(None, None, {"loss": torch.tensor(2.3)}, None, 0)
    resumed = DivergenceGuard()
    resumed.load_state_dict(started.state_dict())  # what Lightning does from the checkpoint
    # a trained network: one batch nearly free, the next an ordinary miss
    for loss in (0.0008, 2.57):
        resumed.on_train_batch_end(None, None, {"loss": torch.tensor(loss)}, None, 1)
    assert resumed.first_loss == pytest.approx(2.3)
