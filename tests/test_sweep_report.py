"""A sweep's summary (denselab.sweeps.summary) and what makes a sweep or a job the same
(denselab.sweeps.parent), without MLflow or a launcher."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hydra import compose, initialize_config_module

from denselab.config import register_schemas
from denselab.sweeps import parent as sweep
from denselab.sweeps import seeds
from denselab.sweeps import summary as sweep_report
from denselab.sweeps.job import swept_values
from denselab.sweeps.study import search_settings
from denselab.tracking.params import config_hash
from denselab.training.threads import JOBS_ENV, cpu_threads, machine_cpus


def rows(*specs):
    made = []
    for i, (lr, status, val) in enumerate(specs):
        made.append(
            {
                "run_name": f"job {i}",
                "optimizer.lr": lr,
                "run_id": f"r{i}",
                "status": status,
                "val/acc_best": val,
                "test/acc": val - 0.01 if val == val else val,
                "params_total": 101,
                "duration_s": 3.0,
                "reused": False,
            }
        )
    return made


def test_table_ranks_jobs_by_validation_and_the_best_is_a_finished_one():
    nan = float("nan")
    table = sweep_report.jobs_table(
        rows(("0.1", "FINISHED", 0.80), ("0.01", "FAILED", nan), ("1.0", "KILLED", 0.95),
             ("0.3", "FINISHED", 0.90)),
        ["optimizer.lr"],
    )
    assert list(table.columns[:2]) == ["run_name", "optimizer.lr"]
    assert list(table["val/acc_best"][:3]) == [0.95, 0.90, 0.80]
    assert math.isnan(table["val/acc_best"].iloc[3])
    best = sweep_report.best_job(table)
    assert best["run_id"] == "r3"  # the KILLED job scored higher, but never finished
    assert sweep_report.status_counts(table) == {"FAILED": 1, "FINISHED": 2, "KILLED": 1}
    assert sweep_report.sweep_status(table) == "FAILED"


def test_the_best_job_is_the_best_by_validation_even_where_test_ranks_otherwise():
    made = rows(("0.1", "FINISHED", 0.90), ("0.3", "FINISHED", 0.85), ("1.0", "FINISHED", 0.80))
    for row, test in zip(made, (0.70, 0.95, 0.99)):  # the test split ranks them the other way
        row["test/acc"] = test
    table = sweep_report.jobs_table(made, ["optimizer.lr"])
    assert sweep_report.best_job(table)["run_id"] == "r0"
    assert list(table["run_id"]) == ["r0", "r1", "r2"]
    text = sweep_report.description(
        table, ["optimizer.lr"], "denselab-train -m optimizer.lr=0.1,0.3,1.0"
    )
    assert text.splitlines()[0] == "**Best: job 0**, val/acc_best 0.9000, test/acc 0.7000"


def test_a_sweep_finishes_only_when_every_job_did():
    table = sweep_report.jobs_table(
        rows(("0.1", "FINISHED", 0.8), ("0.2", "FINISHED", 0.7)), ["optimizer.lr"]
    )
    assert sweep_report.sweep_status(table) == "FINISHED"
    empty = sweep_report.jobs_table([], ["optimizer.lr"])
    assert sweep_report.sweep_status(empty) == "FAILED"
    assert sweep_report.best_job(empty) is None


def test_figures_one_panel_per_setting_and_parallel_coordinates_from_three():
    base = rows(("0.001", "FINISHED", 0.5), ("0.1", "FINISHED", 0.9), ("0.5", "FINISHED", 0.7))
    for row, size, drop in zip(base, ("[64]", "[128]", "[64]"), (0.0, 0.2, 0.4)):
        row["model.hidden_sizes"], row["model.dropout"] = size, drop
    two = sweep_report.figures(sweep_report.jobs_table(base, ["optimizer.lr", "model.dropout"]),
                               ["optimizer.lr", "model.dropout"])
    assert list(two) == ["sweep_by_setting"]
    assert len(two["sweep_by_setting"].axes) == 2
    three_keys = ["optimizer.lr", "model.hidden_sizes", "model.dropout"]
    three = sweep_report.figures(sweep_report.jobs_table(base, three_keys), three_keys)
    assert list(three) == ["sweep_by_setting", "sweep_parallel"]
    assert three["sweep_by_setting"].axes[0].get_xscale() == "log"  # 0.001 .. 0.5
    assert three["sweep_by_setting"].axes[2].get_xscale() == "linear"
    assert sweep_report.figures(sweep_report.jobs_table(base, []), []) == {}


def test_description_names_the_command_counts_and_best():
    table = sweep_report.jobs_table(
        rows(("0.1", "FINISHED", 0.8), ("0.2", "FAILED", float("nan"))), ["optimizer.lr"]
    )
    command = "denselab-train -m optimizer.lr=0.1,0.2"
    text = sweep_report.description(table, ["optimizer.lr"], command)
    assert "`denselab-train -m optimizer.lr=0.1,0.2`" in text
    assert "1 FAILED, 1 FINISHED" in text
    # The best job first, in one line: the UI shows a description's first lines only.
    assert text.splitlines()[0] == "**Best: job 0**, val/acc_best 0.8000, test/acc 0.7900"
    assert "| job 0 | 0.1 | FINISHED | 0.8000 | 0.7900 |" in text


@pytest.mark.parametrize(
    "value, shown",
    [("0.010253509690168494", "0.0103"), ("1", "1"), ("[256,128]", "[256,128]"), ("1e-05", "1e-05"),
     (0.5, "0.5"), ("adam", "adam")],
)
def test_short_values_in_run_names(value, shown):
    assert sweep_report.short_value(value) == shown


def sweep_config(overrides, hydra_overrides=()):
    """The config a sweep's Hydra callbacks get: composed without the sweep overrides
    (Hydra leaves them to the sweeper), which ``hydra.overrides.task`` still lists."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    register_schemas()
    with initialize_config_module(config_module="denselab.conf", version_base="1.3"):
        cfg = compose("config", overrides=[*hydra_overrides, *fixed], return_hydra_config=True)
    cfg.hydra.overrides.task = list(overrides)
    return cfg


