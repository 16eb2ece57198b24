"""Sweeps through a real one-node SLURM (the slurm_cluster fixture, tests/slurm.py): jobs end
in FINISHED runs that name their SLURM job, and a cancelled job's run ends KILLED and can be
resumed. No mocks: sbatch, slurmctld, slurmd and srun run the jobs."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import metric_steps, run_cli, start_cli, sweep_runs, unavailable, wait_for_file
from mlflow import MlflowClient

pytestmark = pytest.mark.slow

QUIET = ["trainer.enable_progress_bar=false", "callbacks=none"]


def slurm_sweep(cluster, job_name: str) -> list[str]:
    return [
        "-m",
        "hydra/launcher=slurm",
        f"hydra.launcher.partition={cluster.partition}",
        # Its own name, so that a test cancels its own jobs only.
        f"hydra.launcher.name={job_name}",
        # Two jobs side by side on a 2-core node; the preset asks for 2 CPUs each.
        "hydra.launcher.cpus_per_task=1",
    ]


def run_slurm_sweep(cluster, job_name: str, overrides: list[str], tmp_path: Path, timeout: float):
    """The sweep command through SLURM; its jobs are cancelled whatever happens."""
    args = [*slurm_sweep(cluster, job_name), *overrides, *QUIET]
    try:
        return run_cli(args, tmp_path, timeout=timeout, env=cluster.env)
    finally:
        cluster.cancel(job_name)


def store(path: Path) -> str:
    return f"sqlite:///{path / 'mlruns' / 'mlflow.db'}"


def test_a_sweep_through_slurm_is_one_parent_with_finished_children_tagged_with_their_jobs(
    slurm_cluster, mnist_dir, tmp_path
):
    uri = store(tmp_path)
    overrides = [
        f"data.dir={mnist_dir}",
        "data.mirrors=[]",
        "trainer.max_epochs=2",
        "seed=1,2,3,4",
        f"tracking.uri={uri}",
    ]
    result = run_slurm_sweep(slurm_cluster, "denselab-sweep", overrides, tmp_path, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    (parent,), done = sweep_runs(MlflowClient(uri), "mnist")
    assert parent.info.status == "FINISHED" and parent.data.tags["jobs"] == "4 FINISHED"
    assert parent.data.tags["best_run_id"] in {r.info.run_id for r in done}
    assert sorted(r.data.params["seed"] for r in done) == ["1", "2", "3", "4"]
    assert {r.info.status for r in done} == {"FINISHED"}
    tags = [r.data.tags for r in done]
    assert len({t["slurm.job_id"] for t in tags}) == 4  # one SLURM job each
    assert len({t["slurm.array_job_id"] for t in tags}) == 1  # of one job array
    assert sorted(t["slurm.array_task_id"] for t in tags) == ["0", "1", "2", "3"]
    for run, tag in zip(done, tags):
        assert tag["slurm.node"] == slurm_cluster.node == tag["host"].split(".")[0]
        assert tag["slurm.partition"] == slurm_cluster.partition
        # the job's own log, which names this run
        assert f"MLflow run {run.info.run_id}" in Path(tag["slurm.stdout"]).read_text()
        assert Path(tag["slurm.stderr"]).is_file()


# Seconds of training the time-limit test asks for: more than one two-minute try holds (its
# warning comes 35-65 s into training), less than two.
TRAINING_S = 80


def epoch_seconds(folder: Path) -> float:
    """Seconds one epoch of the time-limit test's run takes on this machine now, from the
    timestamps of a short real run's per-epoch metrics (the first epoch, which pays for
    warm-up, left out)."""
    folder.mkdir()
    result = run_cli(["data=digits", "seed=1", "trainer.max_epochs=21", *QUIET], folder)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    client = MlflowClient(store(folder))
    (run,) = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    times = sorted(m.timestamp for m in client.get_metric_history(run.info.run_id, "val/acc"))
    return (times[-1] - times[0]) / 1000 / (len(times) - 1)


def test_a_job_past_its_time_limit_is_requeued_and_finishes_the_same_run(
    slurm_cluster, tmp_path
):
    # TRAINING_S of training, ended by Lightning's timer (kept in the checkpoints, so it
    # counts across tries), whatever the machine's speed; epochs enough for three times that
    # at the speed measured now, so that the timer, not the epoch count, ends the run.
    seconds = epoch_seconds(tmp_path / "measured")
    epochs = max(100, round(3 * TRAINING_S / seconds))
    print(f"a digits epoch takes {seconds * 1000:.0f} ms here: at most {epochs} epochs")
    uri = store(tmp_path)
    overrides = [
        "data=digits",
        "seed=1",
        f"trainer.max_epochs={epochs}",
        f"+trainer.max_time='00:00:{TRAINING_S // 60:02d}:{TRAINING_S % 60:02d}'",
        # Two minutes, warned (SIGUSR2) 45 s before. SLURM checks limits every 30 s and warns
        # at the first check within 45 + 30 s of the limit: 45-75 s into each try, some 35-65
        # s of training after the start. Two tries at this speed; each goes on from the last
        # whole epoch.
        "hydra.launcher.timeout_min=2",
        "hydra.launcher.signal_delay_s=45",
        "hydra.launcher.max_num_timeout=8",
        f"tracking.uri={uri}",
    ]
    result = run_slurm_sweep(slurm_cluster, "denselab-limit", overrides, tmp_path, timeout=900)
    output = result.stdout[-3000:] + result.stderr[-3000:]
    assert result.returncode == 0, output

    (parent,), (child,) = sweep_runs(MlflowClient(uri), "digits")
    assert parent.info.status == child.info.status == "FINISHED"
    assert int(child.data.tags.get("slurm.restart_count", "0")) >= 1, child.data.tags
    log = Path(child.data.tags["slurm.stdout"]).read_text()
    assert "Handing SIGUSR2 on to the scheduler's handler" in log
    assert f"Continuing this job's stopped run {child.info.run_id}" in log
    client = MlflowClient(uri)
    # One run from the first epoch to the last, each epoch once, across the requeues.
    steps = metric_steps(client, child.info.run_id, "val/acc")
    assert len(steps) >= 2 and steps == list(range(len(steps))), steps


def test_scancel_ends_the_run_killed_and_resume_finishes_it(slurm_cluster, tmp_path):
    uri, name, epochs = store(tmp_path), "denselab-scancel", 8
    # Batches of one: epochs of ~1.5 s, so that the run is mid-way when scancel lands.
    args = [
        *slurm_sweep(slurm_cluster, name),
        "data=digits",
        "data.batch_size=1",
        f"trainer.max_epochs={epochs}",
        f"tracking.uri={uri}",
        *QUIET,
    ]
    launcher = start_cli(args, tmp_path, env=slurm_cluster.env)
    try:
        wait_for_file("multirun/*/*/0/checkpoints/last.ckpt", tmp_path, launcher)
        (job_id,) = slurm_cluster.jobs(name)
        slurm_cluster.run("scancel", job_id)
        run = wait_for_end(uri, "digits")
        slurm_cluster.cancel(name)  # waits until the job has left the queue
        job = slurm_cluster.job(job_id)
    finally:
        slurm_cluster.cancel(name)
        # Without accounting (sacct) submitit cannot tell a cancelled job from a running one,
        # and would wait for it for ever.
        stop(launcher)

    assert job["JobState"] == "CANCELLED", job
    assert run.info.status == "KILLED"
    assert run.data.tags.get("resumable") != "true"  # SIGTERM: stopped, not warned
    log = Path(run.data.tags["slurm.stdout"]).read_text()
    assert f"Stopped by SIGTERM: run {run.info.run_id} ended KILLED" in log
    client = MlflowClient(uri)
    assert 1 <= len(metric_steps(client, run.info.run_id, "val/acc")) < epochs

    # The run goes on outside SLURM, from the checkpoint of the cancelled job.
    resumed = run_cli([f"resume={run.info.run_id}", f"tracking.uri={uri}", *QUIET], tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    _, (run,) = sweep_runs(client, "digits")
    assert run.info.status == "FINISHED"
    assert metric_steps(client, run.info.run_id, "val/acc") == list(range(epochs))


def test_a_slurm_that_does_not_answer_ends_the_sweep_in_one_sentence(slurm_cluster, tmp_path):
    if "SLURM_CONF" not in slurm_cluster.env:
        unavailable("a SLURM these tests did not start runs here", "stop it")
    # The cluster's config with a controller port nobody listens on.
    conf = tmp_path / "slurm.conf"
    text = Path(slurm_cluster.env["SLURM_CONF"]).read_text()
    conf.write_text(text.replace("ClusterName=", "SlurmctldPort=9\nClusterName=", 1))
    work = tmp_path / "work"
    work.mkdir()
    args = [*slurm_sweep(slurm_cluster, "denselab-down"), "data=digits", "seed=1,2"]
    result = run_cli(args, work, timeout=120, env={"SLURM_CONF": str(conf)})
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output, output
    assert [line for line in output.splitlines() if line.strip()] == [
        line for line in output.splitlines() if "SLURM does not answer here (sinfo: " in line
    ]
    assert list(work.iterdir()) == []


def wait_for_end(uri: str, experiment: str, timeout: float = 60):
    """The experiment's one job run, once it is no longer RUNNING."""
    deadline = time.monotonic() + timeout
    while True:
        _, (run,) = sweep_runs(MlflowClient(uri), experiment)
        if run.info.status != "RUNNING" or time.monotonic() > deadline:
            return run
        time.sleep(0.5)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)


