"""What a sweep run again skips and what it runs, checked end to end with the real console
script: a job is its config and its data, only FINISHED jobs are skipped, a reused job is
listed as reused, ``tracking.skip_finished=false`` runs all anew, and parallel jobs share
the CPUs. (Apart from test_sweep.py so that the two test workers share the sweeps.)"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import run_cli, sweep_runs, write_image_table
from test_sweep import FAST, said, store, table_of

from denselab.training.threads import machine_cpus

pytestmark = pytest.mark.slow


def test_a_sweep_on_other_data_is_a_new_job_and_the_same_data_moved_is_not(tmp_path):
    first = tmp_path / "tables" / "a"
    write_image_table(first, n_train=80, n_valid=0, n_test=20)
    other = shutil.copytree(first, tmp_path / "tables" / "b")
    np.save(other / "images.npy", np.load(first / "images.npy")[:, :, ::-1].copy())  # flipped
    settings = ["-m", "data=image_table", "seed=1", *FAST[1:]]

    for folder in (first, other):
        result = run_cli([*settings, f"data.dir={folder}"], tmp_path)
        assert result.returncode == 0, said(result)
        assert "Skipped" not in said(result)
    client = store(tmp_path)
    _, children = sweep_runs(client, "image_table")
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
    digests = {c.data.tags["data_digest"] for c in children}
    assert len(digests) == 2  # two datasets, two jobs
    assert len({c.data.tags["config_hash"] for c in children}) == 2

    moved = first.rename(tmp_path / "moved")
    again = run_cli([*settings, f"data.dir={moved}"], tmp_path)
    assert again.returncode == 0, said(again)
    assert said(again).count("Skipped: the same config and data FINISHED") == 1
    parents, children_again = sweep_runs(client, "image_table")
    assert {c.info.run_id for c in children_again} == {c.info.run_id for c in children}
    assert len(parents) == 3


def test_a_rerun_runs_failed_jobs_anew_and_skips_only_finished_ones(tmp_path):
    command = ["-m", "optimizer.lr=0.1,1e6", *FAST]
    for attempt in (1, 2):
        result = run_cli(command, tmp_path)
        assert result.returncode == 1, said(result)  # the diverging job fails, both times
        assert said(result).count("Skipped: the same config and data FINISHED") == attempt - 1
    client = store(tmp_path)
    (parent,), children = sweep_runs(client)
    by_lr: dict[float, list] = {}
    for child in children:
        lr = float(json.loads(child.data.tags["swept_values"])["optimizer.lr"])
        by_lr.setdefault(lr, []).append(child)
    assert [c.info.status for c in by_lr[0.1]] == ["FINISHED"]  # run once, then skipped
    assert [c.info.status for c in by_lr[1e6]] == ["FAILED", "FAILED"]  # run again
    assert "lower the learning rate" in by_lr[1e6][0].data.tags["error"]
    assert parent.info.status == "FAILED"


def test_a_reused_job_is_listed_and_skip_finished_false_reruns_all(tmp_path):
    assert run_cli(["-m", "seed=1,2", *FAST], tmp_path).returncode == 0
    second = run_cli(["-m", "seed=2,3", *FAST], tmp_path)
    assert second.returncode == 0, said(second)
    assert said(second).count("Skipped: the same config and data FINISHED") == 1
    client = store(tmp_path)
    parents, children = sweep_runs(client)
    assert len(parents) == 2 and len(children) == 3
    later = max(parents, key=lambda p: p.info.start_time)
    seed_2 = next(c for c in children if c.data.params["seed"] == "2")
    assert seed_2.data.tags["mlflow.parentRunId"] != later.info.run_id
    assert later.info.run_id in seed_2.data.tags["also_in_sweeps"].split(",")
    rows = {r["seed"]: r for r in table_of(client, later.info.run_id, tmp_path)}
    assert rows["2"]["reused"] is True and rows["3"]["reused"] is False
    assert rows["2"]["run_id"] == seed_2.info.run_id
    assert "reused" in later.data.tags["mlflow.note.content"]

    anew = run_cli(["-m", "seed=2,3", "tracking.skip_finished=false", *FAST], tmp_path)
    assert anew.returncode == 0, said(anew)
    assert "Skipped" not in said(anew)
    parents, children = sweep_runs(client)
    assert len(parents) == 3 and len(children) == 5
    newest = max(parents, key=lambda p: p.info.start_time)
    own = [c for c in children if c.data.tags["mlflow.parentRunId"] == newest.info.run_id]
    assert sorted(c.data.params["seed"] for c in own) == ["2", "3"]
    assert {c.info.status for c in own} == {"FINISHED"}


def test_parallel_jobs_train_with_their_share_of_the_cpus(tmp_path):
    # 10.4 million multiply-adds a step: a run alone takes every CPU (denselab.training.threads).
    big = ["model.hidden_sizes=[4400]", "trainer.max_epochs=1", *FAST[2:], "data=digits"]
    alone = run_cli([*big, "seed=1"], tmp_path)
    assert alone.returncode == 0, said(alone)
    swept = run_cli(["-m", "hydra/launcher=parallel", "seed=2,3", *big], tmp_path)
    assert swept.returncode == 0, said(swept)
    client = store(tmp_path)
    (parent,), children = sweep_runs(client)
    (single,) = [
        r for r in client.search_runs([parent.info.experiment_id]) if "sweep" not in r.data.tags
        and "mlflow.parentRunId" not in r.data.tags
    ]
    cpus = machine_cpus()
    at_once = min(2, cpus)
    assert single.data.tags["torch_threads"] == str(cpus)
    assert [c.data.tags["torch_threads"] for c in children] == [str(max(1, cpus // at_once))] * 2


def test_a_sweep_parent_names_the_job_that_saw_other_data(tmp_path):
    first = tmp_path / "tables" / "a"
    write_image_table(first, n_train=80, n_valid=0, n_test=20)
    other = shutil.copytree(first, tmp_path / "tables" / "other")
    images = np.load(first / "images.npy")
    images[0, 0, 0] = 255 - images[0, 0, 0]  # one pixel of one image
    np.save(other / "images.npy", images)
    sweep = ["-m", "data=image_table", "seed=1", *FAST[1:], f"data.dir={first},{other}"]
    result = run_cli(sweep, tmp_path)
    assert result.returncode == 0, said(result)

    (parent,), children = sweep_runs(store(tmp_path), "image_table")
    names = {c.data.tags["swept_values"].count("other"): c.info.run_name for c in children}
    note = parent.data.tags["mlflow.note.content"]
    assert parent.data.tags["data"] == "differs"
    line = next(x for x in note.splitlines() if x.startswith("Not all jobs saw the same data"))
    # One split holds the changed image: its two digests, each job's named apart.
    assert line.count(f"{names[0]} | {names[1]}") + line.count(f"{names[1]} | {names[0]}") == 1
