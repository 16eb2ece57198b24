"""The Optuna search end to end, with the real console script, real Optuna and a real study
storage (sqlite beside the tracking store): the direction, pruning across processes, a
stopped search continued, failures as data, two objectives, and bad input."""

from __future__ import annotations

import json
import signal

import optuna
import pytest
import yaml
from helpers import (
    metric_steps,
    postgres_server,
    run_cli,
    start_cli,
    stop_and_time,
    sweep_runs,
    wait_for_file,
)
from mlflow import MlflowClient

from denselab.serving.classifier import load

pytestmark = pytest.mark.slow

FAST = [
    "data=digits",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "callbacks=none",
]


def said(result) -> str:
    """What the command printed, whole (its last lines also serve as assertion messages)."""
    return result.stdout + result.stderr


def store(tmp_path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")


def the_study(tmp_path) -> optuna.Study:
    storage = f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def table_of(client: MlflowClient, run_id: str, tmp_path, name="sweep_jobs") -> list[dict]:
    path = client.download_artifacts(run_id, f"tables/{name}.json", str(tmp_path))
    data = json.loads(open(path).read())
    return [dict(zip(data["columns"], row)) for row in data["data"]]


def test_the_bare_sweeper_maximises_val_acc_best_and_a_rerun_continues_the_study(tmp_path):
    # The way Hydra's documentation spells a search: no preset, no direction.
    command = ["-m", "hydra/sweeper=optuna", "optimizer.lr=interval(0.001,0.3)",
               "hydra.sweeper.n_trials=3", *FAST]
    result = run_cli(command, tmp_path)
    assert result.returncode == 0, said(result)[-6000:]
    client = store(tmp_path)
    (parent,), children = sweep_runs(client)
    assert len(children) == 3 and {c.info.status for c in children} == {"FINISHED"}
    best = max(children, key=lambda c: c.data.metrics["val/acc_best"])
    worst = min(c.data.metrics["val/acc_best"] for c in children)
    study = the_study(tmp_path)
    assert study.direction.name == "MAXIMIZE"
    assert study.best_value == pytest.approx(best.data.metrics["val/acc_best"], abs=1e-6)
    assert study.best_value > worst  # the highest was picked, not the lowest
    assert parent.data.tags["best_run_id"] == best.info.run_id
    written = next(tmp_path.glob("multirun/*/*/optimization_results.yaml"))
    assert yaml.safe_load(written.read_text())["best_value"] == pytest.approx(study.best_value)
    assert sorted(int(c.data.tags["optuna.trial"]) for c in children) == [0, 1, 2]
    assert {c.data.tags["optuna.state"] for c in children} == {"COMPLETE"}
    tags = parent.data.tags
    assert tags["optuna.study"] == study.study_name and tags["optuna.trials"].startswith("3 COMP")
    assert "heartbeat" in tags  # the parent is held like a run while its sweep lives
    assert tags["best_command"].endswith(f"optimizer.lr={study.best_params['optimizer.lr']!r}")
    assert "Sweep FINISHED: 3 jobs (3 FINISHED); best by val/acc_best" in said(result)
    note = tags["mlflow.note.content"]  # the best job first, then the search's story
    assert note.startswith("**Best: ") and f"study `{study.study_name}`" in note
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert {"figures/search_history.png", "figures/sweep_by_setting.png"} <= figures
    trials = table_of(client, parent.info.run_id, tmp_path, "search_trials")
    assert sorted(t["trial"] for t in trials) == [0, 1, 2]
    assert {t["run_id"] for t in trials} == {c.info.run_id for c in children}

    # More trials continue it: the same study, parent and numbering; its 3 trials are not
    # trained again.
    more = run_cli([*command, "hydra.sweeper.n_trials=4"], tmp_path)
    assert more.returncode == 0, said(more)[-6000:]
    assert "3 of 4 trials done, 1 to run" in said(more)
    (parent_again,), children = sweep_runs(client)
    assert parent_again.info.run_id == parent.info.run_id
    assert sorted(int(c.data.tags["optuna.trial"]) for c in children) == list(range(4))
    assert len(the_study(tmp_path).trials) == 4


def test_a_parallel_search_prunes_hopeless_trials_through_the_study_storage(tmp_path):
    command = [
        "-m", "hydra/sweeper=optuna", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=6", "hydra.sweeper.pruner=median",
        "hydra.sweeper.pruner_startup_trials=2", "optimizer.lr=tag(log,interval(0.00001,0.5))",
        *FAST, "trainer.max_epochs=5",
    ]
    result = run_cli(command, tmp_path)
    assert result.returncode == 0, said(result)[-6000:]
    study = the_study(tmp_path)
    states = [t.state.name for t in study.trials]
    assert states.count("PRUNED") >= 1 and states.count("COMPLETE") >= 2, states
    # Every epoch of every trial reached the study from the joblib workers.
    assert all(t.intermediate_values for t in study.trials)
    client = store(tmp_path)
    (parent,), children = sweep_runs(client)
    pruned = [c for c in children if c.data.tags.get("optuna.state") == "PRUNED"]
    assert len(pruned) == states.count("PRUNED")
    for run in pruned:
        epoch = int(run.data.tags["optuna.pruned_epoch"])
        assert run.info.status == "FINISHED"
        assert epoch < 4
        assert metric_steps(client, run.info.run_id, "val/acc") == list(range(epoch + 1))
        # Tested, and its model logged, from its best checkpoint.
        assert "test/acc" in run.data.metrics and "val/acc_best" in run.data.metrics
        assert len(load(f"runs:/{run.info.run_id}/model", client.tracking_uri).classes) == 10
    rows = table_of(client, parent.info.run_id, tmp_path)
    assert sorted(r["trial_state"] for r in rows if r["trial_state"] == "PRUNED") == [
        "PRUNED"] * len(pruned)
    assert "PRUNED" in parent.data.tags["optuna.trials"]


def test_a_stopped_search_rerun_runs_exactly_the_missing_trials(tmp_path):
    command = ["-m", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=3",
               "optimizer.lr=interval(0.01,0.3)", *FAST, "trainer.max_epochs=30"]
    proc = start_cli(command, tmp_path)
    wait_for_file("multirun/*/*/1/checkpoints/last.ckpt", tmp_path, proc)
    output, _ = stop_and_time(proc, signal.SIGTERM)
    assert proc.returncode != 0 and "Traceback" not in output, output[-3000:]
    stopped = [t.state.name for t in the_study(tmp_path).trials]
    assert stopped[0] == "COMPLETE" and stopped[-1] == "RUNNING", stopped

    again = run_cli(command, tmp_path)
    assert again.returncode == 0, said(again)[-6000:]
    assert "1 stopped before" in said(again)
    assert "Continuing this job's stopped run" in said(again)
    client = store(tmp_path)
    (parent,), children = sweep_runs(client)
    assert parent.info.status == "FINISHED"
    assert len(children) == 3 and {c.info.status for c in children} == {"FINISHED"}
    assert sorted(int(c.data.tags["optuna.trial"]) for c in children) == [0, 1, 2]
    assert [t.state.name for t in the_study(tmp_path).trials] == ["COMPLETE"] * 3
    for child in children:  # every epoch once: the stopped trial went on, not over
        assert metric_steps(client, child.info.run_id, "val/acc") == list(range(30))


def test_a_team_keeps_its_study_in_postgresql_and_continues_it_from_there(tmp_path):
    with postgres_server(tmp_path / "pg", database="optuna") as url:
        command = ["-m", "hydra/sweeper=optuna", f"hydra.sweeper.storage={url}",
                   "hydra.sweeper.n_trials=2", "optimizer.lr=interval(0.01,0.3)", *FAST]
        result = run_cli(command, tmp_path)
        assert result.returncode == 0, said(result)[-6000:]
        (summary,) = optuna.get_all_study_summaries(url)
        study = optuna.load_study(study_name=summary.study_name, storage=url)
        assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
        (parent,), _ = sweep_runs(store(tmp_path))
        assert parent.data.tags["optuna.storage"] == url
        assert not (tmp_path / "mlruns" / "optuna.db").exists()


def test_two_objectives_show_the_pareto_front_and_a_failed_trial_is_told_fail(tmp_path):
    # A negative learning rate fails its job before its run exists; the search goes on.
    result = run_cli(["-m", "hydra/sweeper=optuna", "hydra.sweeper.sampler=grid",
                      "hydra.sweeper.objectives=[val/acc_best,params_total]",
                      "hydra.sweeper.n_trials=4", "model.hidden_sizes=choice([],[8],[64])",
                      "optimizer.lr=choice(0.1,-1.0)", *FAST], tmp_path)
    assert result.returncode == 1, said(result)[-6000:]
    assert "1 of the 4 trials run failed" in said(result) or "2 of the 4 trials run failed" in (
        said(result))
    study = the_study(tmp_path)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    states = {t.state.name for t in study.trials if t.params["optimizer.lr"] < 0}
    assert states == {"FAIL"}
    client = store(tmp_path)
    (parent,), children = sweep_runs(client)
    failed = [c for c in children if c.info.status == "FAILED"]
    assert failed and all("optimizer.lr" in c.data.tags["error"] for c in failed)
    assert all("optuna.trial" in c.data.tags for c in failed)
    rows = table_of(client, parent.info.run_id, tmp_path)
    assert {r["trial_state"] for r in rows} == {"COMPLETE", "FAIL"}
    front = {t.user_attrs["denselab.run_id"] for t in study.best_trials}
    assert set(parent.data.tags["pareto_front_runs"].split(",")) == front
    assert {c.info.run_id for c in children if c.data.tags.get("pareto_front_of")} == front
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert "figures/pareto_front.png" in figures
    for trial in study.best_trials:  # the values are the runs' own
        run = client.get_run(trial.user_attrs["denselab.run_id"])
        assert trial.values == [pytest.approx(run.data.metrics["val/acc_best"]),
                                int(run.data.params["params_total"])]


@pytest.mark.parametrize(
    "overrides, says",
    [
        (["hydra/sweeper=optuna", "hydra.sweeper.sampler=bayes", "optimizer.lr=interval(0.1,1)"],
         "sampler=bayes is not a sampler denselab knows"),
        (["hparams_search=mlp",
          "hydra.sweeper.storage=postgresql+psycopg://denselab:s3cret@127.0.0.1:9/optuna"],
         "does not answer"),
    ],
    ids=["sampler", "storage"],
)
def test_a_search_that_cannot_run_says_why_and_makes_nothing(tmp_path, overrides, says):
    result = run_cli(["-m", *overrides, *FAST], tmp_path)
    assert result.returncode == 1, said(result)[-6000:]
    assert says in said(result)
    assert "Traceback" not in said(result) and "s3cret" not in said(result)
    assert not (tmp_path / "mlruns").exists()  # no store, no parent run, no study
