"""A search's story on its parent run: every trial (number, state, values, settings, run),
the best value so far per trial, which settings mattered, and for two objectives the
Pareto front of accuracy against size; the study's name and storage, and the command that
trains the best trial alone.

The figures are pure functions of plain rows; :func:`log_search` reads the study and the
trials' runs and logs them while the parent is still RUNNING (its summary follows).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Optional, Sequence

import optuna
from matplotlib.figure import Figure
from omegaconf import DictConfig

from denselab.sweeps.parent import SEARCH_NOTE_TAG
from denselab.sweeps.space import SearchSpace
from denselab.sweeps.study import SearchSettings, shown
from denselab.sweeps.trial import PRUNED_ATTR, RUN_ATTR, VALUES_ATTR

log = logging.getLogger("denselab")

FRONT_TAG = "pareto_front_of"  # on each run of the front: the parent whose search found it
STATE_COLORS = {"COMPLETE": "tab:blue", "PRUNED": "tab:orange", "FAIL": "tab:red"}


def trial_rows(study: optuna.Study, objectives: Sequence[str]) -> list[dict[str, Any]]:
    """One row per trial the study has told: its number, state, objectives' values (its
    job's, for a pruned trial too), settings, run and the epoch it was pruned after."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name == "RUNNING" or t.state.name == "WAITING":
            continue
        values = t.user_attrs.get(VALUES_ATTR) or t.values or [None] * len(objectives)
        rows.append({
            "trial": t.number,
            "state": t.state.name,
            **{name: values[i] for i, name in enumerate(objectives)},
            **{key: t.params.get(key) for key in sorted(t.params)},
            "run_id": t.user_attrs.get(RUN_ATTR),
            "pruned_epoch": t.user_attrs.get(PRUNED_ATTR),
        })
    return rows


