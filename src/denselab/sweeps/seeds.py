"""Seeds as repetitions: when a sweep sweeps ``seed``, each setting (the other swept values)
is judged by its seeds together, not by its luckiest one.

Pure functions of the sweep's jobs table (:func:`denselab.sweeps.summary.jobs_table`):
:func:`seed_table` aggregates its FINISHED jobs per setting (n, mean and sample standard
deviation of ``val/acc_best`` and ``test/acc``), the best setting is the one with the highest
mean ``val/acc_best``; :func:`denselab.sweeps.summary.spread_figure` draws each setting's
seeds and their mean with one standard deviation either side.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import pandas as pd

SEED = "seed"
OBJECTIVE = "val/acc_best"
SCORES = (OBJECTIVE, "test/acc")
ALL_SEEDS = "(every job)"  # the one setting of a sweep over the seed alone


def seeded(swept: Sequence[str]) -> bool:
    return SEED in swept


def settings_of(swept: Sequence[str]) -> list[str]:
    """The swept keys that make a setting: all but the seed."""
    return [key for key in swept if key != SEED]


def setting_name(row: pd.Series, keys: Sequence[str]) -> str:
    """``optimizer.lr=0.1 model.hidden_sizes=[128]``, as the command line says them."""
    return " ".join(f"{key}={row[key]}" for key in keys) or ALL_SEEDS


def seed_table(table: pd.DataFrame, swept: Sequence[str]) -> Optional[pd.DataFrame]:
    """One row per setting, over its FINISHED jobs: ``setting``, the setting's values, ``n``,
    ``<score> mean`` and ``<score> std`` (sample standard deviation, n - 1; empty for one
    seed) of each score, the ``seeds`` and their ``run_ids``; the best mean ``val/acc_best``
    first. None when the sweep does not sweep the seed."""
    if not seeded(swept):
        return None
    keys = settings_of(swept)
    done = table[(table["status"] == "FINISHED") & table[OBJECTIVE].notna()].copy()
    done["setting"] = [setting_name(row, keys) for _, row in done.iterrows()]
    rows = []
    for name, jobs in done.groupby("setting", sort=False):
        numeric = pd.to_numeric(jobs[SEED], errors="coerce")
        jobs = jobs.iloc[np.lexsort((jobs[SEED].astype(str), numeric.fillna(np.inf)))]
        row = {"setting": name, **{key: jobs[key].iloc[0] for key in keys}, "n": len(jobs)}
        for score in SCORES:
            values = jobs[score].astype(float).dropna()
            row[f"{score} mean"] = float(values.mean()) if len(values) else np.nan
            row[f"{score} std"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
        row["seeds"] = ",".join(str(s) for s in jobs[SEED])
        row["run_ids"] = ",".join(jobs["run_id"])
        rows.append(row)
    columns = ["setting", *keys, "n", *[f"{s} {a}" for s in SCORES for a in ("mean", "std")]]
    frame = pd.DataFrame(rows, columns=[*columns, "seeds", "run_ids"])
    frame = frame.sort_values(f"{OBJECTIVE} mean", ascending=False, kind="stable")
    return frame.reset_index(drop=True)


def best_setting(seeds: Optional[pd.DataFrame]) -> Optional[pd.Series]:
    """The setting with the highest mean ``val/acc_best``; None when none finished."""
    if seeds is None or not len(seeds):
        return None
    return seeds.iloc[0]


def summary_line(best: pd.Series) -> str:
    """The parent's first line: the best setting, its mean and spread, and over how many."""
    test = f", test/acc {_mean_std(best, 'test/acc')}" if _known(best["test/acc mean"]) else ""
    seeds = "seed" if best["n"] == 1 else "seeds"
    return (
        f"**Best setting: {best['setting']}**, mean {OBJECTIVE} {_mean_std(best, OBJECTIVE)}"
        f"{test} over {best['n']} {seeds}"
    )


def _mean_std(row: pd.Series, score: str) -> str:
    std = row[f"{score} std"]
    return f"{row[f'{score} mean']:.4f}" + (f" ± {std:.4f}" if _known(std) else "")


def _known(value) -> bool:
    return value == value  # not NaN