def test_swept_keys_come_from_sweep_overrides_and_the_search_space():
    cfg = sweep_config(["data=digits", "optimizer.lr=0.1,0.01", "seed=range(3)"])
    assert sweep.swept_keys(cfg) == ["optimizer.lr", "seed"]
    search = sweep_config(["data=digits", "hparams_search=mlp"])
    assert sweep.swept_keys(search) == ["optimizer.lr", "model.hidden_sizes", "model.dropout"]
    # val/acc_best is maximised without a word: the direction follows the objective.
    assert search_settings(search, "k").directions == ["maximize"]


def test_the_same_command_is_the_same_sweep_whatever_launches_it():
    one = sweep_config(["data=digits", "seed=1,2"])
    again = sweep_config(["seed=1,2", "data=digits"], ["hydra/launcher=parallel"])
    other = sweep_config(["data=digits", "seed=1,2,3"])
    assert sweep.sweep_key(one) == sweep.sweep_key(again)
    assert sweep.sweep_key(one) != sweep.sweep_key(other)


def test_config_hash_ignores_speed_and_storage_not_what_is_trained(compose_cfg):
    def hashed(*overrides: str, data: str = "d1") -> str:
        return config_hash(compose_cfg(["data=digits", *overrides]), data)

    base = hashed()
    assert hashed("threads=2") == base
    assert hashed("tracking.uri=sqlite:////x.db") == base
    assert hashed("callbacks=none") == base
    assert hashed("data.dir=/elsewhere") == base  # the same data, moved
    assert hashed("optimizer.lr=0.5") != base
    assert hashed("seed=1") != base
    assert hashed(data="d2") != base  # the same settings on other data


