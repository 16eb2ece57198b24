"""The run's network as an MLflow model: pyfunc reproduces the run, registry aliases, the
weights-only checkpoint loading, and `mlflow models serve` answering on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal

import mlflow
import numpy as np
import pytest
import torch
from helpers import start_model_server
from hydra import compose, initialize_config_module
from mlflow import MlflowClient
from mlflow.entities import LoggedModelStatus

from denselab.config import register_schemas, validate_config
from denselab.errors import CheckpointError, ConfigError
from denselab.reporting.evaluation import Evaluator
from denselab.serving.classifier import Classifier
from denselab.serving.mlflow_model import CHAMPION, champion_note, register
from denselab.serving.preprocessing import raw_pixels
from denselab.train import train
from denselab.training.checkpoint_files import load_checkpoint
from denselab.training.trainer import restore_weights


def compose_run(overrides):
    register_schemas()
    with initialize_config_module(config_module="denselab.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_dir, migrated_store):
    """One 2-epoch run on the fixture MNIST files, registered as `digits_model`."""
    folder = tmp_path_factory.mktemp("served")
    shutil.copyfile(migrated_store, folder / "mlflow.db")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    cfg = compose_run(
        [
            f"data.dir={mnist_dir}",
            "data.mirrors=[]",
            f"tracking.uri={uri}",
            "trainer.enable_progress_bar=false",
            "trainer.max_epochs=2",
            "callbacks=none",
            "tracking.register_as=digits_model",
        ]
    )
    result = train(cfg, folder / "out")
    return result, uri, folder


@pytest.fixture
def tracking(trained, monkeypatch):
    """runs:/ and models:/ URIs resolve through the process-wide tracking URI."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained[1])
    mlflow.set_tracking_uri(trained[1])
    yield trained[1]
    mlflow.set_tracking_uri(None)


def test_pyfunc_model_reproduces_the_runs_test_predictions(trained, tracking):
    result, uri, _ = trained
    test = Evaluator(result.model, result.datamodule).evaluation("test")
    raw = raw_pixels(torch.from_numpy(test.images), "uint8")
    assert raw.dtype == np.uint8 and raw.shape == (200, 28, 28)

    pyfunc = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    out = pyfunc.predict(raw)

    np.testing.assert_array_equal(out["label"].to_numpy(), test.predicted)
    np.testing.assert_array_equal(np.stack(out["probabilities"]), test.probs.astype(np.float64))
    assert list(out["class"]) == [test.class_names[k] for k in test.predicted]
    accuracy = float((out["label"].to_numpy() == test.targets).mean())
    run = MlflowClient(uri).get_run(result.run_id)
    assert accuracy == pytest.approx(run.data.metrics["test/acc"], abs=1e-6)


def test_the_model_carries_signature_example_and_preprocessing(trained, tracking):
    result, uri, _ = trained
    client = MlflowClient(uri)
    run = client.get_run(result.run_id)
    (output,) = run.outputs.model_outputs  # the UI's "Models" column
    logged = client.get_logged_model(output.model_id)
    assert logged.name == "model" and logged.status == LoggedModelStatus.READY

    info = mlflow.models.get_model_info(f"runs:/{result.run_id}/model")
    (spec,) = info.signature.inputs.inputs
    assert spec.type == np.dtype("uint8") and spec.shape == (-1, 28, 28)
    assert info.signature.outputs.input_names() == [
        "label",
        "class",
        "probability",
        "probabilities",
    ]
    pre = info.metadata["preprocessing"]
    assert pre["input_shape"] == [28, 28] and pre["color_mode"] == "L"
    assert pre["class_names"] == [str(d) for d in range(10)] and pre["pixel_dtype"] == "uint8"
    assert "255" in pre["scaling"] and "Lanczos" in pre["resize"]
    example = mlflow.models.Model.load(f"runs:/{result.run_id}/model").load_input_example()
    assert example.shape == (3, 28, 28) and example.dtype == np.uint8


def test_register_as_makes_version_1_latest_and_champion(trained, tracking):
    result, uri, _ = trained
    client = MlflowClient(uri)
    latest = client.get_model_version_by_alias("digits_model", "latest")
    champion = client.get_model_version_by_alias("digits_model", CHAMPION)
    assert int(latest.version) == int(champion.version) == 1
    assert latest.run_id == result.run_id
    loaded = mlflow.pyfunc.load_model("models:/digits_model@champion")
    assert loaded.metadata.run_id == result.run_id


