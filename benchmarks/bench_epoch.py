"""Seconds per epoch of the baseline GCN under the shared trainer, on CPU and (if present) CUDA.

One epoch of the paper's recipe is one full-batch Adam step on the 600 training graphs plus,
when the test metrics are due, one forward pass over the 575 test graphs. This script times
both through the real code paths (:func:`tcmplib.train.train` and
:func:`tcmplib.train.evaluate`) on the embedded synthetic data, which has FPHA's shapes, and
prints the implied duration of a 2,700-epoch run. With ``--recipes`` it times each named
training recipe (:mod:`tcmplib.recipe`): an augmenting recipe draws its training inputs anew
at every step, and is timed again with its augmentation off, so that the ratio column
(against the first row) says what the augmentation costs.

Usage::

    python benchmarks/bench_epoch.py [--epochs 10] [--warmup 2] [--recipes as-written,selected]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import time
from dataclasses import dataclass, replace

import torch
from torch import nn

from tcmplib.data import SkeletonDataset
from tcmplib.profiles import get_profile
from tcmplib.recipe import Recipe, get_recipe, load_recipe_data
from tcmplib.train import NoOpHook, TrainConfig, build_model, evaluate, resolve_device, train

PAPER_EPOCHS = get_profile("paper").epochs
PAPER_EVAL_EVERY = get_profile("paper").eval_every


class EpochTimer(NoOpHook):
    """Stamps the start of every epoch; consecutive stamps bound one epoch of the trainer."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stamps: list[float] = []

    def on_epoch_start(self, model: nn.Module, epoch: int, epochs: int) -> None:
        self._stamp()

    def on_train_end(self, model: nn.Module) -> None:
        self._stamp()

    def _stamp(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stamps.append(time.perf_counter())


@dataclass(frozen=True)
class Timing:
    recipe: str
    device: str
    step_s: float  # one full-batch training step (forward, backward, Adam), bookkeeping included
    eval_s: float  # one forward pass over the test split

    @property
    def epoch_s(self) -> float:
        return self.step_s + self.eval_s

    def paper_run_min(self, eval_every: int) -> float:
        evals = PAPER_EPOCHS // eval_every
        return (PAPER_EPOCHS * self.step_s + evals * self.eval_s) / 60


def time_device(
    data: SkeletonDataset, recipe: tuple[str, Recipe], device_name: str, epochs: int, warmup: int
) -> Timing:
    device = resolve_device(device_name)
    model = build_model(recipe[1].gcn_config(data), seed=0)
    timer = EpochTimer(device)
    # eval_every larger than the run: the epochs timed here are training steps only.
    config = TrainConfig(
        epochs=warmup + epochs, eval_every=10**6, device=device_name, **recipe[1].train_overrides()
    )
    result = train(model, data, config, hook=timer, progress=False)
    # The last stamp also covers the end of the final epoch, whose test evaluation is forced.
    durations = [b - a for a, b in itertools.pairwise(timer.stamps)][warmup:-1]
    evals = []
    for _ in range(warmup + epochs):
        start = time.perf_counter()
        evaluate(model, data.x_test, data.y_test)  # float() of the metrics synchronises CUDA
        evals.append(time.perf_counter() - start)
    return Timing(
        recipe=recipe[0],
        device=result.device,
        step_s=statistics.median(durations),
        eval_s=statistics.median(evals[warmup:]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10, help="timed epochs per device")
    parser.add_argument("--warmup", type=int, default=2, help="untimed epochs first")
    parser.add_argument(
        "--recipes", default="as-written", help="comma-separated recipe names (tcmplib.recipe)"
    )
    args = parser.parse_args()
    if args.epochs < 2 or args.warmup < 0:
        parser.error("--epochs: expected >= 2; --warmup: expected >= 0")
    try:
        recipes = [(name, get_recipe(name)) for name in args.recipes.split(",")]
    except ValueError as err:
        parser.error(f"--recipes: {err}")
    # An augmenting recipe is also timed with its augmentation off: the difference is what
    # drawing the inputs anew at every epoch costs.
    recipes = [
        row
        for name, recipe in recipes
        for row in [(name, recipe)]
        + (
            [(f"{name}, no augmentation", replace(recipe, rotate_deg=0.0, scale=0.0, time_crop=0.0))]
            if recipe.augments
            else []
        )
    ]

    # Other processes on the machine inflate every timing: print the load next to them.
    load_before = os.getloadavg()[0]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    timings = []
    for recipe in recipes:
        data = load_recipe_data(recipe[1], "synthetic")
        timings += [time_device(data, recipe, name, args.epochs, args.warmup) for name in devices]

    print(
        f"baseline GCN, {len(data.y_train)} training / {len(data.y_test)} test synthetic graphs, "
        f"median of {args.epochs} epochs, torch {torch.__version__}, "
        f"1-min load average {load_before:.1f} on {os.cpu_count()} CPUs before timing\n"
    )
    header = (
        "| recipe | device | train step (s) | vs first recipe | eval (s) "
        "| epoch = step + eval (s) "
        f"| {PAPER_EPOCHS:,} epochs, eval every epoch (min) "
        f"| {PAPER_EPOCHS:,} epochs, eval every {PAPER_EVAL_EVERY} (min) |"
    )
    print(header)
    print("|" + "---|" * 8)
    first = {t.device: t.step_s for t in reversed(timings)}
    for t in timings:
        print(
            f"| {t.recipe} | {t.device} | {t.step_s:.3f} | {t.step_s / first[t.device]:.2f}x "
            f"| {t.eval_s:.3f} | {t.epoch_s:.3f} "
            f"| {t.paper_run_min(1):.1f} | {t.paper_run_min(PAPER_EVAL_EVERY):.1f} |"
        )


if __name__ == "__main__":
    main()
