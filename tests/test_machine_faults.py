"""Faults of the machine end in one sentence, with the real console script and real file
systems: a disk that fills up during a run (a small tmpfs), a read-only store and output
folder (`chattr +i`, which binds root too), a data folder a download cannot write. The run
ends KILLED and resumable, never RUNNING, and the store stays intact."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
from helpers import metric_steps, run_cli, unavailable
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

QUICK = ["data=digits", "trainer.enable_progress_bar=false", "trainer.max_epochs=3"]


def said(result) -> str:
    return result.stdout + result.stderr


def root_command(*args: str) -> None:
    done = subprocess.run(list(args), capture_output=True, text=True)
    if done.returncode != 0:
        unavailable(f"`{' '.join(args)}` failed ({done.stderr.strip()})", "run the tests as root")


@contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir()
    root_command("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


@contextmanager
def immutable(path: Path) -> Iterator[Path]:
    root_command("chattr", "+i", str(path))
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


def intact(db: Path) -> bool:
    with sqlite3.connect(db) as con:
        return con.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_a_full_disk_ends_the_run_killed_in_one_sentence_and_it_continues_once_freed(tmp_path):
    # The store (~1 MB once made) and the run's outputs on one 1.6 MB file system: the run
    # starts, then its figures fill the disk.
    with small_disk(tmp_path / "disk", "1600k") as disk:
        full = run_cli(QUICK, disk)
        assert full.returncode == 1, said(full)[-4000:]
        assert "No space left on the device of" in said(full)
        assert "Traceback" not in said(full) and "Logging error" not in said(full)
        db = disk / "mlruns" / "mlflow.db"
        assert intact(db)
        client = MlflowClient(f"sqlite:///{db}")
        (run,) = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
        assert run.info.status == "KILLED" and run.data.tags["resumable"] == "true"
        assert f"resume={run.info.run_id}" in said(full)
        assert not list(disk.glob("mlruns/.denselab-reserve-*"))  # given back

        root_command("mount", "-o", "remount,size=30m", str(disk))
        again = run_cli(["resume=last", "data=digits"], disk)
        assert again.returncode == 0, said(again)[-4000:]
        done = client.get_run(run.info.run_id)
        assert done.info.status == "FINISHED" and intact(db)
        assert metric_steps(client, run.info.run_id, "val/acc") == [0, 1, 2]


def test_a_read_only_store_is_one_sentence_and_nothing_is_written(tmp_path, migrated_store):
    db = tmp_path / "mlruns" / "mlflow.db"
    db.parent.mkdir()
    shutil.copyfile(migrated_store, db)
    client = MlflowClient(f"sqlite:///{db}")
    earlier = client.create_run(client.create_experiment("digits")).info.run_id
    client.set_terminated(earlier, "FINISHED")
    with immutable(db):
        refused = run_cli([*QUICK, "trainer.max_epochs=1", "callbacks=none"], tmp_path)
    assert refused.returncode == 1
    assert f"{db} cannot be written (attempt to write a readonly database)" in said(refused)
    assert "Traceback" not in said(refused)
    runs = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert [r.info.run_id for r in runs] == [earlier] and intact(db)


def test_an_output_folder_that_cannot_be_written_is_one_sentence(tmp_path):
    start = tmp_path / "start"
    start.mkdir()
    with immutable(start):
        refused = run_cli(QUICK, start)
        swept = run_cli(["-m", "seed=1,2", *QUICK], start)
    assert refused.returncode == 1 and swept.returncode == 1
    assert f"The run's output folder {start / 'outputs'} cannot be written" in said(refused)
    assert "hydra.sweep.dir=<folder>" in said(swept)
    assert "Traceback" not in said(refused) + said(swept)
    assert list(start.iterdir()) == []


def test_a_data_folder_a_download_cannot_write_is_one_sentence(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with immutable(data):
        refused = run_cli(["data=mnist", f"data.dir={data}", "data.mirrors=[http://127.0.0.1:9/]",
                           "trainer.max_epochs=1"], tmp_path)
    assert refused.returncode == 1
    assert f"are not in {data}, which cannot be written to download them" in said(refused)
    assert "Traceback" not in said(refused) and not (tmp_path / "mlruns").exists()
