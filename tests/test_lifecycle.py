"""What ends a run early: stop signals and a diverging loss, in real processes; and the
pieces that make the end safe (atomic checkpoint writes, the data order in the checkpoint)."""

from __future__ import annotations

import signal

import pytest
import pytorch_lightning as pl
import torch
from conftest import only_run
from helpers import PROMPT_S, start_cli, stop_and_time, wait_for_file

from denselab.data.digits import DigitsDataModule
from denselab.errors import LossDiverged
from denselab.training.checkpoints import STATE_KEY, AtomicCheckpointIO
from denselab.training.divergence import DivergenceGuard

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
    assert seconds < PROMPT_S, f"took {seconds:.1f} s to stop"
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
from denselab.tracking.signals import stop_on_signals

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


STUCK_THEN_HANDED_ON = """
import os, signal, sys, time
from pathlib import Path
from denselab.tracking import signals as lifecycle

marker = Path(sys.argv[1])
lifecycle.TIME_LIMIT_GRACE_S = 0.5
signal.signal(signal.SIGUSR2, lambda signum, frame: marker.write_text("requeued"))
# A store that never records the run's end (a busy node's sqlite, a server that hangs).
lifecycle.on_stop(lambda signum: time.sleep(60))
with lifecycle.stop_on_signals():
    os.kill(os.getpid(), signal.SIGUSR2)
    signal.pause()
"""


def test_a_time_limit_signal_is_handed_on_even_when_the_run_cannot_be_ended(tmp_path):
    # The job is requeued all the same: its next try takes over the run left RUNNING.
    import subprocess
    import sys

    marker = tmp_path / "marker"
    done = subprocess.run(
        [sys.executable, "-c", STUCK_THEN_HANDED_ON, str(marker)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 128 + signal.SIGUSR2, done.stderr
    assert marker.read_text() == "requeued"
    assert "did not record the end within 0.5 s" in done.stderr  # the time-limit grace
    assert "the run may still show RUNNING" in done.stderr


def test_a_resumed_fit_measures_growth_from_the_runs_first_loss():
    started = DivergenceGuard()
    started.on_train_batch_end(None, None, {"loss": torch.tensor(2.3)}, None, 0)
    resumed = DivergenceGuard()
    resumed.load_state_dict(started.state_dict())  # what Lightning does from the checkpoint
    # a trained network: one batch nearly free, the next an ordinary miss
    for loss in (0.0008, 2.57):
        resumed.on_train_batch_end(None, None, {"loss": torch.tensor(loss)}, None, 1)
    assert resumed.first_loss == pytest.approx(2.3)


def test_a_loss_over_a_thousand_times_the_first_stops_the_run():
    # A huge learning rate can leave cross-entropy near 1e6 without ever reaching nan; one
    # bad batch of a sound run stays well under a thousand times its first loss.
    guard = DivergenceGuard()
    for loss in (0.5, 499.0, 0.01, 499.9):  # up to 999.8 times the first: training goes on
        guard.on_train_batch_end(None, None, {"loss": torch.tensor(loss)}, None, 0)
    with pytest.raises(LossDiverged, match=r"became 501 .*over 1000 times its first value"):
        guard.on_train_batch_end(None, None, {"loss": torch.tensor(501.0)}, None, 1)


class _NanAtStep(pl.LightningModule):
    """A one-layer model whose loss turns nan at training step ``bad``; counts its steps."""

    def __init__(self, bad: int):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.bad, self.steps = bad, 0

    def training_step(self, batch, batch_idx):
        self.steps += 1
        loss = self.layer(batch[0]).pow(2).mean()
        return loss * float("nan") if self.global_step == self.bad else loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.parametrize("check_every", [1, 4])
def test_divergence_read_in_batches_names_the_step_it_happened_at(check_every):
    # check_every > 1 is what an accelerator gets: no host sync per step.
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(64, 4)))
    model = _NanAtStep(bad=5)
    trainer = pl.Trainer(
        max_epochs=1,
        callbacks=[DivergenceGuard(check_every=check_every)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with pytest.raises(LossDiverged, match=r"became nan at epoch 0, step 6 \(optimizer.lr=0.01\)"):
        trainer.fit(model, data)
    # stopped at the first read after the bad step: step 6 read at once, or with steps 5-8
    assert model.steps == (6 if check_every == 1 else 8)


SIGNAL_MID_WRITE = """
import os, signal, sys
from mlflow import MlflowClient
from sqlalchemy import event
from denselab.tracking.signals import stop_on_signals
from denselab.tracking.logger import RunLogger
from denselab.tracking.runs import run_status

uri, run_id = sys.argv[1:3]
logger = RunLogger(tracking_uri=uri, run_id=run_id)
engine = logger.experiment._tracking_client.store.engine
sent = []

@event.listens_for(engine, "before_cursor_execute")
def signal_mid_write(conn, cursor, statement, *args):
    if statement.startswith("INSERT INTO metrics") and not sent:
        sent.append(statement)
        os.kill(os.getpid(), signal.SIGUSR2)  # a time-limit warning, in the transaction

with stop_on_signals(), run_status(MlflowClient(uri), run_id):
    logger.log_metrics({"val/acc": 0.5, "epoch": 3})
    signal.pause()
"""


def test_a_stop_signal_during_a_metrics_write_lands_after_it(store_uri):
    # A signal raised inside SQLAlchemy's transaction left the sqlite store locked by the
    # process itself: the run's end then failed with "database is locked" (a SLURM job
    # warned of its time limit while it logged an epoch was never requeued).
    import subprocess
    import sys

    from mlflow import MlflowClient

    client = MlflowClient(store_uri)
    run_id = client.create_run(client.create_experiment("signals")).info.run_id
    done = subprocess.run(
        [sys.executable, "-c", SIGNAL_MID_WRITE, store_uri, run_id],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 128 + signal.SIGUSR2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    run = client.get_run(run_id)
    assert (run.info.status, run.data.tags.get("resumable")) == ("KILLED", "true")
    # the write went in whole before the stop
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val/acc")] == [(3, 0.5)]