def test_a_search_through_slurm_prunes_through_the_study_storage(slurm_cluster, tmp_path):
    import optuna

    # The grid, seeded, asks the two good learning rates first (side by side) and the
    # hopeless one last, when the median pruner has two finished trials to compare it with.
    overrides = [
        "hydra/sweeper=optuna", "hydra.sweeper.sampler=grid", "hydra.sweeper.n_trials=3",
        "hydra.sweeper.n_jobs=2", "hydra.sweeper.pruner=median",
        "hydra.sweeper.pruner_startup_trials=2", "optimizer.lr=choice(0.3,0.2,0.0000001)",
        "data=digits", "trainer.max_epochs=2", f"tracking.uri={store(tmp_path)}",
    ]
    result = run_slurm_sweep(slurm_cluster, "denselab-search", overrides, tmp_path, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    storage = f"sqlite:///{tmp_path / 'mlruns' / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    study = optuna.load_study(study_name=summary.study_name, storage=storage)
    states = {t.params["optimizer.lr"]: t.state.name for t in study.trials}
    assert states == {0.3: "COMPLETE", 0.2: "COMPLETE", 1e-7: "PRUNED"}
    # The jobs reported their epochs from SLURM's processes, through the storage.
    assert all(t.intermediate_values for t in study.trials)
    _, children = sweep_runs(MlflowClient(store(tmp_path)))
    assert all(c.data.tags.get("slurm.job_id") for c in children)
    (pruned,) = [c for c in children if c.data.tags.get("optuna.state") == "PRUNED"]
    assert pruned.info.status == "FINISHED" and pruned.data.params["optimizer.lr"] == "1e-07"
