"""The run's network as an MLflow model: pyfunc reproduces the run, registry aliases, the
weights-only checkpoint loading, and `mlflow models serve` answering on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from types import SimpleNamespace
from typing import Any, NamedTuple, Optional

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
from denselab.serving.classifier import Classifier, load
from denselab.serving.mlflow_model import (
    CHAMPION,
    PyfuncClassifier,
    champion_note,
    checked_invocations,
    register,
)
from denselab.serving.preprocessing import Preprocessing, raw_pixels
from denselab.train import train
from denselab.training.checkpoint_files import load_checkpoint
from denselab.training.network import Architecture
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
    # The one spec MLflow hands on untouched; what the model takes is the metadata's "input".
    assert spec.type == np.dtype(object) and spec.shape == (-1,)
    assert info.metadata["input"] == TAKES.format(size="28, 28")
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
    # The example is read back as a request is: the JSON's own numbers, 0-255 integers here.
    example = mlflow.models.Model.load(f"runs:/{result.run_id}/model").load_input_example()
    assert example.shape == (3, 28, 28) and {type(v) for v in example.flat} == {int}
    assert 0 <= example.min() and example.max() <= 255


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


# -- malformed requests: denselab's sentence for each, never the request back ---------------

TAKES = "images of shape (n, {size}), uint8 0-255 or floats in [0, 1]"
# Distinctive pixels: an answer that holds either has echoed the request.
PIXEL, INT_PIXEL = 0.4321, 173
JSON = "application/json"
SHAPE = "The request holds an array of shape"
HOLDS = "The request holds"
KEYS = "The request's JSON has the key"
INPUTS = "The request's \"inputs\" is"
RAGGED = "The request holds lists of different lengths"
FLOATS, INTEGERS = "The request holds floats outside [0, 1]", "The request holds integers outside"


class Malformed(NamedTuple):
    what: str
    body: Any  # bytes as sent, or what json.dumps sends
    begins: str  # how the answer's sentence begins
    content_type: Optional[str] = JSON
    status: int = 400


def malformed_requests(h: int, w: int) -> list[Malformed]:
    """Requests a model of h x w images must refuse, each in its own sentence."""

    def batch(*shape, value: Any = PIXEL) -> list:
        return np.full(shape, value, dtype=object).tolist()

    def images(bad: Any, value: Any = PIXEL) -> dict:  # two images, one pixel bad
        pixels = batch(2, h, w, value=value)
        pixels[1][h - 1][w - 1] = bad
        return {"inputs": pixels}

    deep: list = [PIXEL]
    for _ in range(40):
        deep = [deep]
    good, two = {"inputs": batch(2, h, w)}, batch(2, h, w)
    M, ct = Malformed, "The request's Content-Type is"
    return [
        M("short rows", {"inputs": batch(2, h, w - 1)}, f"{SHAPE} (2, {h}, {w - 1}),"),
        M("too many rows", {"inputs": batch(2, h + 1, w)}, f"{SHAPE} (2, {h + 1}, {w}),"),
        M("a flat vector", {"inputs": batch(h * w)}, f"{SHAPE} ({h * w}),"),
        M("flat images", {"inputs": batch(2, h * w)}, f"{SHAPE} (2, {h * w}),"),
        M("one image, no batch", {"inputs": batch(h, w)}, f"{SHAPE} ({h}, {w}),"),
        M("batch of batches", {"inputs": batch(1, 2, h, w)}, f"{SHAPE} (1, 2, {h}, {w}),"),
        M("3 channels", {"inputs": batch(2, h, w, 3)}, f"{SHAPE} (2, {h}, {w}, 3),"),
        M("an empty image", {"inputs": [[]]}, f"{SHAPE} (1, 0),"),
        M("rows of two lengths", {"inputs": [batch(h, w), batch(h, w - 1)]}, RAGGED),
        M("images of two sizes", {"inputs": [batch(h, w), batch(h - 1, w)]}, RAGGED),
        M("an empty batch", {"inputs": []}, f"{HOLDS} no images"),
        M("booleans", {"inputs": batch(2, h, w, value=True)}, f"{HOLDS} true/false values,"),
        M("a boolean among pixels", images(True), f"{HOLDS} true/false values,"),
        M("strings", {"inputs": batch(2, h, w, value=str(PIXEL))}, f"{HOLDS} strings,"),
        M("a string among pixels", images("x"), f"{HOLDS} strings,"),
        M("a null among pixels", images(None), f"{HOLDS} nulls,"),
        M("an object among pixels", images({"v": PIXEL}), f"{HOLDS} objects,"),
        M("NaN", images(float("nan")), FLOATS),
        M("infinity", images(float("inf")), FLOATS),
        M("minus infinity", images(float("-inf")), FLOATS),
        M("a negative float", images(-0.5), FLOATS),
        M("1.5", images(1.5), FLOATS),
        M("1e30", images(1e30), FLOATS),
        M("256", images(256, value=INT_PIXEL), INTEGERS),
        M("-1", images(-1, value=INT_PIXEL), INTEGERS),
        M("10**30", images(10**30, value=INT_PIXEL), INTEGERS),
        M("no inputs key", {"images": two}, f'{KEYS} "images",'),
        M("input, not inputs", {"input": two}, f'{KEYS} "input",'),
        M("inputs and instances", {**good, "instances": two}, f'{KEYS}s "inputs", "instances",'),
        M("params", {**good, "params": {"k": 1}}, f'{KEYS}s "inputs", "params",'),
        M("a table", {"dataframe_split": {"data": [two]}}, f'{KEYS} "dataframe_split",'),
        M("no keys", {}, "The request's JSON has no keys,"),
        M("a long key", {"k" * 1000: two}, f'{KEYS} "kkkkkkkkkk'),
        M("records", {"inputs": [{"image": batch(h, w)}]}, f"{INPUTS} a list of objects,"),
        M("inputs an object", {"inputs": {"image": two}}, f"{INPUTS} an object,"),
        M("inputs a number", {"inputs": PIXEL}, f"{INPUTS} a number,"),
        M("inputs null", {"inputs": None}, f"{INPUTS} null,"),
        M("a list, not an object", batch(2, h, w), "The request's JSON is a list,"),
        M("nested 41 deep", {"inputs": deep}, "The request's lists nest deeper than 16"),
        M("not JSON", f"inputs: {PIXEL} {PIXEL}".encode(), "The request is not JSON"),
        M("not UTF-8", b"\xff\xfe" + str(PIXEL).encode(), "The request is not JSON"),
        M("CSV", f"{PIXEL},{PIXEL}\n".encode(), f"{ct} text/csv,", "text/csv", 415),
        M("no Content-Type", good, f"{ct} missing,", None, 415),
    ]  # fmt: skip


def assert_refused(case: Malformed, status: int, text: str, size: str) -> None:
    """An answer (its HTTP status and body) is the case's own sentence, and holds no part of
    the request: neither a pixel sent nor MLflow's "Failed to predict data '...'"."""
    assert status == case.status, (case.what, status, text[:300])
    message = json.loads(text)["message"]
    assert message.startswith(case.begins), (case.what, message)
    assert message.endswith(f"(this model takes {TAKES.format(size=size)})."), (case.what, message)
    assert str(PIXEL) not in text and str(INT_PIXEL) not in text, (case.what, text[:300])
    assert "Failed to" not in text and len(text) < 600, (case.what, text[:300])


