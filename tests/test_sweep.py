"""Sweeps end to end, with the real console script: a parent run per multirun and its jobs
as children, the summary, reruns that finish rather than redo, and bad input. The Optuna
search: test_search.py."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest
from helpers import (
    run_cli,
    start_cli,
    stop_and_time,
    sweep_runs,
    wait_for_file,
)
from mlflow import MlflowClient

from denselab.training.threads import machine_cpus

pytestmark = pytest.mark.slow

FAST = [
    "data=digits",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "callbacks=none",
]


def store(tmp_path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")


def table_of(client: MlflowClient, run_id: str, tmp_path) -> list[dict]:
    path = client.download_artifacts(run_id, "tables/sweep_jobs.json", str(tmp_path))
    data = json.loads(open(path).read())
    return [dict(zip(data["columns"], row)) for row in data["data"]]


def most_at_once(runs) -> int:
    events = sorted(
        [(r.info.start_time, 1) for r in runs] + [(r.info.end_time, -1) for r in runs],
        key=lambda e: (e[0], e[1]),
    )
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def said(result) -> str:
    return result.stdout[-4000:] + result.stderr[-4000:]


def test_parallel_sweep_is_one_parent_with_its_children_and_a_rerun_runs_nothing_new(tmp_path):
    command = ["-m", "hydra/launcher=parallel", "seed=1,2,3,4", *FAST]
    first = run_cli(command, tmp_path)
    assert first.returncode == 0, said(first)
    client = store(tmp_path)
    (parent,), children = sweep_runs(client)
    assert parent.info.status == "FINISHED"
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    # Names say what differs; the seed is the swept setting.
    assert sorted(c.info.run_name for c in children) == [
        f"seed={s} digits-mlp[128]-sgd" for s in (1, 2, 3, 4)
    ]
    # As many jobs at once as there are CPUs (the preset's default), and no more.
    assert most_at_once(children) == min(4, machine_cpus())

    rows = table_of(client, parent.info.run_id, tmp_path)
    assert sorted(r["seed"] for r in rows) == ["1", "2", "3", "4"]
    assert all(r["status"] == "FINISHED" and r["params_total"] == 9610 for r in rows)
    best = max(children, key=lambda c: c.data.metrics["val/acc_best"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert best.data.tags.get("best_in_sweep") == parent.info.run_id
    # The seed alone is swept: the parent scores the one setting by its seeds' mean.
    mean = np.mean([c.data.metrics["val/acc_best"] for c in children])
    assert parent.data.metrics["val/acc_best"] == pytest.approx(mean)
    assert parent.data.tags["best_setting_seeds"] == "4"
    assert parent.data.tags["jobs"] == "4 FINISHED" and "jobs/finished" not in parent.data.metrics
    figures = [a.path for a in client.list_artifacts(parent.info.run_id, "figures")]
    assert figures == ["figures/sweep_by_setting.png"]
    assert "hydra/launcher=parallel seed=1,2,3,4" in parent.data.tags["command"]
    assert "4 FINISHED" in parent.data.tags["mlflow.note.content"]

    again = run_cli(command, tmp_path)
    assert again.returncode == 0, said(again)
    assert said(again).count("Skipped: the same config and data FINISHED") == 4
    (parent_again,), children_again = sweep_runs(client)
    assert parent_again.info.run_id == parent.info.run_id
    assert parent_again.info.status == "FINISHED"
    assert {c.info.run_id for c in children_again} == {c.info.run_id for c in children}


def test_a_sweep_over_seeds_judges_each_setting_by_its_mean(tmp_path):
    result = run_cli(["-m", "optimizer.lr=0.01,0.05", "seed=1,2,3", *FAST], tmp_path)
    assert result.returncode == 0, said(result)
    client = store(tmp_path)
    (parent,), children = sweep_runs(client)
    by_lr: dict[str, list] = {}
    for child in children:
        lr = json.loads(child.data.tags["swept_values"])["optimizer.lr"]
        by_lr.setdefault(lr, []).append(child)
    path = client.download_artifacts(
        parent.info.run_id, "tables/sweep_settings.json", str(tmp_path)
    )
    data = json.loads(open(path).read())
    settings = [dict(zip(data["columns"], row)) for row in data["data"]]
    assert len(settings) == 2
    for setting in settings:  # each as recomputed from its children
        runs = by_lr[setting["optimizer.lr"]]
        for score in ("val/acc_best", "test/acc"):
            values = np.array([r.data.metrics[score] for r in runs])
            assert setting["n"] == 3
            assert setting[f"{score} mean"] == pytest.approx(values.mean())
            assert setting[f"{score} std"] == pytest.approx(values.std(ddof=1))
    means = {lr: np.mean([r.data.metrics["val/acc_best"] for r in rs]) for lr, rs in by_lr.items()}
    best = max(means, key=means.get)
    assert parent.data.tags["best_setting"] == f"optimizer.lr={best}"
    assert set(parent.data.tags["best_setting_runs"].split(",")) == {
        r.info.run_id for r in by_lr[best]
    }
    assert parent.data.metrics["val/acc_best"] == pytest.approx(means[best])
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith(f"**Best setting: optimizer.lr={best}**")
    assert parent.data.tags["best_run_id"] in parent.data.tags["best_setting_runs"]


def test_a_failing_job_does_not_stop_the_others_and_the_summary_shows_it(tmp_path):
    result = run_cli(["-m", "optimizer.lr=0.1,-1,0.05", *FAST], tmp_path)
    assert result.returncode == 1, said(result)
    assert "optimizer.lr=-1" in said(result)
    client = store(tmp_path)
    (parent,), children = sweep_runs(client)
    by_lr = {json.loads(c.data.tags["swept_values"])["optimizer.lr"]: c for c in children}
    assert by_lr["0.1"].info.status == by_lr["0.05"].info.status == "FINISHED"
    assert by_lr["-1"].info.status == "FAILED"
    assert "optimizer.lr" in by_lr["-1"].data.tags["error"]
    # The console names each job as the runs table does, not all by the same base name.
    console = result.stdout + result.stderr
    for lr in ("0.1", "0.05"):
        run = by_lr[lr]
        assert f"MLflow run {run.info.run_id} (lr={lr} digits-mlp[128]-sgd)" in console
        assert f"lr={lr} digits-mlp[128]-sgd: 9,610 parameters" in console
    assert parent.info.status == "FAILED"
    assert parent.data.tags["jobs"] == "1 FAILED, 2 FINISHED"
    rows = table_of(client, parent.info.run_id, tmp_path)
    assert sorted(r["status"] for r in rows) == ["FAILED", "FINISHED", "FINISHED"]


def test_a_stopped_sweep_ends_killed_and_running_it_again_finishes_the_same_runs(tmp_path):
    command = ["-m", "seed=1", "trainer.max_epochs=25", *FAST[2:], "data=digits"]
    proc = start_cli(command, tmp_path)
    try:
        wait_for_file("multirun/*/*/0/checkpoints/last.ckpt", tmp_path, proc)
        output, _ = stop_and_time(proc, signal.SIGTERM)
    finally:
        proc.kill()
    assert proc.returncode == 143, output[-3000:]
    client = store(tmp_path)
    (parent,), (child,) = sweep_runs(client)
    assert parent.info.status == "KILLED" and child.info.status == "KILLED"

    again = run_cli(command, tmp_path)
    assert again.returncode == 0, said(again)
    assert f"Continuing this job's stopped run {child.info.run_id}" in said(again)
    (parent_again,), (child_again,) = sweep_runs(client)
    assert parent_again.info.run_id == parent.info.run_id
    assert child_again.info.run_id == child.info.run_id
    assert parent_again.info.status == child_again.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(child.info.run_id, "val/acc")]
    assert sorted(steps) == list(range(25))  # every epoch once, before the stop and after


@pytest.mark.parametrize(
    "overrides, says",
    [
        (["hydra/launcher=nosuch", "seed=1,2"], "Could not find 'hydra/launcher/nosuch'"),
        (["hydra/sweeper=nosuch", "seed=1,2"], "Could not find 'hydra/sweeper/nosuch'"),
        (
            ["hparams_search=mlp", "hydra.sweeper.params.optimizer.lr=interval(0.1"],
            "no viable alternative at input 'interval(0.1'",
        ),
        (["tracking.uri=http://127.0.0.1:9", "seed=1,2"], "No MLflow server answers at"),
    ],
    ids=["launcher", "sweeper", "search-space", "server"],
)
def test_bad_sweeps_say_why_in_one_sentence_and_leave_nothing_running(tmp_path, overrides, says):
    result = run_cli(["-m", *overrides, *FAST], tmp_path)
    assert result.returncode != 0
    assert says in said(result)
    assert "Traceback" not in said(result)
    db = tmp_path / "mlruns" / "mlflow.db"
    if db.exists():
        parents, children = sweep_runs(store(tmp_path))
        assert not parents and not children
