"""The console script as a user runs it: in a subprocess, from a directory of its own."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import fashion_mnist_or_skip, no_runs, only_run
from helpers import MNIST_FILES, console_script, mlflow_server, run_cli, write_mnist

# Every test here starts the console script in a subprocess.
pytestmark = pytest.mark.slow

QUIET = ["trainer.enable_progress_bar=false"]
# Figures have tests of their own; runs that test something else skip them for speed.
NO_FIGURES = ["callbacks=none"]


def test_cfg_job_prints_the_composed_config(tmp_path):
    result = run_cli(["--cfg", "job", "data=digits", "model.hidden_sizes=[64,32]"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "DigitsDataModule" in result.stdout and "- 64\n  - 32" in result.stdout
    assert list(tmp_path.iterdir()) == []  # printing a config writes nothing


def test_python_dash_m_is_the_same_entry_point(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "denselab.train", "--cfg", "job"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "MNISTDataModule" in result.stdout


@pytest.mark.parametrize(
    "override, words",
    [
        ("model.hidden_sizes=[abc]", "could not be converted to Integer"),
        ("data=nosuch", "Could not find 'data/nosuch'"),
        ("optimizer.lr=0", "optimizer.lr must be a positive number"),
        ("model.hidden_sizes=[128,-3]", "model.hidden_sizes must hold positive layer widths"),
        ("data.val_fraction=1.5", "data.val_fraction must lie strictly between 0 and 1"),
    ],
)
def test_config_errors_stop_before_any_work(tmp_path, override, words):
    result = run_cli([override, *QUIET], tmp_path)
    assert result.returncode != 0
    assert words in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "data").exists()


def test_missing_data_without_network_is_a_sentence_with_a_fix(tmp_path):
    result = run_cli(["data.mirrors=[http://127.0.0.1:9/]", *QUIET], tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert all(name in output for name in MNIST_FILES)
    assert f"Put them in {tmp_path / 'data' / 'mnist'} by hand" in output
    assert "data=digits (bundled with scikit-learn)" in output  # what trains offline
    assert "Traceback" not in output
    assert not (tmp_path / "data").exists()
    no_runs(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")


@pytest.mark.slow
def test_a_typo_with_or_without_plus_makes_no_run_and_a_trainer_argument_trains(tmp_path):
    for typo, meant in (
        ("model.hidden_size=[64]", "model.hidden_sizes"),  # Hydra's hint: add it with +
        ("+model.hidden_size=[64]", "model.hidden_sizes"),
        ("trainer.max_epoch=2", "trainer.max_epochs"),
        ("+trainer.max_epoch=2", "trainer.max_epochs"),
    ):
        result = run_cli(["data=digits", typo, *QUIET], tmp_path)
        output = result.stdout + result.stderr
        assert result.returncode == 1 and f"(did you mean {meant}?)" in output, output[-2000:]
        assert "Traceback" not in output
    no_runs(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    trains = ["data=digits", "+trainer.gradient_clip_val=1", "trainer.max_epochs=1", *NO_FIGURES]
    result = run_cli([*trains, *QUIET], tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    _, run = only_run(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", "digits")
    assert run.info.status == "FINISHED"


@pytest.mark.slow
def test_make_demo_trains_offline_with_every_figure_and_the_model(tmp_path):
    root = Path(__file__).resolve().parents[1]
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    args = f"tracking.uri={store} hydra.run.dir={tmp_path / 'out'} {' '.join(QUIET)}"
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(root), "demo", f"ARGS={args}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert f"serve it with `mlflow ui --backend-store-uri {store}`" in output
    client, run = only_run(store, "demo")
    assert run.info.status == "FINISHED"
    figures = {Path(a.path).stem for a in client.list_artifacts(run.info.run_id, "figures")}
    assert {
        "class_samples",
        "confusion_matrix_test",
        "first_layer_weights",
        "typical_examples",
        "training_curves",
    } <= figures, figures
    from denselab.serving.classifier import load

    assert len(load(f"runs:/{run.info.run_id}/model", store).classes) == 10  # the model


def test_truncated_file_is_a_sentence_with_a_fix(tmp_path):
    data = write_mnist(tmp_path / "data" / "mnist")
    labels = data / MNIST_FILES[3]
    labels.write_bytes(labels.read_bytes()[:-20])
    result = run_cli([*QUIET], tmp_path)
    assert result.returncode == 1
    assert "is truncated or not a gzip file" in result.stdout + result.stderr
    no_runs(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")


def test_unreachable_tracking_server_is_named(tmp_path, mnist_dir):
    result = run_cli([f"data.dir={mnist_dir}", "tracking.uri=http://127.0.0.1:9", *QUIET], tmp_path)
    assert result.returncode == 1
    assert "No MLflow server answers at http://127.0.0.1:9" in result.stdout + result.stderr


def test_ctrl_c_ends_the_run_killed(tmp_path, mnist_dir):
    args = [
        f"data.dir={mnist_dir}",
        "data.mirrors=[]",
        "trainer.max_epochs=100000",
        *QUIET,
        *NO_FIGURES,
    ]
    proc = subprocess.Popen(
        [console_script(), *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    try:
        # Training is under way once the first checkpoint exists. (The test must not open
        # the store meanwhile: a second process would race the new DB's migration.)
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("outputs/*/*/checkpoints/last.ckpt")):
            assert time.monotonic() < deadline and proc.poll() is None, "training never started"
            time.sleep(0.5)
        time.sleep(1.0)  # into the next epoch, past the checkpoint's copy to the run
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0, output[-2000:]
    _, run = only_run(uri)
    assert run.info.status == "KILLED", output[-3000:]


def test_end_to_end_on_real_fashion_mnist(tmp_path):
    fashion_mnist_or_skip()
    result = run_cli(["data=fashion_mnist", "trainer.max_epochs=2", *QUIET], tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client, run = only_run(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", "fashion_mnist")
    assert run.info.status == "FINISHED"
    metrics = run.data.metrics
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "val/acc_best", "test/loss"} <= set(
        metrics
    )
    assert metrics["test/acc"] >= 0.80
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/acc")] == [0, 1]
    assert run.data.params["params_total"] == "101770"
    print(f"Fashion-MNIST, 2 epochs: test/acc {metrics['test/acc']:.4f}")


def test_runs_reach_an_mlflow_server(tmp_path, mnist_dir):
    with mlflow_server(tmp_path / "server") as url:
        result = run_cli(
            [
                f"data.dir={mnist_dir}",
                "data.mirrors=[]",
                "trainer.max_epochs=1",
                f"tracking.uri={url}",
                *QUIET,
                *NO_FIGURES,
            ],
            tmp_path,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        client, run = only_run(url)
        assert run.info.status == "FINISHED" and "test/acc" in run.data.metrics
        assert "tables" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert not (tmp_path / "mlruns").exists()  # nothing went to the local store


def test_piped_output_is_one_line_per_epoch_and_ends_with_the_run_address(tmp_path):
    # No trainer.enable_progress_bar=false: the progress display as a user gets it, piped.
    result = run_cli(["data=digits", "trainer.max_epochs=10", *NO_FIGURES], tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "\r" not in output  # no bar redrawn step by step
    epoch_lines = [line for line in output.splitlines() if "] - epoch " in line]
    assert len(epoch_lines) == 10 and "epoch 10/10: loss " in epoch_lines[-1]
    assert " | val loss " in epoch_lines[0]
    assert len("\n".join(epoch_lines).encode()) < 5000
    assert "Tip:" not in output and "TPU available" not in output
    client, run = only_run(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}", "digits")
    exp_id, run_id = run.info.experiment_id, run.info.run_id
    store = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert (
        f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs/{run_id}"
        f"?workflowType=machine_learning (serve it with `mlflow ui --backend-store-uri {store}`)"
    ) in output
    assert "Accuracy by split (best checkpoint)" in output
    # What the UI shows: the result on the Overview, test scores beside the last epoch.
    note = run.data.tags["mlflow.note.content"]
    assert "| test | 359 |" in note and "**Most confused** (test)" in note
    assert [m.step for m in client.get_metric_history(run_id, "test/acc")] == [9]
    assert len(run.data.params) <= 25
