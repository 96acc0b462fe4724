"""Seconds per training epoch of the baseline and of every pruning method, against the FLOP bound.

One epoch of the paper's recipe is one full-batch Adam step on the 600 training graphs. This
script times epochs through the real code paths: each method's own training phases
(:func:`tcmplib.pruning.prune`, hooks, masks and all), stamped by an observer
(:func:`tcmplib.train.observing`), on the embedded synthetic data, which has FPHA's shapes.
Next to each time it prints

- the epoch's arithmetic: the dense network's multiply-adds per graph (forward), x2 FLOP,
  x3 for forward + backward, x600 graphs (the same count for every method: masks do not
  make the dense kernels do less work);
- the fp32 matmul peak of this CPU at this thread count, measured in the same run (a
  2048^3 matmul), and the FLOP bound = arithmetic / peak;
- the ratio of the epoch to that bound, and of each method's epoch to the baseline's;
- the implied training time of a paper-scale run (2,700 epochs, test metrics every 50).

With ``--precisions fp32,bf16`` every row is timed in both training precisions
(:data:`tcmplib.train.PRECISIONS`); the bound stays the fp32 one, so a bf16 row can fall
under 1x.

With ``--recipes`` the baseline is timed under each named recipe instead, and an augmenting
recipe again with its augmentation off (what drawing fresh inputs at every epoch costs).

Usage::

    python benchmarks/bench_epoch.py [--threads 1,2] [--epochs 10] [--warmup 2]
                                     [--methods baseline,mp,greedy,tcmp,pmp] [--rate 0.95]
    python benchmarks/bench_epoch.py --recipes as-written,selected
    python benchmarks/bench_epoch.py --recipe selected-per-head-smoothed --precisions fp32,bf16
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, replace

import torch
from torch import nn

from tcmplib.data import SkeletonDataset
from tcmplib.model import GCNConfig
from tcmplib.profiles import Profile, get_profile
from tcmplib.pruning import METHODS, prune
from tcmplib.recipe import Recipe, get_recipe, load_recipe_data
from tcmplib.train import build_model, evaluate, observing

PAPER = get_profile("paper")


def forward_macs(config: GCNConfig) -> int:
    """Multiply-adds of one graph's forward pass through the dense network."""
    n, d, h = config.nodes, config.d_in, config.heads
    return (
        2 * h * n * d * config.qk_dim  # queries and keys
        + h * n * n * config.qk_dim  # attention scores
        + n * d * config.channels  # values
        + h * n * n * config.channels  # aggregation
        + config.fc_in * config.classes  # dense layer
    )