def history_figure(rows: Sequence[dict], objective: str, direction: str) -> Figure:
    """Each trial's value by its number, coloured by state, and the best so far (of the
    COMPLETE trials: a pruned trial's value is from fewer epochs)."""
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for state, color in STATE_COLORS.items():
        points = [(r["trial"], r[objective]) for r in rows
                  if r["state"] == state and r[objective] is not None]
        if points:
            x, y = zip(*points)
            ax.scatter(x, y, s=28, color=color, label=state, zorder=3,
                       marker="x" if state != "COMPLETE" else "o")
    best, line = None, []
    pick = max if direction == "maximize" else min
    for r in sorted(rows, key=lambda r: r["trial"]):
        if r["state"] == "COMPLETE" and r[objective] is not None:
            best = r[objective] if best is None else pick(best, r[objective])
        if best is not None:
            line.append((r["trial"], best))
    if line:
        x, y = zip(*line)
        ax.step(x, y, where="post", color="black", lw=1.2, label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(objective)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right" if direction == "maximize" else "upper right")
    fig.suptitle(f"Search history: {objective} per trial ({len(rows)} trials)")
    return fig


def importance_figure(importances: dict[str, float], objective: str) -> Figure:
    """How much of ``objective``'s variation each setting explains (fANOVA), largest on top."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = Figure(figsize=(6.0, 0.5 * len(items) + 1.4), layout="constrained")
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    for i, (_, v) in enumerate(items):
        ax.text(v, i, f" {v:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, max(1.0, max(v for _, v in items) * 1.15))
    ax.set_xlabel(f"importance for {objective}")
    fig.suptitle("Which settings mattered")
    return fig


def pareto_figure(points: Sequence[dict], objectives: Sequence[str]) -> Figure:
    """Each COMPLETE trial by its two objectives, the Pareto front highlighted and joined,
    and the networks named (the course's 784-128-10 and multinomial ones by name)."""
    first, second = objectives
    fig = Figure(figsize=(6.8, 4.4), layout="constrained")
    ax = fig.add_subplot()
    rest = [p for p in points if not p["front"]]
    front = sorted((p for p in points if p["front"]), key=lambda p: p[second])
    if rest:
        ax.scatter([p[second] for p in rest], [p[first] for p in rest], s=24,
                   color="tab:gray", alpha=0.6, label="trial")
    if front:
        ax.plot([p[second] for p in front], [p[first] for p in front], "-o", ms=6,
                color="tab:red", label="Pareto front", zorder=3)
    for p in points:
        if p.get("label") and (p["front"] or p.get("course")):
            ax.annotate(p["label"], (p[second], p[first]), textcoords="offset points",
                        xytext=(4, -10 if p.get("course") else 4), fontsize=7,
                        weight="bold" if p.get("course") else "normal")
    if second == "params_total" and points and min(p[second] for p in points) > 0:
        ax.set_xscale("log")
    ax.set_xlabel(second)
    ax.set_ylabel(first)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"{first} against {second}: {len(front)} of {len(points)} trials on the front")
    return fig


def network_label(params: dict[str, str], tags: dict[str, str]) -> tuple[Optional[str], bool]:
    """A network's widths (``784-128-10``) from its run's params and input shape, and
    whether it is one of the course's two MNIST networks (784-128-10, the multinomial 784-10)."""
    hidden, shape = params.get("model.hidden_sizes"), tags.get("input_shape")
    if hidden is None or not shape:
        return None, False
    inputs = math.prod(int(n) for n in shape.split("x"))
    sizes = [int(n) for n in hidden.strip("[]").replace(" ", "").split(",") if n]
    widths = [inputs, *sizes]
    classes = _classes(widths, params)
    label = "-".join(map(str, widths + ([classes] if classes else [])))
    course = inputs == 784 and sizes in ([], [128]) and classes in (None, 10)
    if course:
        label += " (course, multinomial)" if not sizes else " (course)"
    return label, course


def _classes(widths: list[int], params: dict[str, str]) -> Optional[int]:
    # Runs log their size, not their classes: the last layer holds what the others do not.
    try:
        total = int(params["params_total"])
    except (KeyError, ValueError):
        return None
    norm = 2 if str(params.get("model.batch_norm")).lower() == "true" else 0
    inner = sum(a * b + b + norm * b for a, b in zip(widths, widths[1:]))
    last, rest = divmod(total - inner, widths[-1] + 1)
    return last if rest == 0 and last > 0 else None


def log_search(
    config: DictConfig,
    parent_id: str,
    study: optuna.Study,
    settings: SearchSettings,
    space: SearchSpace,
    command: Optional[str],
) -> None:
    """The search's story on its parent run (see the module's docstring)."""
    from denselab.tracking.runs import tracking_uri
    from denselab.tracking.store import Store

    client = Store(tracking_uri(config)).client
    rows = trial_rows(study, settings.objectives)
    client.log_dict(parent_id, {"columns": list(rows[0]) if rows else [],
                                "data": [list(r.values()) for r in rows]},
                    "tables/search_trials.json")
    first, way = settings.objectives[0], settings.directions[0]
    figures = {"search_history": history_figure(rows, first, way)}
    importances = _importances(study, settings)
    if importances:
        figures["search_importances"] = importance_figure(importances, first)
    states = {s: sum(r["state"] == s for r in rows) for s in STATE_COLORS}
    tags = {
        "optuna.study": settings.study_name,
        "optuna.storage": shown(settings.storage),
        "optuna.sampler": settings.sampler,
        "optuna.pruner": settings.pruner["name"],
        "optuna.objectives": ",".join(
            f"{o} ({d})" for o, d in zip(settings.objectives, settings.directions)
        ),
        "optuna.trials": ", ".join(f"{n} {s}" for s, n in states.items()),
    }
    if command:
        tags["best_command"] = command
    if settings.multi:
        front, fig = _front(client, study, rows, settings.objectives)
        figures["pareto_front"] = fig
        for run_id in front:
            client.set_tag(run_id, FRONT_TAG, parent_id)
        tags["pareto_front_runs"] = ",".join(front)
    for name, fig in figures.items():
        client.log_figure(parent_id, fig, f"figures/{name}.png", save_kwargs={"dpi": 100})
    tags[SEARCH_NOTE_TAG] = _note(settings, states, command, importances)
    for key, value in tags.items():
        client.set_tag(parent_id, key, value[:5000])


def _importances(study: optuna.Study, settings: SearchSettings) -> dict[str, float]:
    done = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(done) < 2 or len(done[0].params) < 2:  # one setting explains all there is
        return {}
    try:
        return optuna.importance.get_param_importances(
            study,
            evaluator=optuna.importance.FanovaImportanceEvaluator(seed=settings.seed or 0),
            target=(lambda t: t.values[0]) if settings.multi else None,
        )
    except Exception as err:  # too few distinct trials, one value per setting, ...
        log.info("No parameter importances: %s", err)
        return {}


def _front(client, study, rows, objectives) -> tuple[list[str], Figure]:
    on_front = {t.number for t in study.best_trials}
    points = []
    for r in rows:
        if r["state"] != "COMPLETE" or any(r[o] is None for o in objectives):
            continue
        label, course = None, False
        if r["run_id"]:
            run = client.get_run(r["run_id"])
            label, course = network_label(run.data.params, run.data.tags)
        points.append({**r, "front": r["trial"] in on_front, "label": label, "course": course})
    front = [p["run_id"] for p in points if p["front"] and p["run_id"]]
    return front, pareto_figure(points, objectives)


def _note(settings, states, command, importances) -> str:
    said = ", ".join(f"{n} {s}" for s, n in states.items())
    lines = [
        f"**Optuna search**: study `{settings.study_name}` in `{shown(settings.storage)}`, "
        f"{settings.sampler} sampler, pruner {settings.pruner['name']}; trials: {said}.",
    ]
    if importances:
        top = ", ".join(f"{k} {v:.2f}" for k, v in list(importances.items())[:3])
        lines.append(f"Settings that mattered most: {top}.")
    if command:
        lines.append(f"The best trial alone: `{command}`")
    return "\n\n".join(lines)
