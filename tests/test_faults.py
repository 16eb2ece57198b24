"""Faults to route around, not tracebacks: a resume whose checkpoint was cut short goes on
from the copy logged to the run; with no intact checkpoint it stops in one sentence that
names what it tried, and leaves the run as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import only_run
from helpers import metric_steps
from mlflow import MlflowClient

from denselab.errors import CheckpointError
from denselab.train import train


def settings(store_uri: str) -> list[str]:
    return [
        "data=digits",
        f"tracking.uri={store_uri}",
        "trainer.enable_progress_bar=false",
        "callbacks=none",
        "tracking.log_model=false",
        "tracking.system_metrics=false",
    ]


def cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # as a node that died mid-write leaves it


@pytest.fixture
def stopped_run(compose_cfg, tmp_path, store_uri):
    """A run stopped after its first epoch: KILLED, its last.ckpt and the logged copy."""
    train(compose_cfg([*settings(store_uri), "trainer.max_epochs=1"]), tmp_path / "first")
    client, run = only_run(store_uri, "digits")
    client.set_terminated(run.info.run_id, "KILLED")
    own = Path(run.data.tags["checkpoint_dir"]) / "last.ckpt"
    logged = Path(client.get_run(run.info.run_id).info.artifact_uri.removeprefix("file://"))
    return run.info.run_id, own, logged / "resume" / "last.ckpt"


def resume(compose_cfg, tmp_path, store_uri, run_id: str):
    overrides = [f"resume={run_id}", f"tracking.uri={store_uri}", "trainer.max_epochs=2"]
    return train(compose_cfg([*settings(store_uri), *overrides]), tmp_path / "again", overrides)


def test_a_half_written_last_checkpoint_resumes_from_the_logged_copy(
    compose_cfg, tmp_path, store_uri, stopped_run, caplog
):
    run_id, own, logged = stopped_run
    cut_in_half(own)
    resume(compose_cfg, tmp_path, store_uri, run_id)
    client = MlflowClient(store_uri)
    assert client.get_run(run_id).info.status == "FINISHED"
    assert metric_steps(client, run_id, "val/acc") == [0, 1]  # every epoch once
    assert f"{own} is not a readable PyTorch checkpoint" in caplog.text
    assert "Trying the copy logged to the run." in caplog.text


def test_no_intact_checkpoint_stops_the_resume_in_one_sentence(
    compose_cfg, tmp_path, store_uri, stopped_run
):
    run_id, own, logged = stopped_run
    cut_in_half(own)
    cut_in_half(logged)
    with pytest.raises(CheckpointError) as refused:
        resume(compose_cfg, tmp_path, store_uri, run_id)
    sentence = str(refused.value)
    opening = f"resume={run_id}: no intact checkpoint to continue from (tried {own} ("
    assert sentence.startswith(opening)
    assert "; the logged copy (" in sentence and "start the run anew without resume=" in sentence
    assert "\n" not in sentence
    run = MlflowClient(store_uri).get_run(run_id)
    assert run.info.status == "KILLED"  # left as it was
    assert metric_steps(MlflowClient(store_uri), run_id, "val/acc") == [0]


def test_a_stop_signal_inside_a_checkpoint_write_stays_a_stop(tmp_path, monkeypatch):
    # Ctrl-C inside torch.save's zip writer surfaced as the writer's own RuntimeError
    # ("unexpected pos ..."), and the run ended FAILED instead of KILLED.
    import torch

    from denselab.errors import RunStopped
    from denselab.training.checkpoints import AtomicCheckpointIO

    def interrupted_save(obj, f):
        f.write(b"PK half a zip")
        try:
            raise RunStopped(2)  # what the signal handler raises mid-write
        except RunStopped:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")

    (tmp_path / "last.ckpt").write_bytes(b"the previous epoch's")
    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(RunStopped):
        AtomicCheckpointIO().save_checkpoint({"epoch": 1}, tmp_path / "last.ckpt")
    assert (tmp_path / "last.ckpt").read_bytes() == b"the previous epoch's"  # untouched
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left
