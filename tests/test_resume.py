"""resume=<run id> and resume=last, across real processes: a stopped or SIGKILLed run goes on
in the same MLflow run, with the history and result of a run that was never interrupted."""

from __future__ import annotations

import re
import shutil
import signal

import pytest
from conftest import only_run
from helpers import PROMPT_S, metric_steps, run_cli, start_cli, stop_and_time, wait_for_file
from mlflow import MlflowClient
from omegaconf import OmegaConf

from denselab.errors import ConfigError
from denselab.tracking.resume import merged_config, prepare_resume

DIGITS = ["data=digits", "data.batch_size=8", "callbacks=none", "trainer.enable_progress_bar=false"]
EPOCHS = 8


def store(path) -> str:
    return f"sqlite:///{path / 'mlruns' / 'mlflow.db'}"


def assert_refused(args: list[str], cwd, words: str) -> None:
    result = run_cli(args, cwd)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert words in output and "Traceback" not in output


@pytest.mark.slow
def test_sigterm_then_resume_ends_like_an_uninterrupted_run(tmp_path, compose_cfg):
    started, elsewhere, straight = (tmp_path / d for d in ("started", "elsewhere", "straight"))
    for folder in (started, elsewhere, straight):
        folder.mkdir()
    args = [*DIGITS, f"trainer.max_epochs={EPOCHS}", "seed=3"]

    proc = start_cli(args, started)
    wait_for_file("outputs/*/*/checkpoints/last.ckpt", started, proc)
    output, seconds = stop_and_time(proc, signal.SIGTERM)
    print(f"SIGTERM: exit {proc.returncode} in {seconds:.2f} s")
    assert proc.returncode == 143 and seconds < PROMPT_S, output[-3000:]
    uri = store(started)
    client, run = only_run(uri, "digits")
    run_id = run.info.run_id
    done = metric_steps(client, run_id, "val/acc")
    assert run.info.status == "KILLED" and 1 <= len(done) < EPOCHS, done
    assert done == list(range(len(done)))

    # A setting that makes it another run is refused, and the run is left as it was.
    assert_refused(
        [f"resume={run_id}", f"tracking.uri={uri}", "model.hidden_sizes=[64]"],
        elsewhere,
        "cannot change model.hidden_sizes (from [128] to [64])",
    )
    assert client.get_run(run_id).info.status == "KILLED"

    # From another directory, with nothing but the run id and the store.
    resumed = run_cli([f"resume={run_id}", f"tracking.uri={uri}", *DIGITS[3:]], elsewhere)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    client, run = only_run(uri, "digits")
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best"):
        assert metric_steps(client, run_id, key) == list(range(EPOCHS)), key
    assert run.data.params["trainer.max_epochs"] == str(EPOCHS)
    assert run.data.params["seed"] == "3" and run.data.params["data.batch_size"] == "8"
    assert run.data.tags["resumable"] == "false"
    assert "tables/accuracy_by_split.json" in {
        a.path for a in client.list_artifacts(run_id, "tables")
    }

    # One optimizer step per Lightning batch, against the stopped and resumed run's chunks
    # (steps_per_batch=auto: 64 steps a batch here): the same training, to the last bit.
    uninterrupted = run_cli([*args, "steps_per_batch=1"], straight)
    assert uninterrupted.returncode == 0, uninterrupted.stdout[-3000:]
    _, reference = only_run(store(straight), "digits")
    resumed_acc, reference_acc = run.data.metrics["test/acc"], reference.data.metrics["test/acc"]
    print(f"test/acc resumed {resumed_acc:.4f}, uninterrupted {reference_acc:.4f}")
    assert round(resumed_acc, 4) == round(reference_acc, 4)
    # Nothing more to continue: each refusal names why, and adds or changes no run.
    # (In this process: the console path of a refusal is shown above.)
    for resume, words in [
        (run_id, "already FINISHED, so there is nothing to continue"),
        ("0123456789abcdef0123456789abcdef", "there is no such run in the MLflow store"),
        ("last", "resume=last found no unfinished run in experiment 'digits'"),
    ]:
        overrides = [f"resume={resume}", "data=digits", f"tracking.uri={uri}"]
        with pytest.raises(ConfigError, match=re.escape(words)):
            prepare_resume(compose_cfg(overrides), overrides, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()  # nothing written for a refused resume
    client, again = only_run(uri, "digits")
    assert again.info.status == "FINISHED" and again.info.end_time == run.info.end_time

    straight_client = MlflowClient(store(straight))
    keys = [k for k in reference.data.metrics if not k.startswith("system/")]
    assert {"train/loss", "val/loss", "test/acc"} <= set(keys)
    for key in keys:
        history = straight_client.get_metric_history(reference.info.run_id, key)
        assert [(m.step, m.value) for m in client.get_metric_history(run_id, key)] == [
            (m.step, m.value) for m in history
        ], key


@pytest.mark.slow
def test_a_sigkilled_run_is_refused_while_alive_then_taken_over_by_resume_last(tmp_path):
    proc = start_cli([*DIGITS, "trainer.max_epochs=6"], tmp_path)
    last = wait_for_file("outputs/*/*/checkpoints/last.ckpt", tmp_path, proc)
    uri = store(tmp_path)
    client, run = only_run(uri, "digits")
    run_id = run.info.run_id
    # The copy of last.ckpt reaches the run just after the file: wait for it too.
    wait_for_file(f"mlruns/*/{run_id}/artifacts/resume/last.ckpt", tmp_path, proc)
    proc.send_signal(signal.SIGSTOP)  # alive, but holds still while we look
    try:
        alive = run_cli([f"resume={run_id}"], tmp_path)
        assert alive.returncode == 1
        assert f"is RUNNING, held by process {proc.pid} on host" in alive.stdout + alive.stderr
    finally:
        proc.kill()
        proc.communicate(timeout=60)
    assert client.get_run(run_id).info.status == "RUNNING"  # what SIGKILL leaves

    # The local checkpoints are gone too: the copy logged to the run takes their place.
    shutil.rmtree(last.parent)
    resumed = run_cli(["resume=last", *DIGITS], tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "checkpoint copy logged to the run" in resumed.stdout + resumed.stderr
    client, run = only_run(uri, "digits")
    assert run.info.run_id == run_id and run.info.status == "FINISHED"
    assert metric_steps(client, run_id, "val/acc") == list(range(6))
    assert run.data.tags["pid"] != str(proc.pid)


@pytest.mark.slow
def test_resume_without_a_store_is_refused_and_creates_none(tmp_path):
    assert_refused(["resume=last"], tmp_path, "needs the MLflow store the run lives in")
    assert not (tmp_path / "mlruns").exists()


def test_resume_takes_the_run_settings_and_only_harmless_changes():
    run_cfg = OmegaConf.create(
        {
            "seed": 1,
            "trainer": {"max_epochs": 3},
            "model": {"hidden_sizes": [128]},
            "data": {"dir": "data/mnist", "name": "mnist"},
            "resume": None,
        }
    )
    now = OmegaConf.create(
        {
            "seed": 42,
            "trainer": {"max_epochs": 5},
            "model": {"hidden_sizes": [64]},
            "data": {"dir": "/elsewhere", "name": "mnist"},
            "resume": "abc",
        }
    )
    merged = merged_config(run_cfg, now, ["resume=abc", "trainer.max_epochs=5", "data.dir=/x"])
    # the run's own seed and model; the longer training and the moved data
    assert merged.seed == 1 and list(merged.model.hidden_sizes) == [128]
    assert merged.trainer.max_epochs == 5 and merged.data.dir == "/elsewhere"
    with pytest.raises(ConfigError, match=r"cannot change seed \(from 1 to 42\)"):
        merged_config(run_cfg, now, ["seed=42"])
    # Naming the run's data group again beside its new folder changes nothing trained.
    moved = merged_config(run_cfg, now, ["resume=abc", "data=mnist", "data.dir=/elsewhere"])
    assert moved.data.dir == "/elsewhere"
    with pytest.raises(ConfigError, match="may raise trainer.max_epochs, not lower it"):
        merged_config(
            run_cfg, OmegaConf.merge(now, {"trainer": {"max_epochs": 2}}), ["trainer.max_epochs=2"]
        )


@pytest.mark.slow  # a whole in-process run
def test_last_checkpoint_is_every_epochs_end_also_after_the_best_one(
    store_uri, tmp_path, monkeypatch
):
    import torch

    from denselab import fit

    monkeypatch.chdir(tmp_path)
    # A learning rate too small to change a prediction: val/acc never improves after the first
    # epoch, so no later epoch saves a best checkpoint.
    result = fit(
        "data=digits", f"tracking.uri={store_uri}", "optimizer.lr=1e-12", "trainer.max_epochs=3",
        "callbacks=none", "tracking.log_model=false", "trainer.enable_progress_bar=false",
    )
    folder = result.output_dir / "checkpoints"
    assert [p.name for p in folder.glob("best-*.ckpt")] == ["best-epoch00.ckpt"]
    last = torch.load(folder / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["epoch"] == 2


@pytest.mark.parametrize(
    "override",
    [
        "optimizer.lr=0.5",
        "optimizer.momentum=0.5",
        "optimizer=adam",
        "data.batch_size=64",
        "data.val_fraction=0.3",
        "model.dropout=0.5",
        "seed=7",
    ],
)
def test_resume_refuses_every_change_to_what_is_trained(compose_cfg, override):
    # The run's logged settings, and a command line that changes one of them: continuing
    # would put a second run's epochs into the first one's history.
    run_cfg = compose_cfg(["data=digits"])
    overrides = ["resume=abc", override]
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"cannot change {re.escape(key)} \(from "):
        merged_config(run_cfg, compose_cfg(overrides), overrides)
