"""The ``tcmp`` command line: one subcommand per task (train, sweep, ...)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tcmplib import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcmp",
        description="Tiny GCNs with topologically consistent magnitude pruning: "
        "train, prune and sweep the paper's experiments.",
    )
    parser.add_argument("--version", action="version", version=f"tcmp {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Each subcommand is added by an `_add_...(commands, summary)` function (see _add_command);
    # `tcmp --help` lists them in this order, with these one-line summaries.
    _add_run(commands, "compute one configuration here and write its run record")
    _add_train(commands, "train the baseline GCN and write its run record")
    _add_sweep(commands, "run a grid of configurations (e.g. Table 1) through papermill")
    _add_table(
        commands, "Table 1-right from a results folder, optionally next to the paper's numbers"
    )
    _add_cv(commands, "cross-validate training recipes on the training split")
    _add_export(commands, "write a saved compact network as a sparse file and/or ONNX")
    _add_disconnect(commands, "%% A-C of one-shot magnitude pruning of trained dense networks")
    return parser


def _add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    handler: Callable[[argparse.Namespace], int],
    summary: str,
) -> argparse.ArgumentParser:
    """The subparser of command ``name``, which ``handler`` runs (see :func:`main`).

    ``summary`` is its line in ``tcmp --help``; the handler's docstring is its own ``--help``
    description: what the command does is written once, where it is done.
    """
    parser = commands.add_parser(name, help=summary, description=handler.__doc__)
    parser.set_defaults(handler=handler)
    return parser


def _shared_options() -> dict[str, dict[str, Any]]:
    """Options that several subcommands take, by flag: the argparse settings they share.

    One table, so that e.g. ``--device`` or ``--seed`` cannot drift apart between commands;
    each subcommand names the ones it takes and may word their help for itself
    (:func:`_add_options`).
    """
    from tcmplib.profiles import PROFILES
    from tcmplib.recipe import RECIPES
    from tcmplib.run import DATASETS

    return {
        "--dataset": {"choices": DATASETS, "default": "synthetic"},
        "--profile": {"choices": sorted(PROFILES), "default": "book"},
        "--recipe": {"choices": list(RECIPES), "default": "as-written"},
        "--seed": {"type": _non_negative_int, "default": 0},
        "--results": {"type": Path, "default": None},
        "--checkpoints": {"type": Path, "default": None},
        "--workers": {"type": _positive_int, "default": None},
        "--device": {"choices": ("auto", "cpu", "cuda"), "default": "auto"},
        "--fpha-root": {"type": Path, "default": None, "help": "FPHA folder (default: $FPHA_ROOT)"},
        "--dry-run": {"action": "store_true"},
        "--no-progress": {"action": "store_true", "help": "hide the progress bar"},
    }


def _add_options(
    parser: argparse.ArgumentParser,
    *flags: str,
    defaults: dict[str, Any] | None = None,
    **helps: str,
) -> None:
    """Add the shared options ``flags`` to ``parser``, in that order.

    ``helps`` and ``defaults`` are keyed by destination (``dry_run`` for ``--dry-run``) and
    replace the shared help or default for this subcommand.
    """
    shared = _shared_options()
    for flag in flags:
        dest = flag.removeprefix("--").replace("-", "_")
        settings = dict(shared[flag])
        if dest in helps:
            settings["help"] = helps[dest]
        if defaults is not None and dest in defaults:
            settings["default"] = defaults[dest]
        parser.add_argument(flag, **settings)


# -------------------------------------------------------------------------------------------
# tcmp train
# -------------------------------------------------------------------------------------------


def _add_train(commands: argparse._SubParsersAction[argparse.ArgumentParser], summary: str) -> None:
    train = _add_command(commands, "train", _run_train, summary)
    train.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run record (default: runs/train-DATASET-PROFILE-seedN.json)",
    )
    train.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="checkpoint in a folder there (profiles with checkpoint_every) and resume from it",
    )
    _add_options(
        train, "--dataset", "--profile", "--recipe", "--seed", "--device", "--fpha-root",
        "--no-progress",
        profile="run length: smoke (seconds), book (about 1.5 min on CPU), paper (2,700 epochs)",
        recipe="training recipe",
        seed="model init and batch seed",
    )  # fmt: skip


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _run_train(args: argparse.Namespace) -> int:
    """Train the baseline attention GCN (no pruning) and write its run record
    (tcmplib.records) to a JSON file: the same record as `tcmp run --method baseline`."""
    from tcmplib.records import write_record
    from tcmplib.run import RunConfig, execute

    config = RunConfig(
        dataset=args.dataset, method="baseline", seed=args.seed, profile=args.profile,
        recipe=args.recipe,
    )  # fmt: skip
    if args.checkpoint_dir is not None and config.train_schedule()["checkpoint_every"] is None:
        raise ValueError(
            f"--checkpoint-dir: profile {args.profile!r} writes no checkpoints; "
            "use --profile paper or leave the option out"
        )
    record = execute(
        config,
        device=args.device,
        fpha_root=args.fpha_root,
        checkpoints_dir=args.checkpoint_dir,
        progress=not args.no_progress,
    )
    out = args.out or Path("runs") / f"train-{args.dataset}-{args.profile}-seed{args.seed}.json"
    write_record(record, out)
    print(_summary(record))
    print(f"wrote {out}")
    return 0


def _summary(record: Any) -> str:
    """One line on a finished run: what it kept and how accurate it is."""
    report = record.report
    return (
        f"{record.name}: {report.kept_weights:,} of {report.total_weights:,} weights kept "
        f"(rate {report.achieved_rate:.4%}), % A-C {report.percent_ac:.2f}, test class-average "
        f"accuracy {report.class_avg_accuracy:.2%} (plain {report.accuracy:.2%}), "
        f"{report.wall_time_s:.1f} s on {report.device}"
    )


# -------------------------------------------------------------------------------------------
# tcmp run
# -------------------------------------------------------------------------------------------


def _add_run(commands: argparse._SubParsersAction[argparse.ArgumentParser], summary: str) -> None:
    from tcmplib.pruning import METHODS

    run = _add_command(commands, "run", _run_run, summary)
    run.add_argument("--method", choices=list(METHODS), default="tcmp")
    run.add_argument("--rate", type=float, default=None, help="fraction pruned, e.g. 0.99 "
                     "(default: 0 for the dense baseline, else required)")  # fmt: skip
    run.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a method option (repeatable), e.g. --set band_steps=4",
    )
    _add_options(
        run, "--seed", "--dataset", "--profile", "--recipe", "--results", "--checkpoints",
        "--device", "--fpha-root", "--dry-run", "--no-progress",
        results="results folder (default: results/DATASET-PROFILE[-RECIPE]; smoke: runs/results)",
        checkpoints="checkpoint folder (profile paper)",
        dry_run="print the configuration and stop",
    )  # fmt: skip


def _run_run(args: argparse.Namespace) -> int:
    """Train and prune one configuration in this process (with a progress bar) and write its
    run record and network structure into the results folder. A record already there under
    the same hash is reused. --dry-run prints the resolved configuration (everything that
    enters the hash) and its hash."""
    from tcmplib.pruning import METHODS
    from tcmplib.run import RunConfig, run_config
    from tcmplib.sweep import default_models_dir, default_results_dir, find_result

    if args.rate is None and METHODS[args.method].tc_by_design is not None:
        raise ValueError(f"--rate: {args.method} prunes; expected a rate, e.g. --rate 0.99")
    rate = args.rate if args.rate is not None else 0.0
    config = RunConfig(
        dataset=args.dataset, method=args.method, rate=rate, seed=args.seed,
        profile=args.profile, recipe=args.recipe,
    ).with_options(args.set)  # fmt: skip
    results = args.results or default_results_dir(args.dataset, args.profile, args.recipe)
    if args.dry_run:
        print(json.dumps(config.identity(), indent=1))
        print(f"hash {config.hash}: {results / config.name}.json")
        return 0
    found = find_result(results, config)
    if found is not None:
        print(f"{found}: computed already (same hash); delete it to rerun")
        return 0
    record = run_config(
        config,
        results,
        device=args.device,
        fpha_root=args.fpha_root,
        models_dir=default_models_dir(results),
        checkpoints_dir=args.checkpoints,
        progress=not args.no_progress,
    )
    print(_summary(record))
    print(f"wrote {results / record.name}.json")
    return 0


# -------------------------------------------------------------------------------------------
# tcmp sweep
# -------------------------------------------------------------------------------------------


def _add_sweep(commands: argparse._SubParsersAction[argparse.ArgumentParser], summary: str) -> None:
    from tcmplib.sweep import EXECUTORS, GRIDS

    sweep = _add_command(commands, "sweep", _run_sweep, summary)
    sweep.add_argument(
        "grid",
        choices=sorted(GRIDS),
        help="table1: baseline + MP, greedy TC, TCMP and PMP at 50/75/95/99%%; "
        "baseline: the dense network alone; disconnection: baseline + MP and TCMP at "
        "95/99%% (chapter 4b, e.g. with --recipe selected-per-head or selected-bilinear)",
    )
    sweep.add_argument(
        "--seeds", type=_positive_int, default=1, help="number of seeds, 0..N-1 (default 1)"
    )
    sweep.add_argument(
        "--notebooks",
        type=Path,
        default=None,
        help="folder for the executed run notebooks (default: runs/notebooks/<results name>)",
    )
    sweep.add_argument("--executor", choices=EXECUTORS, default="local")
    sweep.add_argument(
        "--scheduler",
        default=None,
        help="Dask scheduler address (tcp://host:8786); default: a LocalCluster for this sweep",
    )
    _add_options(
        sweep, "--dataset", "--profile", "--recipe", "--results", "--checkpoints", "--workers",
        "--device", "--fpha-root", "--dry-run", "--no-progress",
        recipe="training recipe: the paper's text as written, or the one selected by "
        "cross-validation (tcmplib.recipe)",
        results="results folder (default: results/DATASET-PROFILE[-RECIPE])",
        checkpoints="folder for the checkpoints of unfinished runs of a profile that "
        "checkpoints (paper); a restarted sweep resumes them (default: "
        "runs/checkpoints/<results name>)",
        workers="LocalCluster worker processes",
        dry_run="list the runs still missing and stop",
    )  # fmt: skip


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _run_sweep(args: argparse.Namespace) -> int:
    """Run every configuration of a named grid that has no result yet: each run executes the
    run notebook with papermill and writes one JSON result file. Results already present with
    the same config hash are reused, so an interrupted sweep resumes. Prints Table 1-right
    from the results folder at the end."""
    from tcmplib import tables
    from tcmplib.profiles import get_profile
    from tcmplib.sweep import checkpointed_epochs, sweep

    if args.scheduler is not None and args.executor != "dask":
        raise ValueError("--scheduler: only used with --executor dask")
    summary = sweep(
        args.grid,
        profile=args.profile,
        dataset=args.dataset,
        seeds=args.seeds,
        recipe=args.recipe,
        results_dir=args.results,
        notebooks_dir=args.notebooks,
        checkpoints_dir=args.checkpoints,
        executor=args.executor,
        scheduler=args.scheduler,
        workers=args.workers,
        device=args.device,
        fpha_root=args.fpha_root,
        progress=not args.no_progress,
        dry_run=args.dry_run,
    )
    if args.dry_run:
        print(f"{summary.results_dir}: {len(summary.reused)} done, {len(summary.pending)} to run")
        for config in summary.pending:
            done = (
                checkpointed_epochs(summary.checkpoints_dir, config)
                if summary.checkpoints_dir is not None
                else None
            )
            epochs = get_profile(config.profile).epochs
            resumes = f" (checkpointed: {done:,} of {epochs:,} epochs)" if done else ""
            print(f"  {config.name}{resumes}")
        return 0
    print(summary)
    results = tables.load_results(summary.results_dir)
    if len(results):
        print(tables.to_markdown(tables.table1_right(results)))
    return 0 if summary.ok else 1


# -------------------------------------------------------------------------------------------
# tcmp table
# -------------------------------------------------------------------------------------------


def _add_table(commands: argparse._SubParsersAction[argparse.ArgumentParser], summary: str) -> None:
    table = _add_command(commands, "table", _run_table, summary)
    table.add_argument("results", type=Path, help="results folder written by `tcmp sweep`")
    table.add_argument("--paper", action="store_true", help="add the paper's published numbers")
    table.add_argument(
        "--times",
        action="store_true",
        help="print the training times by device and method instead of Table 1-right",
    )
    table.add_argument(
        "--out", type=Path, default=None, help="also write the table to a .md or .csv file"
    )


def _run_table(args: argparse.Namespace) -> int:
    """Read the result files of a sweep and print Table 1-right (means and spread over
    seeds); with --paper, side by side with the published numbers."""
    from tcmplib import tables

    results = tables.load_results(args.results)
    if not len(results):
        raise ValueError(f"{args.results}: no result files (*.json) there")
    if args.times and args.paper:
        raise ValueError("--times and --paper: expected at most one of them")
    frame = tables.training_times(results) if args.times else tables.table1_right(results)
    if args.paper:
        frame = tables.compare_with_paper(frame)
    print(tables.to_markdown(frame))
    if args.out is not None:
        print(f"wrote {tables.write_table(frame, args.out)}")
    return 0


# -------------------------------------------------------------------------------------------
# tcmp cv
# -------------------------------------------------------------------------------------------


def _add_cv(commands: argparse._SubParsersAction[argparse.ArgumentParser], summary: str) -> None:
    from tcmplib.select import CANDIDATES

    cv = _add_command(commands, "cv", _run_cv, summary)
    cv.add_argument(
        "candidates", choices=sorted(CANDIDATES), help="the named set of candidate recipes"
    )
    cv.add_argument("--folds", type=_positive_int, default=3, help="k of k-fold (default 3)")
    cv.add_argument(
        "--splits",
        type=_positive_int,
        default=1,
        help="stratified splits into k folds, each run in full (repeated k-fold; default 1)",
    )
    cv.add_argument("--epochs", type=_positive_int, default=300, help="epochs per fold run")
    # The recipe search is about the real data: FPHA unless told otherwise.
    _add_options(
        cv, "--dataset", "--seed", "--results", "--workers", "--device", "--fpha-root",
        "--dry-run", "--no-progress",
        defaults={"dataset": "fpha"},
        seed="model and augmentation seed",
        results="records folder (default: results/DATASET-cv)",
        workers="run on a Dask LocalCluster of this many single-threaded workers "
        "(default: here)",
        dry_run="list the runs still missing and stop",
    )  # fmt: skip


def _run_cv(args: argparse.Namespace) -> int:
    """Train the dense baseline under each candidate recipe on k-1 stratified folds of the
    training split and score it on the held-out fold (the test split is never read). Fold
    runs already recorded are skipped, so an interrupted run resumes. Prints the ablation
    table (mean and std over folds) at the end."""
    from tcmplib import tables
    from tcmplib.select import CANDIDATES, cross_validate, cv_table

    results = args.results or Path("results") / f"{args.dataset}-cv"
    candidates = CANDIDATES[args.candidates]
    summary = cross_validate(
        candidates,
        results,
        folds=args.folds,
        epochs=args.epochs,
        seed=args.seed,
        dataset=args.dataset,
        splits=args.splits,
        root=args.fpha_root,
        device=args.device,
        workers=args.workers,
        dry_run=args.dry_run,
        progress=not args.no_progress,
    )
    print(f"{results}: {len(summary['found'])} done, {len(summary['missing'])} to run")
    if args.dry_run:
        for name in summary["missing"]:
            print(f"  {name}")
        return 0
    for error in summary["failed"]:
        print(f"  failed: {error}", file=sys.stderr)
    if not summary["failed"]:
        print(tables.to_markdown(cv_table(results, candidates).round(2)))
    return 1 if summary["failed"] else 0


# -------------------------------------------------------------------------------------------
# tcmp export
# -------------------------------------------------------------------------------------------


def _add_export(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], summary: str
) -> None:
    export = _add_command(commands, "export", _run_export, summary)
    export.add_argument(
        "model_dir",
        type=Path,
        metavar="MODEL_DIR",
        help="compact network folder (compact.json + compact.safetensors), e.g. "
        "runs/models/RESULTS/RUN",
    )
    export.add_argument(
        "--sparse", type=Path, default=None, metavar="OUT.tcmps", help="write the sparse file"
    )
    export.add_argument(
        "--onnx", type=Path, default=None, metavar="OUT.onnx", help="write the ONNX model"
    )


#: Random inputs on which the ONNX model's logits are compared with torch's.
EXPORT_CHECK_BATCH = 16


def _run_export(args: argparse.Namespace) -> int:
    """Read a compact network saved by tcmplib.compact.save_compact and write it as a sparse
    file (--sparse: nonzero weights and their bitmaps, tcmplib.sparse_file) and/or an ONNX
    model (--onnx, run with onnxruntime). Prints each file's size and bytes per nonzero
    weight; for ONNX also the largest |difference| between onnxruntime's and torch's logits
    on 16 random inputs."""
    import torch

    from tcmplib.compact import load_compact

    if args.sparse is None and args.onnx is None:
        raise ValueError("expected --sparse OUT.tcmps and/or --onnx OUT.onnx")
    if args.onnx is not None:  # before anything is written
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ModuleNotFoundError as error:
            raise ValueError(
                f"--onnx: needs {error.name}, not installed here; pip install -e '.[export]'"
            ) from None
    compact = load_compact(args.model_dir)
    nonzero = compact.num_nonzero()

    def sizes(path: Path) -> str:
        size = path.stat().st_size
        per_weight = f"{size / nonzero:.2f} bytes" if nonzero else "n/a (no nonzero weight)"
        return f"{size:,} bytes, {per_weight} per nonzero weight ({nonzero:,})"

    if args.sparse is not None:
        from tcmplib.sparse_file import save_sparse

        path = save_sparse(compact, args.sparse)
        print(f"wrote {path}: {sizes(path)}")
    if args.onnx is not None:
        from tcmplib.export import export_onnx, run_onnx

        path = export_onnx(compact, args.onnx)
        config = compact.config
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(EXPORT_CHECK_BATCH, config.nodes, config.d_in, generator=generator)
        with torch.no_grad():
            expected = compact(x).numpy()
        difference = float(abs(run_onnx(path, x) - expected).max()) if expected.size else 0.0
        print(
            f"wrote {path}: {sizes(path)}; onnxruntime vs torch logits on "
            f"{EXPORT_CHECK_BATCH} random inputs: max |difference| {difference:.3g}"
        )
    return 0


def _add_disconnect(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], summary: str
) -> None:
    disconnect = _add_command(commands, "disconnect", _run_disconnect, summary)
    disconnect.add_argument(
        "model_dirs",
        type=Path,
        nargs="+",
        metavar="MODEL_DIR",
        help="saved dense networks (compact folders of baseline runs), e.g. "
        "runs/models/RESULTS/baseline_rate0.0000_seed0_HASH",
    )
    disconnect.add_argument(
        "--rates", type=float, nargs="+", default=[0.75, 0.95, 0.99], help="pruning rates"
    )
    disconnect.add_argument(
        "--json", type=Path, default=None, metavar="OUT.json", help="also write the rows here"
    )


def _run_disconnect(args: argparse.Namespace) -> int:
    """Prune each trained dense network once by magnitude, globally (one ranking over all
    weights, Eq. 1) and per tensor (the same rate in every tensor), at each rate, and print
    the exact % A-C of what is kept (tcmplib.disconnection): the first pass of the study of
    when magnitude pruning disconnects the GCN. Weights are read, never written; --json
    writes the numbers (no weight) atomically."""
    import json

    from tcmplib.compact import load_compact
    from tcmplib.disconnection import one_shot_connectivity, summarize_one_shot
    from tcmplib.pruning.base import validate_rate
    from tcmplib.train import atomic_write

    rates = [validate_rate(rate) for rate in args.rates]
    tables = []
    for directory in args.model_dirs:
        network = load_compact(directory)
        try:
            weights = network.dense_weights()
        except ValueError as error:
            raise ValueError(f"{directory}: {error}") from None
        table = one_shot_connectivity(weights, network.config, rates)
        tables.append(table.assign(network=directory.name))
    import pandas as pd

    rows = pd.concat(tables, ignore_index=True)
    print(f"one-shot magnitude pruning of {len(tables)} dense network(s): % A-C")
    print(summarize_one_shot(rows).to_string(index=False))
    if args.json is not None:
        text = json.dumps({"kind": "one-shot connectivity", "rows": rows.to_dict("records")},
                          indent=1) + "\n"  # fmt: skip
        atomic_write(args.json, lambda handle: handle.write(text.encode()))
        print(f"wrote {args.json}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args.handler(args))
    except ValueError as err:
        # The library says what is wrong with an argument in a one-line ValueError: shown as
        # such, with argparse's exit status for a usage error, rather than as a traceback.
        print(f"tcmp {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
