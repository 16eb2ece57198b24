"""The MLflow side: stores, experiments, run names, params, and how runs end."""

from __future__ import annotations

import time

import pytest
from mlflow import MlflowClient

from denselab.errors import TrackingError
from denselab.tracking.params import flatten
from denselab.tracking.runs import run_name, run_status
from denselab.tracking.store import get_or_create_experiment, open_store


def test_default_store_is_sqlite_under_the_start_dir(compose_cfg, tmp_path, monkeypatch):
    from denselab.tracking.runs import tracking_uri

    monkeypatch.chdir(tmp_path)
    assert tracking_uri(compose_cfg()) == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert tracking_uri(compose_cfg(["tracking.uri=http://h:5000"])) == "http://h:5000"


def test_file_store_is_refused_with_the_fix(tmp_path):
    with pytest.raises(TrackingError, match="file store, which MLflow 3 no longer accepts"):
        open_store(f"file://{tmp_path}")


def test_a_database_that_does_not_answer_is_named_at_once_without_its_password():
    from helpers import PROMPT_S, refused_port

    # MLflow alone reconnects for ~100 s, then raises SQLAlchemy's error with a traceback.
    with refused_port() as port:
        uri = f"postgresql+psycopg://mlflow:s3cret@127.0.0.1:{port}/runs"
        start = time.monotonic()
        with pytest.raises(TrackingError) as caught:
            open_store(uri)
    assert time.monotonic() - start < PROMPT_S  # not MLflow's ~100 s of reconnecting
    message = str(caught.value)
    assert message.startswith("Cannot connect to the PostgreSQL database at postgresql+psycopg:")
    assert "mlflow:***@127.0.0.1" in message and "s3cret" not in message
    assert "Connection refused" in message


def test_a_missing_database_driver_names_the_install():
    with pytest.raises(TrackingError, match=r"pip install 'denselab\[server\]'"):
        open_store("postgresql+nosuchdriver://mlflow@127.0.0.1:5432/runs")


def test_experiment_is_created_once_and_restored_if_deleted(store_uri):
    client = open_store(store_uri)
    first = get_or_create_experiment(client, "mnist")
    assert get_or_create_experiment(client, "mnist") == first
    client.delete_experiment(first)
    assert get_or_create_experiment(client, "mnist") == first
    assert client.get_experiment(first).lifecycle_stage == "active"


def test_run_name_says_what_ran(compose_cfg):
    assert run_name(compose_cfg()) == "mnist-mlp[128]-sgd"
    assert run_name(compose_cfg(["experiment=course_multinomial"])) == "mnist-mlp[]-rmsprop"
    cfg = compose_cfg(["data=digits", "model.hidden_sizes=[64,32]", "optimizer=adam"])
    assert run_name(cfg) == "digits-mlp[64,32]-adam"
    assert run_name(compose_cfg(["tracking.run_name=mine"])) == "mine"


def test_flatten_dots_nested_keys():
    flat = flatten({"model": {"hidden_sizes": [128], "dropout": 0.1}, "seed": 1})
    assert flat == {"model.hidden_sizes": "[128]", "model.dropout": 0.1, "seed": 1}


@pytest.mark.parametrize(
    "raised, status",
    [
        (None, "FINISHED"),
        (ValueError("boom"), "FAILED"),
        (KeyboardInterrupt(), "KILLED"),
        (SystemExit(1), "KILLED"),
    ],
)
def test_every_run_ends_in_a_final_state(store_uri, raised, status):
    client = open_store(store_uri)
    run_id = client.create_run(get_or_create_experiment(client, "x")).info.run_id
    try:
        with run_status(client, run_id):
            if raised is not None:
                raise raised
    except BaseException as err:  # noqa: BLE001 - re-raised exactly as given
        assert err is raised
    else:
        assert raised is None, "run_status swallowed the exception"
    assert MlflowClient(store_uri).get_run(run_id).info.status == status
