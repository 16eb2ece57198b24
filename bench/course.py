"""The course run as a user starts it, timed as a whole process: steps_per_batch=auto
against steps_per_batch=1 (issue 24's goal: the fit at least 1.25x faster).

Runs ``denselab-train data=fashion_mnist`` (10 epochs, batch 32, every figure, the model
logged) with each setting, alternating, ``--pairs`` times, each in a fresh folder and store,
and prints the medians of the whole process's wall seconds and of its fit: from the log
line that says how many steps a Lightning batch takes (the fit's start) to Lightning's
"`Trainer.fit` stopped" line. Needs Fashion-MNIST (Debian's dataset-fashion-mnist, or
data.dir=...). Run it on an idle machine.

    python bench/course.py [--pairs 3] [--epochs 10] [extra overrides ...]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime

STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
FIT_START = "optimizer step"
FIT_END = "`Trainer.fit` stopped"
TEST_ACC = re.compile(r"^\s*test\s+[\d,]+\s+([0-9.]+)", re.MULTILINE)  # accuracy table


def stamp(line: str) -> datetime:
    found = STAMP.match(line)
    if not found:
        raise ValueError(f"no time stamp in {line!r}")
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f")


def fit_seconds(log: str) -> float:
    """Seconds from the fit's first log line to Lightning's last, read from their stamps."""
    lines = log.splitlines()
    start = next(line for line in lines if FIT_START in line and STAMP.match(line))
    end = next(line for line in lines if FIT_END in line and STAMP.match(line))
    return (stamp(end) - stamp(start)).total_seconds()


def one_run(setting: str, epochs: int, extra: list[str]) -> tuple[float, float, str]:
    """(process seconds, fit seconds, test accuracy) of one run in a fresh folder."""
    with tempfile.TemporaryDirectory() as folder:
        command = [
            sys.executable,
            "-m",
            "denselab.train",
            "data=fashion_mnist",
            f"trainer.max_epochs={epochs}",
            "trainer.enable_progress_bar=false",
            f"steps_per_batch={setting}",
            *extra,
        ]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        log = done.stdout + done.stderr
        if done.returncode != 0:
            raise SystemExit(f"steps_per_batch={setting} failed:\n{log[-3000:]}")
        accuracy = TEST_ACC.search(log)
        return seconds, fit_seconds(log), accuracy.group(1) if accuracy else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("extra", nargs="*", help="more overrides for both runs")
    args = parser.parse_args()
    times: dict[str, list[tuple[float, float, str]]] = {"1": [], "auto": []}
    for pair in range(args.pairs):
        for setting in ("1", "auto") if pair % 2 == 0 else ("auto", "1"):
            times[setting].append(one_run(setting, args.epochs, args.extra))
            process, fit, accuracy = times[setting][-1]
            print(
                f"pair {pair + 1}: steps_per_batch={setting:<4} process {process:6.1f} s, "
                f"fit {fit:6.1f} s, test accuracy {accuracy}",
                flush=True,
            )
    medians = {
        setting: tuple(statistics.median(t[i] for t in runs) for i in (0, 1))
        for setting, runs in times.items()
    }
    (p1, f1), (pa, fa) = medians["1"], medians["auto"]
    print(
        f"medians of {args.pairs}: steps_per_batch=1 process {p1:.1f} s, fit {f1:.1f} s; "
        f"auto process {pa:.1f} s, fit {fa:.1f} s"
    )
    accuracies = {t[2] for runs in times.values() for t in runs}
    print(f"test accuracy: {', '.join(sorted(accuracies))} (one value: the same training)")
    mark = "ok" if f1 / fa >= 1.25 else "MISS"
    print(
        f"auto is {p1 / pa:.2f}x faster as a process, {f1 / fa:.2f}x in the fit "
        f"(goal >= 1.25x) {mark}"
    )


if __name__ == "__main__":
    main()
