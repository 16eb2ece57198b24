"""The team server with access control: a real `mlflow server --app-name basic-auth`, its
users made through its REST API, and denselab-train as its client. A refused run ends in one
sentence (missing or wrong credentials, a user without EDIT on the experiment) and leaves
nothing behind; a run of a user with EDIT finishes, and the password is nowhere it wrote."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest
import requests
from helpers import mlflow_server, run_cli

from denselab.errors import TrackingError
from denselab.tracking.store import (
    CREDENTIALS_FILE,
    HTTP_WAITS,
    hide_passwords,
    open_store,
    refusal,
)

pytestmark = pytest.mark.slow

ADMIN, ADMIN_PASSWORD = "admin", "adm1n-" + secrets.token_hex(8)
WRITER, WRITER_PASSWORD = "writer", "wr1ter-" + secrets.token_hex(8)
READER, READER_PASSWORD = "reader", "r3ader-" + secrets.token_hex(8)
EXPERIMENT = "team-shared"  # the admin's: WRITER may EDIT it, READER only READ it
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


class AuthServer(NamedTuple):
    url: str
    experiment_id: str  # EXPERIMENT's


def api(url: str, endpoint: str, method: str = "POST", version: str = "2.0", **body) -> dict:
    """One call to the server's REST API as its admin."""
    answer = requests.request(
        method,
        f"{url}/api/{version}/mlflow/{endpoint}",
        json=body if method == "POST" else None,
        params=body if method == "GET" else None,
        auth=(ADMIN, ADMIN_PASSWORD),
        timeout=30,
    )
    assert answer.ok, f"{endpoint}: {answer.status_code} {answer.text[:500]}"
    return answer.json() if answer.text.strip() else {}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory) -> Iterator[AuthServer]:
    """One basic-auth server for the module (it starts in ~15 s): its users and permissions
    in a sqlite file of its own, new users may READ every experiment by default."""
    folder = tmp_path_factory.mktemp("auth")
    config = folder / "basic_auth.ini"
    config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"
        f"database_uri = sqlite:///{folder / 'basic_auth.db'}\n"
        f"admin_username = {ADMIN}\n"
        f"admin_password = {ADMIN_PASSWORD}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # Each request's password check (PBKDF2) costs the server CPU time; a run makes
        # hundreds of requests, so checks are cached for a minute (users never change here).
        "auth_cache_ttl_seconds = 60\n"
    )
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
    }
    with mlflow_server(folder, app_name="basic-auth", env=env) as url:
        for user, password in ((WRITER, WRITER_PASSWORD), (READER, READER_PASSWORD)):
            api(url, "users/create", username=user, password=password)
        experiment_id = api(url, "experiments/create", name=EXPERIMENT)["experiment_id"]
        # MLflow 3.18 grants a user a permission on one resource here; the per-experiment
        # route of earlier versions (/api/2.0/mlflow/experiments/permissions/create) is gone.
        for user, permission in ((WRITER, "EDIT"), (READER, "READ")):
            api(
                url,
                "users/permissions/grant",
                version="3.0",
                username=user,
                resource_type="experiment",
                resource_id=experiment_id,
                permission=permission,
            )
        yield AuthServer(url, experiment_id)


