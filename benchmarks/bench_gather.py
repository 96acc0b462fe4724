"""Gather or scatter? The dense layer of a compact network, timed both ways.

A compact network's dense layer reads only the convolution outputs it keeps. It can gather
those columns of the (batch, 43,008) activation and multiply by its compact weights, or
multiply the whole activation by its weights scattered into a zero-filled matrix. The first
does less arithmetic, the second reads memory in order. This script times both on random
data for several shares of kept outputs, alternating the two, and prints the medians: the
evidence behind :data:`tcmplib.compact.SCATTER_MIN_SHARE` and ``SCATTER_MIN_BATCH``.

Usage::

    python benchmarks/bench_gather.py [--batches 1 64 575] [--shares 0.05 0.25 0.5 0.8]
        [--repeats 15] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import torch
from torch import Tensor

from tcmplib.compact import SCATTER_MIN_BATCH, SCATTER_MIN_SHARE
from tcmplib.model import GCNConfig

PROG = "bench_gather.py"


def median_ms(function: object, repeats: int) -> float:
    assert callable(function)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64, 575])
    parser.add_argument(
        "--shares", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.25, 0.35, 0.5, 0.65, 0.8]
    )
    parser.add_argument("--repeats", type=int, default=15, help="timed calls of each way")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1 or min(args.batches) < 1:
        parser.error("--repeats, --threads and --batches: expected integers >= 1")
    if not all(0.0 < share <= 1.0 for share in args.shares):
        parser.error("--shares: expected fractions in (0, 1]")

    torch.set_num_threads(args.threads)
    config = GCNConfig()
    grid, classes = config.fc_in, config.classes
    generator = torch.Generator().manual_seed(0)
    print(
        f"dense layer of {grid:,} inputs x {classes} classes, {args.threads} thread(s), median "
        f"ms of {args.repeats} calls; the library scatters from share {SCATTER_MIN_SHARE} and "
        f"batch {SCATTER_MIN_BATCH}\n"
    )
    print(f"{'batch':>6}  {'kept share':>10}  {'gather ms':>10}  {'scatter ms':>10}  faster")
    with torch.inference_mode():
        for batch in args.batches:
            features = torch.randn(batch, grid, generator=generator)
            for share in args.shares:
                kept = max(1, round(share * grid))
                rows = torch.randperm(grid, generator=generator)[:kept].sort().values
                weights = torch.randn(kept, classes, generator=generator)

                def gather(x: Tensor = features, rows: Tensor = rows, w: Tensor = weights) -> None:
                    x[:, rows] @ w

                def scatter(x: Tensor = features, rows: Tensor = rows, w: Tensor = weights) -> None:
                    x @ w.new_zeros(grid, classes).index_copy(0, rows, w)

                gathered = scattered = 0.0
                for _ in range(2):  # alternate, so that drifting load hits both ways alike
                    gathered += median_ms(gather, args.repeats) / 2
                    scattered += median_ms(scatter, args.repeats) / 2
                faster = "gather" if gathered < scattered else "scatter"
                print(
                    f"{batch:>6}  {share:>10.2f}  {gathered:>10.3f}  {scattered:>10.3f}  {faster}"
                )


if __name__ == "__main__":
    main()
