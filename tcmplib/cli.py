"""The ``tcmp`` command line: one subcommand per task (train, sweep, ...)."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from tcmplib import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcmp",
        description="Tiny GCNs with topologically consistent magnitude pruning: "
        "train, prune and sweep the paper's experiments.",
    )
    parser.add_argument("--version", action="version", version=f"tcmp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Each subcommand is added by an `_add_...(commands)` function with a `handler` default
    # that takes the parsed arguments and returns the exit status.
    _add_train(commands)
    return parser


# -------------------------------------------------------------------------------------------
# tcmp train
# -------------------------------------------------------------------------------------------


def _add_train(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from tcmplib.profiles import PROFILES

    train = commands.add_parser(
        "train",
        help="train the baseline GCN and write a result JSON",
        description="Train the baseline attention GCN (no pruning) with the paper's recipe "
        "and write its metrics, configuration and history to a JSON file.",
    )
    train.add_argument("--dataset", choices=("synthetic", "fpha"), default="synthetic")
    train.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="book",
        help="run length: smoke (seconds), book (about 1.5 min on CPU), paper (2,700 epochs)",
    )
    train.add_argument(
        "--seed", type=_non_negative_int, default=0, help="model init and batch seed"
    )
    train.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    train.add_argument(
        "--out",
        type=Path,
        default=None,
        help="result JSON (default: runs/train-DATASET-PROFILE-seedN.json)",
    )
    train.add_argument(
        "--fpha-root", type=Path, default=None, help="FPHA folder (default: $FPHA_ROOT)"
    )
    train.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="write checkpoints there (profiles with checkpoint_every) and resume from them",
    )
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.set_defaults(handler=_run_train)


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _run_train(args: argparse.Namespace) -> int:
    import torch

    from tcmplib.data import load_dataset
    from tcmplib.model import GCNConfig
    from tcmplib.profiles import get_profile
    from tcmplib.train import atomic_write, build_model, config_hash, train

    profile = get_profile(args.profile)
    config = profile.train_config(seed=args.seed, device=args.device)
    if args.checkpoint_dir is not None and config.checkpoint_every is None:
        print(
            f"--checkpoint-dir: profile {profile.name!r} writes no checkpoints; "
            "use --profile paper or leave the option out",
            file=sys.stderr,
        )
        return 2
    data = load_dataset(args.dataset, root=args.fpha_root)
    gcn = GCNConfig(nodes=data.num_nodes, d_in=data.d_in, classes=data.num_classes)
    model = build_model(gcn, seed=args.seed)
    result = train(
        model,
        data,
        config,
        progress=not args.no_progress,
        checkpoint_dir=args.checkpoint_dir,
    )

    out = args.out or Path("runs") / f"train-{args.dataset}-{profile.name}-seed{args.seed}.json"
    record = {
        "command": "train",
        "dataset": args.dataset,
        "profile": profile.name,
        "seed": args.seed,
        "model": {"config": asdict(gcn), "num_weights": model.num_weights()},
        "train_config": asdict(config),
        "config_hash": config_hash(config),
        "metrics": {"test": result.test, "train": result.train},
        "wall_time_s": result.wall_time_s,
        "device": result.device,
        "resumed_from_epoch": result.resumed_from_epoch,
        "versions": {
            "tcmplib": __version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "history": result.history,
    }
    text = json.dumps(record, indent=2) + "\n"
    atomic_write(out, lambda handle: handle.write(text.encode()))
    print(
        f"{args.dataset}, profile {profile.name}, seed {args.seed}: "
        f"test class-average accuracy {100 * result.test['class_avg_accuracy']:.2f}% "
        f"(plain {100 * result.test['accuracy']:.2f}%), "
        f"{model.num_weights():,} weights, {config.epochs} epochs in "
        f"{result.wall_time_s:.1f} s on {result.device}"
    )
    print(f"wrote {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
