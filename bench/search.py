"""What pruning saves: the same Optuna search with the median pruner and without.

    python bench/search.py [--trials 16] [--epochs 8] [override ...]   # default: Fashion-MNIST

Both run ``denselab-train -m hparams_search=mlp`` (the preset's space and TPE sampler, the
same seed, so both ask the same first trials) into a fresh store each:

- ``pruned``: the preset's median pruner (a trial whose val/acc is below the median of the
  finished trials at the same epoch stops there);
- ``unpruned``: ``hydra.sweeper.pruner=none``, every trial trains all its epochs.

It prints each search's wall time, epochs trained, and best ``val/acc_best``; the goals: the
pruned search takes <= 0.6x the unpruned one's time, and its best is within 0.5 points.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def console_script() -> str:
    return str(Path(sys.executable).parent / "denselab-train")


def run_search(pruner: str, trials: int, epochs: int, overrides: list[str]) -> dict:
    """Wall seconds of the search, its trials' states and epochs, its best val/acc_best."""
    import optuna
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        command = [
            console_script(), "-m", "hparams_search=mlp",
            f"hydra.sweeper.n_trials={trials}", f"hydra.sweeper.pruner={pruner}",
            f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false", *overrides,
        ]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"{pruner}: the search failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        storage = f"sqlite:///{tmp}/mlruns/optuna.db"
        (summary,) = optuna.get_all_study_summaries(storage)
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        states = [t.state.name for t in study.trials]
        client = MlflowClient(f"sqlite:///{tmp}/mlruns/mlflow.db")
        runs = [
            r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
            if "mlflow.parentRunId" in r.data.tags
        ]
        epochs_run = sum(len(client.get_metric_history(r.info.run_id, "val/acc")) for r in runs)
        best = max(r.data.metrics.get("val/acc_best", 0.0) for r in runs)
        return {
            "wall": wall, "best": best, "epochs": epochs_run,
            "pruned": states.count("PRUNED"), "complete": states.count("COMPLETE"),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("overrides", nargs="*", default=["data=fashion_mnist"])
    args = parser.parse_args()
    print(f"{args.trials}-trial search, {args.epochs} epochs, {' '.join(args.overrides)}")
    results = {}
    for pruner in ("none", "median"):
        results[pruner] = r = run_search(pruner, args.trials, args.epochs, args.overrides)
        print(
            f"  pruner={pruner:6}: {r['wall']:7.1f} s, {r['epochs']:3d} epochs trained, "
            f"{r['complete']} COMPLETE, {r['pruned']} PRUNED, best val/acc_best {r['best']:.4f}"
        )
    ratio = results["median"]["wall"] / results["none"]["wall"]
    gap = 100 * (results["none"]["best"] - results["median"]["best"])
    print(f"time, pruned / unpruned: {ratio:.2f}x (goal <= 0.60)")
    print(f"best val/acc_best, unpruned - pruned: {gap:+.2f} points (goal <= 0.50)")


if __name__ == "__main__":
    main()
