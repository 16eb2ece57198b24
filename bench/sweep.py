"""The same 8-job sweep, jobs one after another against side by side, and where a job's
overhead goes.

    python bench/sweep.py [--jobs 8] [--epochs 2] [override ...]   # default: Fashion-MNIST

Each launcher runs ``denselab-train -m seed=1..N`` (figures on) into a fresh store:

- ``basic``: Hydra's default, every job in the one process, one after another;
- ``parallel``: denselab's preset (joblib): one worker process per CPU, reused from job to
  job, so each worker pays the imports once;
- ``submitit_local``: one fresh process per job, all started at once.

The ratio is the sequential wall time over each launcher's (goal: parallel >= 1.6x on 2
cores). Then the costs a job pays before its run exists, each measured in fresh processes:
starting Python, importing what a run imports, and opening the store and creating a run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAUNCHERS = ("basic", "parallel", "submitit_local")


def console_script() -> str:
    return str(Path(sys.executable).parent / "denselab-train")


def run_sweep(launcher: str, jobs: int, epochs: int, overrides: list[str]) -> dict:
    """Wall seconds of the sweep, and its children's run durations, from its store."""
    from mlflow import MlflowClient

    with tempfile.TemporaryDirectory() as tmp:
        seeds = ",".join(str(s) for s in range(1, jobs + 1))
        command = [
            console_script(),
            "-m",
            f"hydra/launcher={launcher}",
            f"seed={seeds}",
            f"trainer.max_epochs={epochs}",
            "trainer.enable_progress_bar=false",
            *overrides,
        ]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=tmp, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"{launcher}: the sweep failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        client = MlflowClient(f"sqlite:///{tmp}/mlruns/mlflow.db")
        runs = [
            r
            for e in client.search_experiments()
            for r in client.search_runs([e.experiment_id])
            if "mlflow.parentRunId" in r.data.tags
        ]
        durations = [(r.info.end_time - r.info.start_time) / 1000 for r in runs]
        accuracy = max(r.data.metrics.get("val/acc_best", 0.0) for r in runs)
    return {"wall": wall, "runs": len(runs), "durations": durations, "best": accuracy}


def timed(code: str, repeat: int = 3) -> float:
    """Fastest wall seconds of ``python -c code`` in a fresh process."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        best = min(best, time.perf_counter() - start)
    return best


def overheads() -> dict[str, float]:
    """What a fresh job process pays before training: seconds of each stage, in order."""
    python = timed("pass")
    imports = timed("import torch, pytorch_lightning, mlflow, denselab.train") - python
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        subprocess.run(  # the store exists before the jobs start, as a sweep prepares it
            [sys.executable, "-c", f"from mlflow import MlflowClient; MlflowClient('{uri}')"
             ".search_experiments()"],
            check=True,
            capture_output=True,
        )
        store = timed(
            "import mlflow; from denselab.tracking.store import open_store; "
            f"c = open_store('{uri}'); e = c.get_experiment_by_name('b') or "
            f"c.create_experiment('b'); c.create_run(str(e if isinstance(e, str) else "
            "e.experiment_id))",
        ) - timed("import mlflow, denselab.tracking.runs")
    return {"start Python": python, "imports (torch, Lightning, MLflow)": imports,
            "open the store, create the run": store}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--launchers", default=",".join(LAUNCHERS))
    parser.add_argument("overrides", nargs="*", default=["data=fashion_mnist"])
    args = parser.parse_args()

    from denselab.training.threads import machine_cpus

    print(f"{args.jobs}-job sweep, {args.epochs} epochs, figures on, {machine_cpus()} CPUs: "
          f"{' '.join(args.overrides)}")
    results = {}
    for launcher in args.launchers.split(","):
        results[launcher] = run_sweep(launcher, args.jobs, args.epochs, args.overrides)
        r = results[launcher]
        print(
            f"  {launcher:15s} {r['wall']:7.1f} s wall  {r['runs']} runs  "
            f"median run {statistics.median(r['durations']):5.1f} s  best val/acc {r['best']:.4f}"
        )
    if "basic" in results:
        reference = results["basic"]["wall"]
        for launcher, r in results.items():
            if launcher != "basic":
                print(f"  {launcher} vs one after another: {reference / r['wall']:.2f}x faster")
        # What the one-process sweep spends outside its runs: Hydra's job set-up and the
        # imports, paid once for all jobs.
        outside = reference - sum(results["basic"]["durations"])
        print(f"  basic: {outside / args.jobs:.2f} s per job outside its run (imports once)")

    print("Per-job costs before a run exists, in a fresh process (fastest of 3):")
    for stage, seconds in overheads().items():
        print(f"  {stage:36s} {seconds:5.2f} s")
    print(
        "  A launcher with one process per job (submitit_local, SLURM) pays all of them per "
        "job; the parallel preset's workers pay the first two once per worker."
    )


if __name__ == "__main__":
    main()
