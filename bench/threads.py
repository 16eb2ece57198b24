"""Seconds per training step with 1 and with more torch threads, across network sizes.

The evidence behind denselab.training.threads.auto_threads: for each (input size, hidden widths,
batch size) it times plain SGD steps of the MLP (forward, loss, backward, step) with one
thread and with ``--threads`` threads, alternating, best of ``--repeats``, and prints the
ratio next to the multiply-adds per step and what the rule picks. Run it on an idle machine:
other processes steal from the many-thread side first.

    python bench/threads.py [--threads 2] [--repeats 5] [--seconds 0.3]
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from denselab.training.network import build_mlp
from denselab.training.threads import auto_threads, step_macs

INPUTS = (64, 784, 3072, 12288)
HIDDEN = ((), (128,), (512,), (128, 128, 128), (1024, 1024))
BATCHES = (32, 128, 512)


def seconds_per_step(net, opt, x, y, threads: int, budget: float) -> float:
    torch.set_num_threads(threads)
    steps, start = 0, time.perf_counter()
    while True:
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
        elapsed = time.perf_counter() - start
        if elapsed > budget and steps >= 3:
            return elapsed / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.3, help="timing budget per try")
    args = parser.parse_args()
    print(f"torch {torch.__version__}: 1 thread against {args.threads}")
    print(
        f"{'input':>6} {'hidden':>16} {'batch':>6} {'MMAC/step':>10} {'1 thr ms':>9} "
        f"{args.threads:>2} thr ms {'ratio':>6} {'rule':>5}"
    )
    for features, hidden, batch in itertools.product(INPUTS, HIDDEN, BATCHES):
        net = build_mlp(features, list(hidden), 10)
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        x, y = torch.rand(batch, features), torch.randint(0, 10, (batch,))
        one, many = [], []
        for _ in range(args.repeats):  # alternate: drift in load hits both alike
            one.append(seconds_per_step(net, opt, x, y, 1, args.seconds))
            many.append(seconds_per_step(net, opt, x, y, args.threads, args.seconds))
        ratio = min(many) / min(one)
        widths = [features, *hidden, 10]
        rule = auto_threads(widths, batch, args.threads)
        print(
            f"{features:>6} {str(list(hidden)):>16} {batch:>6} "
            f"{step_macs(widths, batch) / 1e6:>10.1f} {1000 * min(one):>9.3f} "
            f"{1000 * min(many):>9.3f} {ratio:>6.2f} {rule:>5}"
        )


if __name__ == "__main__":
    main()
