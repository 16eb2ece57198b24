"""rerun=<run id> starts a new run with a logged run's settings and reproduces it on the CPU;
every run logs the code it ran on: package versions, and uncommitted changes as a patch."""

from __future__ import annotations

import subprocess

import pytest
from mlflow import MlflowClient

from denselab.errors import ConfigError
from denselab.tracking import code_state
from denselab.train import train


def settings(store_uri: str) -> list[str]:
    return [
        "data=digits",
        f"tracking.uri={store_uri}",
        "trainer.max_epochs=3",
        "trainer.enable_progress_bar=false",
        "callbacks=none",
        "tracking.log_model=false",
        "tracking.system_metrics=false",
    ]


def history(client: MlflowClient, run_id: str, key: str = "val/loss") -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def git(repo, *args: str) -> str:
    command = ["git", "-c", "user.email=t@example.org", "-c", "user.name=t", *args]
    return subprocess.run(command, cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def checkout(tmp_path):
    repo = tmp_path / "checkout"
    (repo / "src").mkdir(parents=True)
    (repo / "src" / "a.py").write_text("x = 1\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "first")
    return repo


def test_a_rerun_is_a_new_run_that_reproduces_the_original_on_the_cpu(
    compose_cfg, tmp_path, store_uri
):
    first = train(compose_cfg(settings(store_uri)), tmp_path / "a")
    overrides = [f"rerun={first.run_id}", f"tracking.uri={store_uri}"]
    again = train(compose_cfg(overrides), tmp_path / "b", overrides)  # nothing else given
    client = MlflowClient(store_uri)
    assert again.run_id != first.run_id
    run = client.get_run(again.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["rerun_of"] == first.run_id
    assert f"**Rerun of** run `{first.run_id}`" in run.data.tags["mlflow.note.content"]
    assert "rerun" not in run.data.params  # where the settings came from is a tag
    assert len(history(client, first.run_id)) == 3
    assert history(client, again.run_id) == history(client, first.run_id)  # exactly


@pytest.mark.parametrize(
    "extra, words",
    [
        (["optimizer.lr=0.5"], "rerun={id} cannot change optimizer.lr (from 0.01 to 0.5)"),
        (["resume=abc"], "rerun={id} and resume=abc ask for a new run and for continuing one"),
    ],
)
def test_a_rerun_that_would_be_another_run_is_refused_before_any_run(
    compose_cfg, tmp_path, store_uri, extra, words
):
    first = train(compose_cfg([*settings(store_uri), "trainer.max_epochs=1"]), tmp_path / "a")
    overrides = [f"rerun={first.run_id}", f"tracking.uri={store_uri}", *extra]
    with pytest.raises(ConfigError) as refused:
        train(compose_cfg(overrides), tmp_path / "b", overrides)
    assert words.format(id=first.run_id) in str(refused.value)
    client = MlflowClient(store_uri)
    assert len(client.search_runs([first_experiment(client)])) == 1


def test_a_rerun_of_no_such_run_says_so(compose_cfg, tmp_path, store_uri):
    train(compose_cfg([*settings(store_uri), "trainer.max_epochs=1"]), tmp_path / "a")
    overrides = ["rerun=0123456789abcdef", f"tracking.uri={store_uri}"]
    with pytest.raises(ConfigError, match="rerun=0123456789abcdef: there is no such run"):
        train(compose_cfg(overrides), tmp_path / "b", overrides)


def first_experiment(client: MlflowClient) -> str:
    return client.get_experiment_by_name("digits").experiment_id


def test_uncommitted_changes_are_a_patch_that_git_applies(checkout):
    assert code_state.uncommitted_changes(checkout) is None  # clean
    (checkout / "src" / "a.py").write_text("x = 2\n")
    (checkout / "src" / "new.py").write_text("y = 1\n")
    patch = code_state.uncommitted_changes(checkout / "src")  # from inside the checkout
    assert "+x = 2" in patch and "# untracked, not in this patch: src/new.py" in patch
    git(checkout, "checkout", "--", "src/a.py")
    (checkout / "p.patch").write_text(patch)
    git(checkout, "apply", "p.patch")
    assert (checkout / "src" / "a.py").read_text() == "x = 2\n"
    assert code_state.uncommitted_changes(checkout.parent) is None  # no checkout there


def test_a_run_from_a_dirty_checkout_logs_its_patch_and_versions(
    compose_cfg, tmp_path, store_uri, checkout, monkeypatch
):
    monkeypatch.setattr(code_state, "CODE_DIR", checkout)
    clean = train(compose_cfg([*settings(store_uri), "trainer.max_epochs=1"]), tmp_path / "a")
    (checkout / "src" / "a.py").write_text("x = 3\n")
    dirty = train(compose_cfg([*settings(store_uri), "trainer.max_epochs=1"]), tmp_path / "b")
    client = MlflowClient(store_uri)
    listed = {
        r: {a.path for a in client.list_artifacts(r, "code")} for r in (clean.run_id, dirty.run_id)
    }
    assert listed[clean.run_id] == {"code/versions.txt"}
    assert listed[dirty.run_id] == {"code/versions.txt", "code/uncommitted.patch"}
    run = client.get_run(dirty.run_id)
    assert run.data.tags["code_uncommitted"] == "true"
    assert "**Code**: uncommitted changes" in run.data.tags["mlflow.note.content"]
    patch = client.download_artifacts(dirty.run_id, "code/uncommitted.patch", str(tmp_path))
    assert "+x = 3" in open(patch).read()
    versions = client.download_artifacts(dirty.run_id, "code/versions.txt", str(tmp_path))
    versions = open(versions).read()
    assert "mlflow==" in versions and "torch==" in versions and versions.startswith("python 3.")
