"""Many denselab-train processes started at once on one fresh sqlite store: all finish."""

from __future__ import annotations

import sqlite3

import pytest
from helpers import start_cli
from mlflow import MlflowClient

PROCESSES = 8


@pytest.mark.slow
def test_parallel_starts_on_a_fresh_store_all_finish(tmp_path):
    # A shell loop with `&`, or a SLURM array: no Hydra sweep creates the store first.
    procs = [
        start_cli(
            [
                "data=digits",
                "callbacks=none",
                "trainer.max_epochs=1",
                "trainer.enable_progress_bar=false",
                f"seed={seed}",
            ],
            tmp_path,
        )
        for seed in range(PROCESSES)
    ]
    outputs = [proc.communicate(timeout=600)[0] for proc in procs]
    failed = [(p.returncode, out[-2000:]) for p, out in zip(procs, outputs) if p.returncode]
    assert not failed, failed

    db = tmp_path / "mlruns" / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("digits").experiment_id])
    assert sorted(r.data.params["seed"] for r in runs) == [str(s) for s in range(PROCESSES)]
    assert {r.info.status for r in runs} == {"FINISHED"}
    # each run has a checkpoint folder of its own, even when started in the same second
    assert len({r.data.tags["checkpoint_dir"] for r in runs}) == PROCESSES
    with sqlite3.connect(db) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
