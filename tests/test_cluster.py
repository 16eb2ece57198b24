"""SLURM without a cluster: the presets compose, a sweep SLURM would refuse is refused in one
sentence, and a job's environment becomes the run's slurm.* tags. tests/test_slurm.py runs
the same through a real SLURM."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import console_script, run_cli
from hydra import compose, initialize_config_module
from omegaconf import DictConfig

from denselab.config import register_schemas
from denselab.errors import ConfigError
from denselab.sweeps.slurm import check_slurm_launcher
from denselab.tracking.holder import scheduler_tags

# What SLURM and submitit set in the second task of job array 41, run as job 43.
ARRAY_TASK = {
    "SLURM_JOB_ID": "43",
    "SLURM_ARRAY_JOB_ID": "41",
    "SLURM_ARRAY_TASK_ID": "1",
    "SLURMD_NODENAME": "node7",
    "SLURM_JOB_PARTITION": "debug",
    "SLURM_PROCID": "0",
    "SUBMITIT_EXECUTOR": "slurm",
}


def hydra_cfg(*overrides: str) -> DictConfig:
    """The real config with its hydra node, as Hydra hands it to callbacks."""
    register_schemas()
    with initialize_config_module(config_module="denselab.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


def sbatch_here(name: str) -> str:
    return f"/usr/bin/{name}"


def test_the_presets_build_on_the_plugins_slurm_launcher():
    cpu = hydra_cfg("hydra/launcher=slurm", "hydra.launcher.partition=debug").hydra.launcher
    gpu = hydra_cfg("hydra/launcher=slurm_gpu", "hydra.launcher.partition=gpu").hydra.launcher
    for launcher in (cpu, gpu):
        assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
        assert (launcher.nodes, launcher.tasks_per_node) == (1, 1)
        assert launcher.timeout_min > 0 and 0 < launcher.signal_delay_s < launcher.timeout_min * 60
        assert launcher.max_num_timeout == 3  # requeued at the time limit, going on
    assert (cpu.partition, cpu.gpus_per_node) == ("debug", None)
    assert (gpu.partition, gpu.gpus_per_node) == ("gpu", 1)


@pytest.mark.parametrize("preset", ["slurm", "slurm_gpu"])
def test_a_preset_without_a_partition_is_refused_with_the_override_to_add(preset):
    with pytest.raises(ConfigError) as err:
        check_slurm_launcher(hydra_cfg(f"hydra/launcher={preset}"), sbatch_here, lambda: ["x"])
    assert str(err.value) == (
        f"hydra/launcher={preset} needs the SLURM partition to run the jobs in; add "
        "hydra.launcher.partition=<name> (`sinfo` lists them)."
    )


def test_a_partition_the_cluster_lacks_is_refused_naming_those_it_has():
    cfg = hydra_cfg("hydra/launcher=slurm", "hydra.launcher.partition='cpu,nosuch'")
    with pytest.raises(ConfigError, match="no partition 'nosuch'; use one of cpu, debug"):
        check_slurm_launcher(cfg, sbatch_here, lambda: ["cpu", "debug"])
    check_slurm_launcher(cfg, sbatch_here, lambda: ["cpu", "nosuch"])


def test_no_sbatch_here_is_refused_before_asking_slurm():
    cfg = hydra_cfg("hydra/launcher=slurm", "hydra.launcher.partition=debug")
    with pytest.raises(ConfigError, match="submits every job with sbatch, which is not installed"):
        check_slurm_launcher(cfg, lambda name: None, list)


def test_the_plugins_own_launcher_may_leave_the_partition_to_slurm():
    # SLURM's meaning of no partition: the cluster's default one.
    check_slurm_launcher(hydra_cfg("hydra/launcher=submitit_slurm"), sbatch_here, lambda: ["a"])


def test_other_launchers_are_not_checked():
    def fails(*args):
        raise AssertionError("asked about SLURM")

    for launcher in ("basic", "joblib", "submitit_local"):
        check_slurm_launcher(hydra_cfg(f"hydra/launcher={launcher}"), fails, fails)


def test_the_check_runs_first_among_the_sweep_callbacks():
    callbacks = hydra_cfg().hydra.callbacks
    assert list(callbacks)[0] == "slurm_launcher"
    assert callbacks.slurm_launcher._target_ == "denselab.sweeps.slurm.CheckSlurmLauncher"


def test_scheduler_tags_name_the_job_its_node_and_its_logs(tmp_path):
    folder = tmp_path / ".submitit" / "%j"
    logs = tmp_path / ".submitit" / "41_1"
    logs.mkdir(parents=True)
    (logs / "41_1_0_log.err").touch()
    tags = scheduler_tags({**ARRAY_TASK, "SUBMITIT_FOLDER": str(folder)})
    assert tags == {
        "slurm.job_id": "43",
        "slurm.array_job_id": "41",
        "slurm.array_task_id": "1",
        "slurm.node": "node7",
        "slurm.partition": "debug",
        # the names sbatch's --output=%A_%a/%A_%a_0_log.out gives them
        "slurm.stdout": str(logs / "41_1_0_log.out"),
        "slurm.stderr": str(logs / "41_1_0_log.err"),
    }


def test_scheduler_tags_of_a_plain_job_and_a_requeued_one(tmp_path):
    env = {"SLURM_JOB_ID": "7", "SLURMD_NODENAME": "n1", "SLURM_JOB_PARTITION": "cpu"}
    expected = {"slurm.job_id": "7", "slurm.node": "n1", "slurm.partition": "cpu"}
    assert scheduler_tags(env) == expected
    # stderr_to_stdout: no stderr file, no tag that points at none
    tags = scheduler_tags({**env, "SLURM_RESTART_COUNT": "2", "SUBMITIT_FOLDER": f"{tmp_path}/%j"})
    assert tags["slurm.restart_count"] == "2"
    assert tags["slurm.stdout"] == str(tmp_path / "7" / "7_0_log.out")
    assert "slurm.stderr" not in tags


def test_no_tags_outside_slurm():
    assert scheduler_tags({"SUBMITIT_FOLDER": "/x/%j", "HOME": "/root"}) == {}


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, path, words",
    [
        (["hydra/launcher=slurm"], None, "add hydra.launcher.partition=<name> (`sinfo` lists"),
        # a machine without SLURM's commands (only the venv on PATH)
        (
            ["hydra/launcher=slurm", "hydra.launcher.partition=debug"],
            "venv",
            "submits every job with sbatch, which is not installed here",
        ),
    ],
    ids=["no-partition", "no-sbatch"],
)
def test_a_slurm_sweep_that_cannot_start_ends_in_one_sentence(tmp_path, overrides, path, words):
    env = {"PATH": str(Path(console_script()).parent)} if path else {}
    result = run_cli(["-m", *overrides, "data=digits", "seed=1,2"], tmp_path, env=env)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.strip()]
    assert len(errors) == 1 and words in errors[0], output
    # refused before any callback made a store, a run or a sweep folder
    assert list(tmp_path.iterdir()) == []