def request_body(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


def test_every_malformed_request_is_refused_in_one_sentence(trained, tracking):
    """MLflow's own request handling (scoring_server.invocations, what `mlflow models serve`
    calls for each request), in this process: the served test's cases in a second."""
    from mlflow.exceptions import MlflowException
    from mlflow.pyfunc import scoring_server

    result, _, _ = trained
    model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")  # after the import: checked
    schema = model.metadata.get_input_schema()
    for case in malformed_requests(28, 28):
        with pytest.raises(MlflowException) as refused:
            scoring_server.invocations(request_body(case.body), case.content_type, model, schema)
        error = refused.value
        assert_refused(case, error.get_http_status_code(), error.serialize_as_json(), "28, 28")

    test = Evaluator(result.model, result.datamodule).evaluation("test")
    raw = raw_pixels(torch.from_numpy(test.images[:5]), "uint8")
    answers = []
    for pixels in (raw.tolist(), (raw / 255).tolist()):  # 0-255 or [0, 1]: the same images
        good = scoring_server.invocations(request_body({"inputs": pixels}), JSON, model, schema)
        assert good.status == 200, good.response[:300]
        answers.append(json.loads(good.response)["predictions"])
    assert answers[0] == answers[1]  # floats reach the model as floats, not cast to uint8
    assert [r["label"] for r in answers[0]] == list(test.predicted[:5])
    probs = [r["probabilities"] for r in answers[0]]
    np.testing.assert_allclose(probs, test.probs[:5], rtol=1e-6)


def test_only_a_denselab_models_requests_are_checked_first():
    from mlflow.exceptions import MlflowException

    sent = []

    def invocations(data, content_type, model, input_schema):
        sent.append(data)
        return "MLflow's answer"

    checked = checked_invocations(invocations)
    assert checked(b"not JSON", "text/csv", SimpleNamespace(_model_impl=object()), None) == (
        "MLflow's answer"
    )
    architecture = Architecture((8, 8), 10)
    preprocessing = Preprocessing((8, 8), tuple(str(d) for d in range(10)), "float32")
    ours = SimpleNamespace(
        _model_impl=PyfuncClassifier(Classifier(architecture.build(), architecture, preprocessing))
    )
    with pytest.raises(MlflowException, match=r"Content-Type is text/csv, not application/json"):
        checked(b"not JSON", "text/csv", ours, None)
    assert checked(b'{"inputs": [[[0.5]]]}', JSON, ours, None) == "MLflow's answer"
    assert sent == [b"not JSON", b'{"inputs": [[[0.5]]]}']


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
def test_a_served_model_answers_every_malformed_request_with_its_own_sentence(
    compose_cfg, tmp_path, store_uri
):
    import requests

    # digits: a float32 model of 8x8 images, served by a real `mlflow models serve`.
    cfg = compose_cfg(
        ["data=digits", f"tracking.uri={store_uri}", "trainer.max_epochs=1", "callbacks=none",
         "trainer.enable_progress_bar=false"]
    )  # fmt: skip
    result = train(cfg, tmp_path / "out")
    model_uri = f"runs:/{result.run_id}/model"
    images = result.datamodule.splits["test"].x[:5].numpy()
    wanted = load(model_uri, store_uri).probabilities(images)
    proc, url = start_model_server(model_uri, tmp_path, store_uri)

    def post(body: Any, content_type: Optional[str] = JSON) -> requests.Response:
        headers = {"Content-Type": content_type} if content_type else {}
        return requests.post(
            f"{url}/invocations", data=request_body(body), headers=headers, timeout=30
        )

    try:
        good = post({"inputs": images.tolist()})
        assert good.ok, good.text[:500]
        rows = good.json()["predictions"]
        assert [r["label"] for r in rows] == [int(k) for k in wanted.argmax(axis=1)]
        np.testing.assert_allclose([r["probabilities"] for r in rows], wanted, rtol=1e-6)
        cases = malformed_requests(8, 8)
        assert len(cases) >= 40
        for case in cases:
            answer = post(case.body, case.content_type)
            assert_refused(case, answer.status_code, answer.text, "8, 8")
        assert post({"inputs": images.tolist()}).json() == good.json()  # still serving
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
