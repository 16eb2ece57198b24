"""What MLflow's system metrics and denselab's heartbeat cost a run.

1. One sample, as the monitor thread takes it every ``tracking.system_metrics_interval``
   seconds: collect CPU, memory, disk and network, log them to a real sqlite store (flushed at
   once: the worst case), and read the run's status back. Prints its CPU and wall time and
   their share of one interval.
2. One heartbeat (a tag written every ``tracking.heartbeat_interval``, 30 s): its CPU and
   wall time and their share of one interval.
3. With ``--course``: the course run (Fashion-MNIST from Debian's package, 784-128-10, 10
   epochs, every figure and the model) as whole processes with system metrics on and off,
   alternating, and the ratio of their median times.

    python bench/system_metrics.py [--samples 20] [--interval 5] [--course] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow import MlflowClient

from denselab.tracking.system_metrics import RunMonitor

FASHION = "/usr/share/datasets/fashion-mnist"


def sample_cost(samples: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one sample, median over ``samples``."""
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        client = MlflowClient(uri)
        run_id = client.create_run(client.create_experiment("bench")).info.run_id
        monitor = RunMonitor(run_id, sampling_interval=1, tracking_uri=uri)
        cpu, wall = [], []
        for _ in range(samples):
            c0, w0 = time.thread_time(), time.perf_counter()
            monitor.collect_metrics()
            monitor.publish_metrics(monitor.aggregate_metrics())
            monitor.mlflow_logger.flush()
            MlflowClient(uri).get_run(run_id)  # the monitor's check that the run still runs
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - w0)
            time.sleep(0.05)  # psutil's CPU share needs time between two readings
        return statistics.median(cpu), statistics.median(wall)


def beat_cost(samples: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one heartbeat on a sqlite store, median."""
    with tempfile.TemporaryDirectory() as tmp:
        client = MlflowClient(f"sqlite:///{tmp}/mlflow.db")
        run_id = client.create_run(client.create_experiment("bench")).info.run_id
        cpu, wall = [], []
        for _ in range(samples):
            c0, w0 = time.thread_time(), time.perf_counter()
            client.set_tag(run_id, "heartbeat", str(int(time.time())))
            cpu.append(time.thread_time() - c0)
            wall.append(time.perf_counter() - w0)
        return statistics.median(cpu), statistics.median(wall)


def course_seconds(system_metrics: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        command = [
            str(Path(sys.executable).parent / "denselab-train"),
            "data=fashion_mnist",
            f"data.dir={FASHION}",
            "data.mirrors=[]",
            f"tracking.uri=sqlite:///{tmp}/mlflow.db",
            f"tracking.system_metrics={str(system_metrics).lower()}",
            "trainer.enable_progress_bar=false",
        ]
        start = time.perf_counter()
        subprocess.run(command, cwd=tmp, check=True, capture_output=True)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--interval", type=float, default=5.0)
    parser.add_argument("--course", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    cpu, wall = sample_cost(args.samples)
    print(
        f"one sample: {cpu * 1000:.1f} ms CPU, {wall * 1000:.1f} ms wall; every "
        f"{args.interval:g} s that is {cpu / args.interval:.2%} of one core "
        f"({wall / args.interval:.2%} of the time, if none of it overlapped training)"
    )
    cpu, wall = beat_cost(args.samples)
    print(
        f"one heartbeat: {cpu * 1000:.1f} ms CPU, {wall * 1000:.1f} ms wall; every 30 s "
        f"that is {cpu / 30:.3%} of one core"
    )
    if args.course:
        on, off = [], []
        for _ in range(args.repeats):
            off.append(course_seconds(False))
            on.append(course_seconds(True))
        print(
            f"course run: {statistics.median(on):.1f} s with system metrics, "
            f"{statistics.median(off):.1f} s without ({args.repeats} alternating pairs): "
            f"ratio {statistics.median(on) / statistics.median(off):.3f}"
        )


if __name__ == "__main__":
    main()
