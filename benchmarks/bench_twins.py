"""Does a structure twin take as long as the network it stands for? A check of the twins.

``bench_inference.py --structures`` times *twins*: compact networks rebuilt from a run's
committed structure with random values instead of the trained weights. That is sound only
if the forward pass costs the same whatever the values. This script tests it on saved
networks (a ``runs/models/<results name>`` folder): for each one it builds its twin from
:func:`tcmplib.compact.structure_of` and times both, alternating, at every batch size, then
prints the ratio of the medians (twin / saved; 1.00 means the same time).

Usage::

    python benchmarks/bench_twins.py --models runs/models/fpha-paper [--batches 1 575]
        [--repeats 20] [--rounds 3] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from tcmplib.compact import (
    JSON_NAME,
    CompactFormatError,
    load_compact,
    measure_latency,
    structure_of,
)

PROG = "bench_twins.py"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, required=True, help="a runs/models/<name> folder")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 575], help="batch sizes")
    parser.add_argument("--repeats", type=int, default=20, help="timed passes per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating measurements of each")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the twins and the inputs")
    args = parser.parse_args(argv)
    if min(args.repeats, args.rounds, *args.batches) < 1:
        parser.error("--repeats, --rounds, --batches: expected >= 1")
    if not args.models.is_dir():
        print(f"{PROG}: error: --models {args.models}: expected a folder", file=sys.stderr)
        raise SystemExit(2)
    folders = sorted(d for d in args.models.iterdir() if (d / JSON_NAME).is_file())
    if not folders:
        print(f"{PROG}: error: --models {args.models}: no compact network in it", file=sys.stderr)
        raise SystemExit(2)

    generator = torch.Generator().manual_seed(args.seed)
    header = ["network"] + [f"b={b} saved ms  twin ms  ratio" for b in args.batches]
    print("  ".join(header))
    for folder in folders:
        try:
            saved = load_compact(folder)
        except CompactFormatError as error:
            print(f"{PROG}: error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        twin = structure_of(saved).twin(args.seed)
        cells = [folder.name]
        for batch in args.batches:
            x = torch.randn(batch, saved.config.nodes, saved.config.d_in, generator=generator)
            medians: dict[str, list[float]] = {"saved": [], "twin": []}
            for _ in range(args.rounds):  # alternate, so that drifts in load hit both alike
                for name, model in (("saved", saved), ("twin", twin)):
                    stats = measure_latency(model, x, repeats=args.repeats, threads=args.threads)
                    medians[name].append(stats.median_ms)
            a, b = (statistics.median(medians[k]) for k in ("saved", "twin"))
            cells.append(f"{a:13.3f}  {b:7.3f}  {b / a:5.2f}")
        print("  ".join(cells), flush=True)


if __name__ == "__main__":
    main()