def test_champion_moves_only_to_a_better_val_accuracy(tmp_path, store_uri):
    client = MlflowClient(store_uri)
    experiment = client.create_experiment("e")
    run_id = client.create_run(experiment).info.run_id
    model_id = client.create_logged_model(experiment, name="model", source_run_id=run_id).model_id

    scores = (0.8, 0.7, 0.9, 0.9)
    registered = [register(client, "m", model_id, run_id, s) for s in scores]
    notes = [champion_note(client, "m", v, s) for v, s in zip(registered, scores)]

    assert [int(v.version) for v in registered] == [1, 2, 3, 4]
    assert int(client.get_model_version_by_alias("m", CHAMPION).version) == 3  # a tie keeps it
    assert int(client.get_model_version_by_alias("m", "latest").version) == 4
    # What the run says: where the alias went, and why it did not move.
    assert notes[0] == notes[2] == "alias champion"
    assert notes[3] == (
        "alias champion stays on version 3: its val/acc_best 0.9000 is not beaten by this "
        "version's 0.9000"
    )


def test_log_model_can_be_turned_off(tmp_path, mnist_dir, store_uri):
    cfg = compose_run(
        [
            f"data.dir={mnist_dir}",
            "data.mirrors=[]",
            f"tracking.uri={store_uri}",
            "trainer.enable_progress_bar=false",
            "trainer.max_epochs=1",
            "callbacks=none",
            "tracking.log_model=false",
        ]
    )
    result = train(cfg, tmp_path / "out")
    run = MlflowClient(store_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert not run.outputs.model_outputs


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["tracking.register_as=m", "tracking.log_model=false"], "needs the run's model"),
        (["tracking.register_as=a/b"], "tracking.register_as must be a registered model name"),
    ],
)
def test_registry_settings_are_checked_before_any_work(overrides, words):
    with pytest.raises(ConfigError, match=words):
        validate_config(compose_run(["data=digits", *overrides]))


# -- checkpoints are read weights-only ----------------------------------------------------


class NotWeights:
    """Something a checkpoint from elsewhere could carry: unpickling it could run code."""


def test_run_checkpoints_load_weights_only_and_others_are_refused(trained, tmp_path):
    result, _, folder = trained
    (best,) = (folder / "out" / "checkpoints").glob("best-*.ckpt")
    assert "state_dict" in load_checkpoint(best)
    restore_weights(result.model, str(best))  # the run's own checkpoint: fine
    from_ckpt = Classifier.from_checkpoint(best)
    assert from_ckpt.classes == [str(d) for d in range(10)]

    evil = tmp_path / "evil.ckpt"
    state = torch.load(best, weights_only=True)
    state["extra"] = NotWeights()
    torch.save(state, evil)
    with pytest.raises(CheckpointError, match=r"evil.ckpt holds objects other than tensors"):
        load_checkpoint(evil)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        restore_weights(result.model, str(evil))


# -- mlflow models serve ------------------------------------------------------------------


@pytest.mark.slow
def test_mlflow_models_serve_answers_with_the_runs_predictions(trained, tracking, tmp_path):
    import requests

    result, uri, _ = trained
    test = Evaluator(result.model, result.datamodule).evaluation("test")
    raw = raw_pixels(torch.from_numpy(test.images[:5]), "uint8")
    proc, url = start_model_server(f"runs:/{result.run_id}/model", tmp_path, uri)
    try:
        answer = requests.post(
            f"{url}/invocations",
            data=json.dumps({"inputs": raw.tolist()}),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert answer.ok, answer.text
        rows = answer.json()["predictions"]
        assert [r["label"] for r in rows] == list(test.predicted[:5])
        np.testing.assert_allclose([r["probabilities"] for r in rows], test.probs[:5], rtol=1e-6)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


@pytest.mark.slow
def test_a_served_model_answers_bad_pixels_with_its_own_sentence(
    compose_cfg, tmp_path, store_uri
):
    import requests

    # digits: a float32 model, whose requests reach it as sent (a uint8 model's values are
    # cast by MLflow's request parser to the signature's uint8 before the model sees them).
    cfg = compose_cfg(
        ["data=digits", f"tracking.uri={store_uri}", "trainer.max_epochs=1", "callbacks=none",
         "trainer.enable_progress_bar=false"]
    )
    result = train(cfg, tmp_path / "out")
    proc, url = start_model_server(f"runs:/{result.run_id}/model", tmp_path, store_uri)

    def post(images) -> requests.Response:
        return requests.post(
            f"{url}/invocations",
            data=json.dumps({"inputs": images}),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )

    try:
        good = post(np.full((2, 8, 8), 0.5).tolist())
        assert good.ok, good.text[:500]
        # Out of range, infinite or NaN: denselab's sentence with what the model takes, a
        # 400, not MLflow's "unexpected error" nor the request echoed back.
        for bad in (1e30, -0.5, 255.0, float("nan")):
            refused = post(np.full((2, 8, 8), bad).tolist())
            message = refused.json()["message"]
            assert refused.status_code == 400, (bad, refused.text[:500])
            assert message.startswith("The request holds floats outside [0, 1]"), message
            assert message.endswith(
                "(this model takes images of shape (n, 8, 8), uint8 0-255 or floats in [0, 1])."
            )
            assert "Failed to predict data" not in message and len(message) < 300
        assert post(np.full((2, 8, 8), 0.5).tolist()).json() == good.json()  # still serving
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
