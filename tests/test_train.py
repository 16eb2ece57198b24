"""One whole run in-process on fixture MNIST files: what lands in the MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import no_runs, only_run
from mlflow import MlflowClient

from denselab.errors import DataError
from denselab.train import train

METRICS = {
    "train/loss",
    "train/acc",
    "val/loss",
    "val/acc",
    "val/acc_best",
    "test/loss",
    "test/acc",
}


def test_short_training_beats_chance_and_logs_everything(
    compose_cfg, fixture_overrides, store_uri, tmp_path
):
    cfg = compose_cfg([*fixture_overrides, "trainer.max_epochs=3", "seed=1"])
    metrics = train(cfg, tmp_path / "out", overrides=["seed=1"]).metrics

    assert metrics["test/acc"] > 0.8  # chance is 0.1
    client, run = only_run(store_uri)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "mnist-mlp[128]-sgd"
    # Its artifacts lie beside the store it was given, not under the current folder.
    store_folder = Path(store_uri[len("sqlite:///") :]).parent
    artifacts = store_folder / "mnist" / run.info.run_id / "artifacts"
    assert run.info.artifact_uri == artifacts.as_uri()
    assert METRICS <= set(run.data.metrics)
    assert run.data.metrics["test/acc"] == pytest.approx(metrics["test/acc"])
    # one point per epoch, stepped by epoch
    history = client.get_metric_history(run.info.run_id, "val/acc")
    assert [m.step for m in history] == [0, 1, 2]
    # The final scores sit beside the last epoch, and read as the floats they are.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test/acc")] == [2]
    assert len(repr(run.data.metrics["test/acc"])) <= 12
    best = client.get_metric_history(run.info.run_id, "val/acc_best")
    assert best[-1].value == pytest.approx(max(m.value for m in history))

    params = run.data.params
    assert params["params_total"] == "101770"
    assert params["model.hidden_sizes"] == "[128]" and params["optimizer.lr"] == "0.01"
    assert params["seed"] == "1" and "data.seed" not in params  # said once, resolved
    assert params["optimizer"] == "SGD" and params["optimizer.momentum"] == "0.9"
    assert len(params) <= 25, sorted(params)
    assert not [k for k in params if k.endswith(("_target_", "_partial_"))]
    assert not [k for k in params if k.startswith(("callbacks.", "tracking.", "logger."))]
    assert run.data.tags["mlflow.user"] and run.data.tags["mlflow.source.name"]
    assert run.data.tags["dataset"] == "mnist" and run.data.tags["model"] == "mlp[128]"
    assert run.data.tags["overrides"] == "seed=1"

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "tables")}
    assert "tables/accuracy_by_split.json" in artifacts
    local = client.download_artifacts(
        run.info.run_id, "tables/accuracy_by_split.json", str(tmp_path)
    )
    with open(local) as f:
        table = pd.DataFrame(**{k: v for k, v in json.load(f).items() if k in ("columns", "data")})
    assert list(table["split"]) == ["train", "val", "test"]
    assert list(table["images"]) == [480, 120, 200]
    assert table.set_index("split").loc["test", "accuracy"] == pytest.approx(metrics["test/acc"])
    checkpoints = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert len(checkpoints) == 1 and checkpoints[0].endswith(".ckpt")
    assert (tmp_path / "out" / "checkpoints" / "last.ckpt").is_file()


def test_data_error_is_a_sentence_before_any_run(compose_cfg, store_uri, tmp_path):
    cfg = compose_cfg(
        [
            f"data.dir={tmp_path / 'empty'}",
            "data.mirrors=[http://127.0.0.1:9/]",
            f"tracking.uri={store_uri}",
        ]
    )
    with pytest.raises(DataError, match="could not be downloaded"):
        train(cfg, tmp_path / "out")
    no_runs(store_uri)  # the data is loaded before the run: it is part of what the run is


@pytest.mark.slow  # a second whole run; the first one stays in the fast tier
def test_multinomial_model_and_other_losses_train(
    compose_cfg, fixture_overrides, store_uri, tmp_path
):
    cfg = compose_cfg(
        [
            *fixture_overrides,
            "experiment=course_multinomial",
            *fixture_overrides,
            "trainer.max_epochs=2",
            "model.loss=mse",
            "tracking.experiment_name=multi",
        ]
    )
    metrics = train(cfg, tmp_path / "out").metrics
    assert metrics["test/acc"] > 0.5
    _, run = only_run(store_uri, "multi")
    assert run.data.params["params_total"] == "7850"
    assert run.info.run_name == "mnist-mlp[]-rmsprop"
    assert MlflowClient(store_uri).get_experiment_by_name("multi") is not None
