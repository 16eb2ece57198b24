"""A sweep's summary, as pure functions of its jobs' rows: the table, the best job, figures.

A row is one job of the sweep (one config): its run's name and id, status, the values of
the swept settings, ``val/acc_best``, ``test/acc``, ``params_total`` and duration.
:mod:`denselab.sweeps.parent` reads the rows from MLflow and writes what these functions return to
the sweep's parent run; nothing here knows MLflow, so a test can call each on rows it made.

    tables/sweep_jobs.json                one row per job          jobs_table
    figures/sweep_by_setting.png          each swept setting against val/acc_best
    figures/sweep_parallel.png            all of them at once, for three or more
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from denselab.sweeps import seeds

OBJECTIVE = "val/acc_best"  # what a sweep ranks its jobs by: a validation score, never test
COLUMNS = (
    "run_name", "run_id", "status", "val/acc_best", "test/acc", "params_total", "duration_s",
    "reused",
)
# A search's jobs also say which trial each ran and how it ended (COMPLETE, PRUNED, FAIL).
TRIAL_COLUMNS = ("trial", "trial_state")


def jobs_table(rows: Sequence[dict[str, Any]], swept: Sequence[str]) -> pd.DataFrame:
    """One row per job, swept settings first after the name, best validation score on top."""
    columns = ["run_name", *swept, *[c for c in COLUMNS if c != "run_name"]]
    if any(row.get("trial") is not None for row in rows):
        columns[1:1] = TRIAL_COLUMNS
    table = pd.DataFrame(list(rows), columns=columns)
    if len(table):
        table = table.sort_values(OBJECTIVE, ascending=False, na_position="last", kind="stable")
    return table.reset_index(drop=True)


def best_job(table: pd.DataFrame) -> Optional[pd.Series]:
    """The FINISHED job with the highest ``val/acc_best`` (the first on a tie); None if no
    job finished with one."""
    done = table[(table["status"] == "FINISHED") & table[OBJECTIVE].notna()]
    if not len(done):
        return None
    return done.loc[done[OBJECTIVE].astype(float).idxmax()]


def status_counts(table: pd.DataFrame) -> dict[str, int]:
    """Jobs by status, every status present: ``{"FINISHED": 3, "FAILED": 1}``."""
    return {str(k): int(v) for k, v in table["status"].value_counts().sort_index().items()}


def sweep_status(table: pd.DataFrame) -> str:
    """FINISHED when every job finished, FAILED otherwise (and for a sweep without jobs)."""
    return "FINISHED" if len(table) and (table["status"] == "FINISHED").all() else "FAILED"


def _numeric(values: pd.Series) -> Optional[np.ndarray]:
    converted = pd.to_numeric(values, errors="coerce")
    if converted.notna().all() and len(converted):
        return converted.to_numpy(dtype=float)
    return None


def _positions(values: pd.Series) -> tuple[np.ndarray, Optional[list[str]], bool]:
    """Where each value goes on an axis: numbers as they are (log scale when positive and
    spread over more than two decades), anything else as evenly spaced categories."""
    numbers = _numeric(values)
    if numbers is not None:
        log = bool((numbers > 0).all() and numbers.max() / numbers.min() > 100)
        return numbers, None, log
    labels = sorted({str(v) for v in values})
    return np.array([labels.index(str(v)) for v in values], dtype=float), labels, False


def by_setting(table: pd.DataFrame, swept: Sequence[str]) -> Figure:
    """One panel per swept setting: its value against ``val/acc_best``, FINISHED jobs."""
    import matplotlib as mpl
    done = table[table[OBJECTIVE].notna()]
    n = max(1, len(swept))
    fig = Figure(figsize=(4.2 * n, 3.6), layout="constrained")
    for i, key in enumerate(swept):
        ax = fig.add_subplot(1, n, i + 1)
        x, labels, log = _positions(done[key])
        ax.scatter(x, done[OBJECTIVE].astype(float), s=36, color="tab:blue", alpha=0.8)
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())
        ax.set_xlabel(key)
        ax.set_ylabel(OBJECTIVE if i == 0 else "")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{OBJECTIVE} by swept setting ({len(done)} jobs)")
    return fig


def spread_figure(table: pd.DataFrame, swept: Sequence[str]) -> Figure:
    """A sweep over seeds: one panel per setting key (the seed's alone when nothing else is
    swept), each seed's ``val/acc_best`` as a faint point, and each value's mean with one
    standard deviation (n - 1) either side."""
    import matplotlib as mpl

    done = table[(table["status"] == "FINISHED") & table[OBJECTIVE].notna()]
    keys = seeds.settings_of(swept) or [seeds.SEED]
    fig = Figure(figsize=(4.2 * len(keys), 3.6), layout="constrained")
    for i, key in enumerate(keys):
        ax = fig.add_subplot(1, len(keys), i + 1)
        x, labels, log = _positions(done[key])
        y = done[OBJECTIVE].astype(float).to_numpy()
        ax.scatter(x, y, s=24, color="tab:blue", alpha=0.35, label="one seed")
        if key != seeds.SEED:
            groups = pd.DataFrame({"x": x, "y": y}).groupby("x")["y"]
            mean, std = groups.mean(), groups.std(ddof=1).fillna(0.0)
            ax.errorbar(mean.index, mean, yerr=std, fmt="o", color="tab:red", capsize=4,
                        label="mean ± std")
        else:  # the seed alone: its mean and spread as a band across the seeds
            mean, std = float(np.mean(y)), float(np.std(y, ddof=1)) if len(y) > 1 else 0.0
            ax.axhline(mean, color="tab:red", label="mean ± std")
            ax.axhspan(mean - std, mean + std, color="tab:red", alpha=0.12)
        if labels is not None:
            ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        if log:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(mpl.ticker.NullFormatter())
        ax.set_xlabel(key)
        ax.set_ylabel(OBJECTIVE if i == 0 else "")
        ax.grid(alpha=0.3)
        if i == 0:
            ax.legend(fontsize=8)
    fig.suptitle(f"{OBJECTIVE} by setting over seeds ({len(done)} jobs)")
    return fig


def parallel_coordinates(table: pd.DataFrame, swept: Sequence[str]) -> Figure:
    """Every job as a line through one axis per swept setting and a last one for
    ``val/acc_best``, coloured by it: which combinations do well, at a glance."""
    import matplotlib as mpl

    done = table[table[OBJECTIVE].notna()].reset_index(drop=True)
    axes_keys = [*swept, OBJECTIVE]
    fig = Figure(figsize=(1.8 * len(axes_keys) + 2, 4.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    scaled, marks = [], []  # per axis: each line's height, and (height, label) to print
    for key in axes_keys:
        x, labels, log = _positions(done[key])
        x = np.log10(x) if log else x
        low, high = (float(x.min()), float(x.max())) if len(x) else (0.0, 1.0)
        span = high - low or 1.0
        scaled.append((x - low) / span)
        if labels is not None:
            marks.append([((i - low) / span, label) for i, label in enumerate(labels)])
        else:
            ends = (10**low, 10**high) if log else (low, high)
            marks.append([(0.0, short_value(ends[0])), (1.0, short_value(ends[1]))])
    score = done[OBJECTIVE].astype(float).to_numpy()
    norm = mpl.colors.Normalize(
        vmin=score.min() if len(score) else 0.0, vmax=score.max() if len(score) else 1.0
    )
    cmap = mpl.colormaps["viridis"]
    for row, value in zip(np.array(scaled).T, score):
        ax.plot(range(len(axes_keys)), row, color=cmap(norm(value)), alpha=0.85, lw=1.6)
    for i, axis_marks in enumerate(marks):
        ax.axvline(i, color="0.6", lw=0.8)
        for height, label in axis_marks:
            ax.text(i + 0.03, height, label, ha="left", va="center", fontsize=8)
    ax.set_xticks(range(len(axes_keys)), axes_keys, rotation=15)
    ax.set_yticks([])
    ax.set_ylim(-0.15, 1.12)
    fig.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=OBJECTIVE)
    fig.suptitle(f"{len(done)} jobs across {len(swept)} swept settings")
    return fig


def figures(table: pd.DataFrame, swept: Sequence[str]) -> dict[str, Figure]:
    """What the parent run shows: each setting against the score, and all at once from
    three swept settings up. Nothing when nothing was swept or nothing scored."""
    if not swept or not table[OBJECTIVE].notna().any():
        return {}
    draw = spread_figure if seeds.seeded(swept) else by_setting
    made = {"sweep_by_setting": draw(table, swept)}
    if len(swept) >= 3:
        made["sweep_parallel"] = parallel_coordinates(table, swept)
    return made


def description(
    table: pd.DataFrame, swept: Sequence[str], command: str, data: str = ""
) -> str:
    """The parent run's Overview (Markdown): the best setting over its seeds (a sweep over
    the seed) or the best job, the command, the counts, whether the jobs saw the same data
    (``data``, from :func:`data_note`), the settings over their seeds, and the table."""
    counts = ", ".join(f"{n} {status}" for status, n in status_counts(table).items())
    reused = int(table["reused"].fillna(False).astype(bool).sum()) if "reused" in table else 0
    if reused:  # FINISHED runs of other sweeps with the same config and data, not run again
        counts += f" ({reused} reused from earlier sweeps)"
    best = best_job(table)
    by_seeds = seeds.seed_table(table, swept)
    setting = seeds.best_setting(by_seeds)
    lines = []
    if setting is not None:  # first: the UI shows a description's first lines only
        lines += [seeds.summary_line(setting), ""]
    elif best is not None:
        test = f", test/acc {best['test/acc']:.4f}" if best["test/acc"] == best["test/acc"] else ""
        lines += [f"**Best: {best['run_name']}**, {OBJECTIVE} {best[OBJECTIVE]:.4f}{test}", ""]
    lines += [f"**Sweep** `{command}`", "", f"**{len(table)} jobs**: {counts or 'none ran'}"]
    if data:
        lines += ["", data]
    if by_seeds is not None and len(by_seeds):
        header = ["setting", "n", *[f"{s} {a}" for s in seeds.SCORES for a in ("mean", "std")]]
        lines += ["", "**Over seeds**", "", "| " + " | ".join(header) + " |"]
        lines += ["|" + " --- |" * len(header)]
        for _, row in by_seeds.iterrows():
            lines.append("| " + " | ".join(_cell(row[c]) for c in header) + " |")
        lines += ["", "**Jobs**"]
    header = ["run_name", *swept, "status", OBJECTIVE, "test/acc"]
    lines += ["", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for _, row in table.iterrows():
        lines.append("| " + " | ".join(_cell(row[c]) for c in header) + " |")
    return "\n".join(lines) + "\n"


def data_note(rows: Sequence[dict[str, Any]], swept: Sequence[str]) -> str:
    """Whether the jobs saw the same data, and per split (MLflow dataset context) where they
    did not: the jobs whose digest is not the one most jobs had, or, with no such majority,
    the jobs of each digest apart (``a, b | c``). ``rows`` carry ``datasets`` ({context:
    digest}); jobs without (failed before their data loaded, or logged before datasets
    were) are left out. Empty when no job says."""
    known = [r for r in rows if r.get("datasets")]
    if not known:
        return ""
    contexts = sorted({c for r in known for c in r["datasets"]}, key=_context_order)
    parts = []
    for context in contexts:
        groups: dict[Any, list[str]] = {}
        for r in known:
            groups.setdefault(r["datasets"].get(context), []).append(str(r["run_name"]))
        if len(groups) == 1:
            continue
        sizes = sorted((len(names) for names in groups.values()), reverse=True)
        if sizes[0] > sizes[1]:  # a majority: name the others
            common = max(groups.values(), key=len)
            odd = [name for names in groups.values() if names is not common for name in names]
            parts.append(f"{context}: {_names(odd)} (not as most jobs)")
        else:
            parts.append(f"{context}: " + " | ".join(_names(n) for n in groups.values()))
    if not parts:
        return f"All {len(known)} jobs saw the same data (each split's digest is equal)."
    why = ""
    if "seed" in swept and all(p.split(":")[0] in ("training", "validation") for p in parts):
        why = " (the validation split is drawn with each job's seed)"
    return f"Not all jobs saw the same data{why}; " + "; ".join(parts) + "."


def _names(names: Sequence[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _context_order(context: str) -> int:
    order = ("training", "validation", "test", "unlabeled")
    return order.index(context) if context in order else len(order)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return str(value).replace("|", "\\|")


def short_value(value: Any) -> str:
    """A value as a run name shows it: 0.0123456 -> 0.0123, 1e-05 stays, text unchanged."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if isinstance(value, str) and not any(c in value for c in ".eE"):
        return value  # an integer as typed
    return f"{number:.3g}"
