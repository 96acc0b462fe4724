"""Trace the first epochs of one paper-scale run, epoch by epoch, and list its spikes.

Trains ``--method`` at ``--rate`` on the paper's schedule (2,700 epochs: the method anneals as
in the full run) but stops after ``--stop-epoch``, and writes every epoch's row with the
weights' steps (:func:`tcmplib.diagnostics.trace_run`) to
``<out-dir>/trace_<method>_rate<r>_seed<s>_lrmax<x>.json`` (atomically), then prints the
spikes found (:func:`tcmplib.diagnostics.spike_onsets`). ``--lr-max`` replaces the cap on
the adaptive learning rate, to test whether a smaller rate prevents a spike.

Usage::

    FPHA_ROOT=... python scripts/trace_run.py --method pmp --rate 0.99 --stop-epoch 320
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from tcmplib.data import load_dataset
from tcmplib.diagnostics import spike_onsets, trace_run
from tcmplib.model import GCNConfig
from tcmplib.profiles import get_profile
from tcmplib.sweep import git_state, provenance
from tcmplib.train import atomic_write, build_model, describe_device, resolve_device


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="pmp")
    parser.add_argument("--rate", type=float, default=0.99)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", default="fpha", help="fpha (needs $FPHA_ROOT) or synthetic")
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--stop-epoch", type=int, default=320)
    parser.add_argument("--lr-max", type=float, default=None, help="default: TrainConfig's")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out-dir", default="results/fpha-paper/diagnostics")
    args = parser.parse_args()

    data = load_dataset(args.dataset)
    gcn = GCNConfig(nodes=data.num_nodes, d_in=data.d_in, classes=data.num_classes)
    model = build_model(gcn, seed=args.seed)
    overrides = {} if args.lr_max is None else {"lr_max": args.lr_max}
    config = get_profile(args.profile).train_config(seed=args.seed, device=args.device, **overrides)
    source = git_state()  # the code that trains, not the checkout when it ends
    start = time.perf_counter()
    rows = trace_run(
        args.method, model, data, args.rate, train_config=config, stop_epoch=args.stop_epoch
    )
    wall = time.perf_counter() - start
    spikes = spike_onsets(rows)
    record = {
        "format": 1,
        "method": args.method,
        "rate": args.rate,
        "seed": args.seed,
        "dataset": args.dataset,
        "profile": args.profile,
        "stop_epoch": args.stop_epoch,
        "train_config": asdict(config),
        "rows": rows,
        "spikes": spikes,
        "provenance": provenance(describe_device(resolve_device(args.device)), wall, git=source),
    }
    name = f"trace_{args.method}_rate{args.rate:.4f}_seed{args.seed}_lrmax{config.lr_max:g}.json"
    path = atomic_write(
        Path(args.out_dir) / name,
        lambda f: f.write((json.dumps(record, indent=1, allow_nan=False) + "\n").encode()),
    )
    print(f"{len(rows)} epochs in {wall:.0f} s -> {path}")
    print(f"{'onset':>6} {'lowest':>7} {'lr':>8} {'mean step before':>17} {'10 earlier':>11}")
    for s in spikes:
        print(
            f"{int(s['onset epoch']):>6} {s['lowest train accuracy']:>7.3f} {s['lr']:>8.5f} "
            f"{s['mean step before']:>17.6f} {s['mean step 10 epochs earlier']:>11.6f}"
        )


if __name__ == "__main__":
    main()
