"""The team setup: a real `mlflow server` on a real PostgreSQL, serving the runs' artifacts,
that denselab-train logs to over HTTP; and the one sentence a run ends with when the server
or the database is not there."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest
from conftest import only_run
from helpers import (
    PROMPT_S,
    metric_steps,
    mlflow_server,
    postgres_server,
    refused_port,
    run_cli,
    sweep_runs,
)

pytestmark = pytest.mark.slow

EPOCHS = 2


class TeamServer(NamedTuple):
    url: str  # what runs log to: tracking.uri=<url>
    store_uri: str  # the server's backend store, a PostgreSQL database
    artifacts: Path  # the server's --artifacts-destination


@pytest.fixture(scope="module")
def team_server(tmp_path_factory) -> Iterator[TeamServer]:
    """One PostgreSQL and one MLflow server for the whole module: starting them costs ~15 s.
    Each test logs to an experiment of its own, so tests (and parallel jobs) share it. As a
    team's server would, it answers only requests addressed to the name its users use."""
    folder = tmp_path_factory.mktemp("team")
    artifacts = folder / "art"
    with postgres_server(folder) as store_uri:
        with mlflow_server(
            folder,
            backend_store_uri=store_uri,
            artifacts_destination=artifacts,
            allowed_hosts="127.0.0.1:{port}",
        ) as url:
            yield TeamServer(url, store_uri, artifacts)


def train_args(mnist_dir: Path, url: str, experiment: str) -> list[str]:
    return [
        f"data.dir={mnist_dir}",
        "data.mirrors=[]",
        f"trainer.max_epochs={EPOCHS}",
        f"tracking.uri={url}",
        f"tracking.experiment_name={experiment}",
        "trainer.enable_progress_bar=false",
    ]


def test_a_run_logs_to_the_team_server_and_its_artifacts_come_back(
    team_server, mnist_dir, tmp_path
):
    work, downloads = tmp_path / "work", tmp_path / "downloads"
    work.mkdir()
    result = run_cli(train_args(mnist_dir, team_server.url, "team-one"), work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    client, run = only_run(team_server.url, "team-one")
    assert run.info.status == "FINISHED"
    for key in ("train/loss", "val/acc", "val/acc_best"):
        assert metric_steps(client, run.info.run_id, key) == list(range(EPOCHS)), key
    assert run.data.metrics["test/acc"] > 0.5
    # Served artifacts: the run holds a server URI, not a path on the machine that trained.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
    figures = [a.path for a in client.list_artifacts(run.info.run_id, "figures")]
    assert figures, [a.path for a in client.list_artifacts(run.info.run_id)]

    downloads.mkdir()
    for path in ("config.yaml", figures[0]):
        local = Path(client.download_artifacts(run.info.run_id, path, str(downloads)))
        assert local.is_file() and local.stat().st_size > 0, path
    assert "hidden_sizes" in (downloads / "config.yaml").read_text()
    # ...and they were stored by the server, in its artifact folder, not by the run.
    stored = list(team_server.artifacts.rglob(f"{run.info.run_id}/artifacts/config.yaml"))
    assert len(stored) == 1, sorted(team_server.artifacts.rglob("*"))[:20]
    assert not (work / "mlruns").exists()


def test_a_server_that_refuses_the_host_name_says_how_to_allow_it(team_server, tmp_path):
    # /health answers whatever the name; every other call is refused with a 403.
    uri = team_server.url.replace("127.0.0.1", "localhost")
    host = uri.split("//", 1)[1]
    result = run_cli(["data=digits", f"tracking.uri={uri}"], tmp_path, timeout=120)
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert result.returncode == 1 and len(errors) == 1, output[-3000:]
    assert f"refuses requests addressed to {host}" in errors[0]
    assert f"start it with `--allowed-hosts {host}`" in errors[0]
    assert "Traceback" not in output
    print(errors[0])


@pytest.mark.parametrize(
    "uri, sentence",
    [
        (
            "postgresql+psycopg://mlflow@127.0.0.1:{port}/x",
            "Cannot connect to the PostgreSQL database at {uri} (connection failed: ",
        ),
        ("http://127.0.0.1:{port}", "No MLflow server answers at {uri} (ConnectionError)"),
    ],
    ids=["postgresql", "http"],
)
def test_a_store_that_does_not_answer_ends_the_run_in_one_sentence_at_once(
    tmp_path, mnist_dir, uri, sentence
):
    with refused_port() as port:  # nothing listens there
        uri = uri.format(port=port)
        start = time.monotonic()
        result = run_cli(train_args(mnist_dir, uri, "nowhere"), tmp_path, timeout=120)
        seconds = time.monotonic() - start
    output = result.stdout + result.stderr
    print(f"{uri}: exit {result.returncode} after {seconds:.1f} s")
    print(output.strip().splitlines()[-1])

    assert result.returncode == 1, output[-3000:]
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1, output[-3000:]
    assert sentence.format(uri=uri) in errors[0]
    assert "leave tracking.uri unset to use ./mlruns" in errors[0]
    assert "Traceback" not in output and "retried" not in output
    # The console script's own start (torch, Lightning, MLflow imports) is most of this.
    assert seconds < PROMPT_S, output[-3000:]
    assert not (tmp_path / "mlruns").exists()


def test_a_parallel_sweep_logs_one_parent_and_its_children_to_the_team_server(
    team_server, mnist_dir, tmp_path
):
    work, downloads = tmp_path / "work", tmp_path / "downloads"
    work.mkdir()
    args = ["-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=4", "seed=1,2,3,4"]
    result = run_cli([*args, *train_args(mnist_dir, team_server.url, "team-sweep")], work)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    from mlflow import MlflowClient

    client = MlflowClient(team_server.url)
    (parent,), children = sweep_runs(client, "team-sweep")
    assert parent.info.status == "FINISHED"
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    downloads.mkdir()
    table = client.download_artifacts(parent.info.run_id, "tables/sweep_jobs.csv", str(downloads))
    assert len(Path(table).read_text().strip().splitlines()) == 1 + 4
    config = client.download_artifacts(children[0].info.run_id, "config.yaml", str(downloads))
    assert Path(config).stat().st_size > 0
    assert not (work / "mlruns").exists()