@pytest.fixture(autouse=True)
def no_credentials_of_this_machine(monkeypatch, tmp_path) -> None:
    """The runs get only the credentials a test gives them: none from this process's
    environment, none from a ~/.mlflow/credentials of this machine."""
    if Path(CREDENTIALS_FILE).expanduser().exists():  # the console script would read it
        pytest.skip(f"this machine has {CREDENTIALS_FILE}, which every run here would use")
    for name in (*CREDENTIALS, "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    for name, value in HTTP_WAITS.items():  # open_store sets them: gone after the test
        monkeypatch.setenv(name, os.environ.get(name, value))
    monkeypatch.setattr(
        "mlflow.utils.credentials._get_credentials_path", lambda: str(tmp_path / "none")
    )


def everything(url: str) -> tuple[list[str], list[dict]]:
    """The server's experiments (names) and runs, as its admin sees them."""
    experiments = api(url, "experiments/search", max_results=1000)["experiments"]
    ids = [e["experiment_id"] for e in experiments]
    runs = api(url, "runs/search", experiment_ids=ids, max_results=1000).get("runs", [])
    return sorted(e["name"] for e in experiments), runs


def train_args(url: str) -> list[str]:
    return [
        "data=digits",
        "trainer.max_epochs=1",
        "callbacks=none",
        "trainer.enable_progress_bar=false",
        f"tracking.uri={url}",
        f"tracking.experiment_name={EXPERIMENT}",
    ]


@pytest.mark.parametrize(
    "credentials, sentence",
    [
        (
            {},
            "The MLflow server at {url} refused the credentials (none were given): set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
        ),
        (
            {"MLFLOW_TRACKING_USERNAME": WRITER, "MLFLOW_TRACKING_PASSWORD": "not-" + WRITER},
            f"The MLflow server at {{url}} refused the credentials (user {WRITER}): set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
        ),
        (
            {"MLFLOW_TRACKING_USERNAME": READER, "MLFLOW_TRACKING_PASSWORD": READER_PASSWORD},
            f"User {READER} may not write to experiment {EXPERIMENT} on {{url}}: ask the "
            "server's admin for EDIT permission.",
        ),
    ],
    ids=["no-credentials", "wrong-password", "read-only"],
)
def test_a_refused_run_ends_in_one_sentence_and_leaves_nothing(
    auth_server, tmp_path, credentials, sentence
):
    before = everything(auth_server.url)
    start = time.monotonic()
    result = run_cli(train_args(auth_server.url), tmp_path, timeout=120, env=credentials)
    seconds = time.monotonic() - start
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    print(f"exit {result.returncode} after {seconds:.1f} s: {errors}")

    assert result.returncode == 1, output[-3000:]
    assert len(errors) == 1, output[-3000:]
    assert sentence.format(url=auth_server.url) in errors[0]
    assert "Traceback" not in output
    for secret in credentials.values():
        if secret != credentials.get("MLFLOW_TRACKING_USERNAME"):
            assert secret not in output
    # Nothing half-written: no experiment, no run (so none RUNNING), on the server or here.
    assert everything(auth_server.url) == before
    assert not (tmp_path / "mlruns").exists()


def test_a_user_with_edit_runs_and_the_password_is_nowhere_it_wrote(
    auth_server, tmp_path, monkeypatch
):
    work, downloads = tmp_path / "work", tmp_path / "downloads"
    work.mkdir()
    writer = {"MLFLOW_TRACKING_USERNAME": WRITER, "MLFLOW_TRACKING_PASSWORD": WRITER_PASSWORD}
    result = run_cli(train_args(auth_server.url), work, timeout=300, env=writer)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]

    from mlflow import MlflowClient

    for name, value in writer.items():  # read back as the writer, who may
        monkeypatch.setenv(name, value)
    client = MlflowClient(auth_server.url)
    (run,) = client.search_runs([auth_server.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params and run.data.metrics["test/acc"] > 0.2
    downloads.mkdir()
    client.download_artifacts(run.info.run_id, "", str(downloads))
    assert (downloads / "config.yaml").is_file()
    assert f"uri: {auth_server.url}" in (downloads / "config.yaml").read_text()

    secret = WRITER_PASSWORD.encode()
    written = [p for root in (work, downloads) for p in root.rglob("*") if p.is_file()]
    assert any(p.parent.name == ".hydra" for p in written)  # the outputs/ folder is there
    assert [p for p in written if secret in p.read_bytes()] == []
    recorded = {**run.data.params, **run.data.tags}
    assert [k for k, v in recorded.items() if WRITER_PASSWORD in str(v)] == []
    assert WRITER_PASSWORD not in output
    print(f"searched {len(written)} files, {len(recorded)} params and tags")


def test_a_tracking_uri_that_holds_credentials_is_refused_without_showing_them(auth_server):
    host = auth_server.url.split("//", 1)[1]
    with pytest.raises(TrackingError) as caught:
        open_store(f"http://{WRITER}:{WRITER_PASSWORD}@{host}")
    said = str(caught.value)
    assert WRITER_PASSWORD not in said
    assert f"tracking.uri=http://{WRITER}:***@{host} holds credentials" in said
    assert f"(tracking.uri={auth_server.url})" in said
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in said


def test_the_client_reads_the_credentials_file(auth_server, tmp_path, monkeypatch):
    """~/.mlflow/credentials, as MLflow's client reads it: the refusal names its user."""
    path = tmp_path / "credentials"
    path.write_text(
        f"[mlflow]\nmlflow_tracking_username = {READER}\n"
        f"mlflow_tracking_password = {READER_PASSWORD}\n"
    )
    monkeypatch.setattr("mlflow.utils.credentials._get_credentials_path", lambda: str(path))
    client = open_store(auth_server.url)  # READ: the user may look
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as caught:
        client.create_run(auth_server.experiment_id)
    said = refusal(caught.value, auth_server.url, EXPERIMENT)
    assert said == (
        f"User {READER} may not write to experiment {EXPERIMENT} on {auth_server.url}: ask "
        "the server's admin for EDIT permission."
    )


def test_passwords_are_masked_in_any_text():
    text = "seed=1 tracking.uri=postgresql+psycopg://mlflow:s3cret@db:5432/runs data.dir=/a:b@c"
    assert hide_passwords(text) == (
        "seed=1 tracking.uri=postgresql+psycopg://mlflow:***@db:5432/runs data.dir=/a:b@c"
    )
    assert hide_passwords("http://u:p%40w@h:5000/x") == "http://u:***@h:5000/x"
    assert hide_passwords("http://h:5000/a@b") == "http://h:5000/a@b"
