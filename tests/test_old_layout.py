"""Nothing a user has breaks with the subpackages: a store made by the flat layout (b573c0a,
tests/fixtures/old_layout, see its make.py) still resumes its stopped run and loads its
model, after being moved to another folder as a store copied to another machine is."""

from __future__ import annotations

import importlib.util
import json
import sqlite3
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import metric_steps, run_cli
from omegaconf import OmegaConf

FIXTURE = Path(__file__).parent / "fixtures" / "old_layout"
FACTS = json.loads((FIXTURE / "facts.json").read_text())
# The flat layout's modules that a logged config's _target_s (and hydra's callbacks) name.
OLD_MODULES = ("model", "run_logger", "checkpoints", "callbacks", "hydra_callbacks", "cluster")


def relocate(db: Path, old: str, new: str) -> int:
    """Every ``old`` in every text column of every table of the sqlite ``db`` replaced by
    ``new``, as moving a store to another folder or machine needs (MLflow keeps absolute
    artifact locations; the runs' tags name folders too). Returns the cells changed."""
    changed = 0
    with sqlite3.connect(db) as con:
        tables = [
            name
            for (name,) in con.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        for table in tables:
            for column in con.execute(f'PRAGMA table_info("{table}")').fetchall():
                name, kind = column[1], (column[2] or "").upper()
                if not any(word in kind for word in ("CHAR", "TEXT", "CLOB")):
                    continue
                changed += con.execute(
                    f'UPDATE "{table}" SET "{name}" = REPLACE("{name}", ?, ?) '
                    f'WHERE "{name}" LIKE ?',
                    (old, new, f"%{old}%"),
                ).rowcount
    return changed


def leftover(db: Path, old: str) -> list[tuple[str, str]]:
    """(table, column) pairs whose text still names ``old``."""
    found = []
    with sqlite3.connect(db) as con:
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'"):
            for column in con.execute(f'PRAGMA table_info("{table}")').fetchall():
                name = column[1]
                hit = con.execute(
                    f'SELECT 1 FROM "{table}" WHERE CAST("{name}" AS TEXT) LIKE ? LIMIT 1',
                    (f"%{old}%",),
                ).fetchone()
                if hit:
                    found.append((table, name))
    return found


def old_store(folder: Path) -> Path:
    """The fixture's store extracted into ``folder`` (``folder/mlruns``) and relocated there;
    returns the path of its mlflow.db."""
    with tarfile.open(FIXTURE / "store.tar.gz") as tar:
        tar.extractall(folder, filter="data")
    db = folder / "mlruns" / "mlflow.db"
    assert relocate(db, FACTS["root"], str(folder)) > 0
    assert leftover(db, FACTS["root"]) == []
    return db


@pytest.fixture
def store(tmp_path) -> Path:
    return old_store(tmp_path / "store")


def digit_images() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().images[:40] / 16.0).astype("float32")


def targets(config: Any) -> list[str]:
    """Every ``_target_`` in a plain container, at any depth."""
    if isinstance(config, dict):
        own = [config["_target_"]] if "_target_" in config else []
        return own + [t for key, v in config.items() if key != "_target_" for t in targets(v)]
    if isinstance(config, list):
        return [t for v in config for t in targets(v)]
    return []


def test_the_relocated_store_points_only_into_its_new_folder(store):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    folder = store.parent.parent
    for run_id in (FACTS["finished_run"], FACTS["stopped_run"]):
        uri = client.get_run(run_id).info.artifact_uri
        assert uri.startswith(folder.as_uri()) and Path(uri[len("file://") :]).is_dir(), uri


def test_the_stopped_runs_logged_targets_resolve_to_classes_of_today(store):
    from hydra.utils import get_class

    from denselab.tracking.resume import MOVED_TARGETS, current_targets

    logged = store.parent / "digits" / FACTS["stopped_run"] / "artifacts" / "config.yaml"
    config = OmegaConf.to_container(OmegaConf.load(logged), resolve=False)
    old = targets(config)
    # What the store holds: the flat layout's names, which no longer import.
    assert {"denselab.model.MLPClassifier", "denselab.run_logger.RunLogger",
            "denselab.checkpoints.RunCheckpoint"} <= set(old)  # fmt: skip
    for name in ("denselab.model", "denselab.run_logger", "denselab.checkpoints"):
        assert importlib.util.find_spec(name) is None, name
    now = targets(current_targets(config))
    assert len(now) == len(old)
    for target in now:
        assert isinstance(get_class(target), type), target

    assert {old.rstrip(".") for old in MOVED_TARGETS} == {f"denselab.{m}" for m in OLD_MODULES}
    for old_prefix, new_prefix in MOVED_TARGETS.items():
        assert importlib.util.find_spec(new_prefix.rstrip(".")) is not None, old_prefix


@pytest.mark.slow
def test_the_finished_runs_model_loads_and_predicts_as_it_did(store):
    import mlflow

    import denselab

    uri, model = f"sqlite:///{store}", f"runs:/{FACTS['finished_run']}/model"
    images = digit_images()
    labels = denselab.load(model, uri).predict(images)["label"]
    assert [int(v) for v in labels] == FACTS["labels"]

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        pyfunc = mlflow.pyfunc.load_model(model)
        served = pyfunc.predict(images)
    finally:
        mlflow.set_tracking_uri(before)
    assert pyfunc.metadata.flavors["python_function"]["loader_module"] == "denselab.serving"
    assert [int(v) for v in served["label"]] == FACTS["labels"]


# The stopped run's epochs (make.py): resume trains it to the last one.
EPOCHS = 30


@pytest.mark.slow
def test_the_stopped_run_resumes_with_the_console_script(store, tmp_path):
    from mlflow import MlflowClient

    stopped = FACTS["stopped_run"]
    uri = f"sqlite:///{store}"
    client = MlflowClient(uri)
    before = client.get_run(stopped)
    assert before.info.status == "KILLED"
    assert before.data.params["trainer.max_epochs"] == str(EPOCHS)
    assert metric_steps(client, stopped, "val/acc") == list(range(FACTS["stopped_epochs"]))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    resumed = run_cli(
        [f"resume={stopped}", f"tracking.uri={uri}", "trainer.enable_progress_bar=false"],
        elsewhere,
    )
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    # Its checkpoint folder is gone with the machine that made it: it goes on from the copy
    # the old layout logged to the run (resume/last.ckpt), a checkpoint of that layout.
    assert "Continuing from the checkpoint copy logged to the run" in output, output[-4000:]
    run = client.get_run(stopped)
    assert run.info.run_id == stopped and run.info.status == "FINISHED"
    assert metric_steps(client, stopped, "val/acc") == list(range(EPOCHS))
    assert run.data.tags["resumable"] == "false"
    assert run.data.params["trainer.max_epochs"] == str(EPOCHS)