def test_swept_values_are_the_jobs_overrides_as_typed():
    values = swept_values(
        ["optimizer.lr", "model.hidden_sizes"],
        ["data=digits", "optimizer.lr=0.1", "model.hidden_sizes=[256,128]"],
    )
    assert values == {"optimizer.lr": "0.1", "model.hidden_sizes": "[256,128]"}


def test_parallel_jobs_share_the_cpus_as_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv(JOBS_ENV, str(machine_cpus()))
    assert cpu_threads() == 1
    monkeypatch.setenv(JOBS_ENV, "1")
    assert cpu_threads() == machine_cpus()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert cpu_threads() == 3


def test_jobs_at_once_follows_the_launcher():
    assert sweep.jobs_at_once(sweep_config(["seed=1,2"])) == 1
    parallel = sweep_config(["seed=1,2"], ["hydra/launcher=parallel"])
    assert sweep.jobs_at_once(parallel) == machine_cpus()
    two = sweep_config(["seed=1,2"], ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"])
    assert sweep.jobs_at_once(two) == 2


def seed_rows(scores: dict[str, list[float]]) -> list[dict]:
    """Jobs of a sweep over optimizer.lr and seed: ``{lr: [val/acc_best of seed 1, 2, ...]}``."""
    made = []
    for lr, values in scores.items():
        for seed, val in enumerate(values, start=1):
            (row,) = rows((lr, "FINISHED", val))
            row.update(run_name=f"seed={seed} lr={lr}", run_id=f"{lr}-{seed}", seed=str(seed))
            made.append(row)
    return made


def test_seeds_are_repetitions_the_best_setting_has_the_best_mean_not_the_luckiest_seed():
    # lr 0.5 has the single best seed (0.99) but the lower mean: the trap of the best child.
    scores = {"0.1": [0.90, 0.91, 0.92], "0.5": [0.99, 0.70, 0.72]}
    swept = ["optimizer.lr", "seed"]
    table = sweep_report.jobs_table(seed_rows(scores), swept)
    by_seeds = seeds.seed_table(table, swept)
    assert list(by_seeds["setting"]) == ["optimizer.lr=0.1", "optimizer.lr=0.5"]
    for _, setting in by_seeds.iterrows():
        values = np.array(scores[setting["optimizer.lr"]])
        assert setting["n"] == 3 and setting["seeds"] == "1,2,3"
        assert setting["val/acc_best mean"] == pytest.approx(values.mean())
        assert setting["val/acc_best std"] == pytest.approx(values.std(ddof=1))
        assert setting["test/acc mean"] == pytest.approx((values - 0.01).mean())
    best = seeds.best_setting(by_seeds)
    assert best["setting"] == "optimizer.lr=0.1" and best["run_ids"] == "0.1-1,0.1-2,0.1-3"
    text = sweep_report.description(table, swept, "denselab-train -m lr=0.1,0.5 seed=1,2,3")
    assert text.splitlines()[0] == (
        "**Best setting: optimizer.lr=0.1**, mean val/acc_best 0.9100 ± 0.0100, test/acc "
        "0.9000 ± 0.0100 over 3 seeds"
    )
    assert "| optimizer.lr=0.5 | 3 | 0.8033 | 0.1620 |" in text
    (panel,) = sweep_report.figures(table, swept)["sweep_by_setting"].axes
    assert panel.get_xlabel() == "optimizer.lr" and panel.containers  # the error bars


def test_without_a_swept_seed_nothing_is_aggregated():
    table = sweep_report.jobs_table(rows(("0.1", "FINISHED", 0.8)), ["optimizer.lr"])
    assert seeds.seed_table(table, ["optimizer.lr"]) is None
    alone = sweep_report.jobs_table(seed_rows({"0.1": [0.8, 0.9]}), ["seed"])
    (only,) = seeds.seed_table(alone, ["seed"]).itertuples()
    assert only.setting == "(every job)" and only.n == 2