def matmul_peak(threads: int, size: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of an fp32 ``size``^3 matmul on ``threads`` threads (best of ``repeats``)."""
    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * size**3 / best


def _seconds(work: object) -> float:
    start = time.perf_counter()
    work()  # type: ignore[operator]
    return time.perf_counter() - start


@dataclass(frozen=True)
class Timing:
    label: str
    threads: int
    epoch_s: float  # median training epoch, the method's own per-epoch work included
    eval_s: float  # one forward pass over the test split
    flop: float  # arithmetic of one training epoch
    peak: float  # fp32 matmul FLOP/s at this thread count

    @property
    def bound_s(self) -> float:
        return self.flop / self.peak

    @property
    def paper_run_min(self) -> float:
        evals = PAPER.epochs // PAPER.eval_every
        return (PAPER.epochs * self.epoch_s + evals * self.eval_s) / 60


def time_epochs(
    data: SkeletonDataset, recipe: Recipe, method: str, rate: float, epochs: int, warmup: int
) -> tuple[float, float]:
    """Median seconds of a training epoch of ``method`` (every phase), and of an evaluation."""
    stamps: list[tuple[int, float]] = []

    def stamp(row: dict[str, float], model: nn.Module) -> None:
        stamps.append((int(row["epoch"]), time.perf_counter()))

    profile = Profile(
        "bench", warmup + epochs, eval_every=10**6, checkpoint_every=None, description="timing"
    )
    model = build_model(recipe.gcn_config(data), seed=0)
    with observing(stamp):
        result = prune(
            method,
            model,
            data,
            0.0 if method == "baseline" else rate,
            profile=profile,
            device="cpu",
            progress=False,
            train_overrides=recipe.train_overrides(),
        )
    # Consecutive epochs of one phase (a phase restarts at epoch 1), past its warm-up, and
    # not its last (whose test evaluation is forced): what selecting a mask between phases
    # costs is not an epoch's.
    durations = [
        b - a
        for (i, a), (j, b) in zip(stamps, stamps[1:], strict=False)
        if j == i + 1 and j > warmup and j < warmup + epochs
    ]
    model = result.model
    evals = [_seconds(lambda: evaluate(model, data.x_test, data.y_test)) for _ in range(5)]
    return statistics.median(durations[warmup:]), statistics.median(evals[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    parser.add_argument("--epochs", type=int, default=10, help="timed epochs per phase")
    parser.add_argument("--warmup", type=int, default=2, help="untimed epochs first")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    parser.add_argument("--rate", type=float, default=0.95, help="pruning rate of the methods")
    parser.add_argument("--recipe", default="selected", help="the recipe the methods train under")
    parser.add_argument(
        "--precisions",
        default="fp32",
        help="comma-separated training precisions (fp32, bf16): every row under each",
    )
    parser.add_argument(
        "--recipes",
        default=None,
        help="time the baseline under these recipes instead of the methods",
    )
    args = parser.parse_args()
    if args.epochs < 2 or args.warmup < 0:
        parser.error("--epochs: expected >= 2; --warmup: expected >= 0")
    try:
        threads = [int(t) for t in args.threads.split(",")]
        if args.recipes:
            rows = []
            for name in args.recipes.split(","):
                recipe = get_recipe(name)
                rows.append((name, recipe, "baseline"))
                if recipe.augments:
                    still = replace(recipe, rotate_deg=0.0, scale=0.0, time_crop=0.0)
                    rows.append((f"{name}, no augmentation", still, "baseline"))
        else:
            recipe = get_recipe(args.recipe)
            rows = [(m, recipe, m) for m in args.methods.split(",")]
            unknown = [m for m in args.methods.split(",") if m not in METHODS]
            if unknown:
                raise ValueError(f"unknown method(s) {unknown}; expected some of {list(METHODS)}")
        precisions = args.precisions.split(",")
        rows = [
            (label if p == "fp32" else f"{label}, {p}", replace(recipe, precision=p), method)
            for p in precisions
            for label, recipe, method in rows
        ]
    except ValueError as err:
        parser.error(str(err))

    load_before = os.getloadavg()[0]
    timings: list[Timing] = []
    for count in threads:
        peak = matmul_peak(count)
        for label, recipe, method in rows:
            data = load_recipe_data(recipe, "synthetic")
            flop = 2 * 3 * forward_macs(recipe.gcn_config(data)) * len(data.y_train)
            epoch_s, eval_s = time_epochs(data, recipe, method, args.rate, args.epochs, args.warmup)
            timings.append(Timing(label, count, epoch_s, eval_s, flop, peak))

    print(
        f"{len(data.y_train)} training / {len(data.y_test)} test synthetic graphs of FPHA's "
        f"shape, recipe {args.recipe if not args.recipes else 'per row'}, methods at rate "
        f"{args.rate}, median of {args.epochs} epochs per phase, torch {torch.__version__}, "
        f"1-min load average {load_before:.1f} on {os.cpu_count()} CPUs before timing\n"
    )
    print(
        "| row | threads | epoch (s) | vs first row | GFLOP | peak (GFLOP/s) | bound (s) "
        f"| epoch / bound | eval (s) | {PAPER.epochs:,} epochs (min) |"
    )
    print("|" + "---|" * 10)
    first = {t.threads: t.epoch_s for t in reversed(timings)}
    for t in timings:
        print(
            f"| {t.label} | {t.threads} | {t.epoch_s:.3f} | {t.epoch_s / first[t.threads]:.2f}x "
            f"| {t.flop / 1e9:.1f} | {t.peak / 1e9:.0f} | {t.bound_s:.3f} "
            f"| {t.epoch_s / t.bound_s:.2f}x | {t.eval_s:.3f} | {t.paper_run_min:.1f} |"
        )


if __name__ == "__main__":
    main()
