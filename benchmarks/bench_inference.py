"""CPU inference latency of compact (pruned) attention GCNs against the dense network.

Pruning only pays at inference once the dead units are gone: this script times the forward
pass of compact networks (:func:`tcmplib.compact.compact_model`) next to the dense one, at
batch 1 (one gesture at a time) and batch 575 (the FPHA test split in one pass).

With ``--models DIR`` (a ``runs/models/<results name>`` folder written by a sweep), every
subfolder holding a ``compact.json`` is one network; the dense reference is the
``baseline_*`` network when there is one, else a freshly built (untrained)
:class:`~tcmplib.model.AttentionGCN` of the same configuration. Without ``--models``, a
self-contained demo: an untrained paper-size network with N(0, 1) weights, magnitude-pruned
at 50/75/95/99% and compacted. Inputs are N(0, 1) too; latency does not depend on values.

With ``--structures DIR`` (a ``<results>/networks`` folder: the structure of every run's
compact network, which a sweep commits), each network is a *twin*: a compact network with
exactly the recorded tensors and gathers and random values at the dense network's initial
scale (:meth:`tcmplib.compact.CompactStructure.twin`), which takes the same time to
run as the trained one; its kept weights and file size are the recorded ones. This is how
the networks of runs made on other machines, or on other days, are timed together: the
weights are not kept (nor committed, when the data may not be shared), the structures are.

Usage::

    python benchmarks/bench_inference.py [--models DIR | --structures DIR] [--batches 1 575]
        [--repeats 20] [--threads N] [--stages] [--json OUT]

With ``--stages``, each network is also profiled stage by stage (attention, value projection,
graph convolution, gather, dense layer; :func:`tcmplib.compact.measure_stages`), the dense
reference as the equivalent compact network with every unit kept.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

import torch
from safetensors.torch import save

from tcmplib.compact import (
    JSON_NAME,
    STAGES,
    TENSORS_NAME,
    CompactFormatError,
    CompactGCN,
    CompactStructure,
    LatencyStats,
    compact_model,
    load_compact,
    load_structure,
    measure_latency,
    measure_stages,
    multiply_adds,
    save_compact,
)
from tcmplib.model import AttentionGCN, GCNConfig
from tcmplib.sparse_file import sparse_bytes
from tcmplib.sweep import cpu_name
from tcmplib.topology import magnitude_masks
from tcmplib.train import atomic_write

PROG = "bench_inference.py"
DEMO_RATES: tuple[float, ...] = (0.5, 0.75, 0.95, 0.99)
FPHA_TEST_SIZE = 575
SMALL_BATCH = 32


@dataclass(frozen=True)
class Network:
    """One network to time, with its sizes."""

    name: str
    model: CompactGCN | AttentionGCN
    #: Nonzero weights of the tensors it computes with.
    kept_weights: int
    #: Values it stores, zeros and Q/K padding included.
    stored_values: int
    #: Size of its ``compact.safetensors`` (the dense network: its four tensors, dense).
    file_bytes: int
    dense: bool = False
    #: Size of its sparse file (:mod:`tcmplib.sparse_file`); None for the dense network.
    sparse_bytes: int | None = None
    #: Whether ``sparse_bytes`` is that of a twin (its nonzeros placed at random in the
    #: recorded tensors) because the structure predates the sparse format.
    sparse_estimated: bool = False

    @property
    def multiply_adds(self) -> int:
        """Multiply-adds per sequence of its forward pass (tcmplib.compact.multiply_adds)."""
        model = self.model
        kept = model.kept if isinstance(model, CompactGCN) else None
        return sum(multiply_adds(model.config, kept).values())


def fail(message: str) -> NoReturn:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def weight_counts(model: CompactGCN | AttentionGCN) -> tuple[int, int]:
    """(nonzero weights, stored values) of a compact or a dense network."""
    if isinstance(model, CompactGCN):
        return model.num_nonzero(), model.num_parameters()
    weights = model.prunable().values()
    return sum(int(w.count_nonzero()) for w in weights), model.num_weights()


def describe(name: str, model: CompactGCN | AttentionGCN, file_bytes: int, dense: bool) -> Network:
    kept, stored = weight_counts(model)
    sparse = sparse_bytes(model) if isinstance(model, CompactGCN) else None
    return Network(name, model, kept, stored, file_bytes, dense, sparse)


def sparse_twin_bytes(structure: CompactStructure, seed: int) -> int:
    """Sparse file size of a twin whose recorded number of nonzeros sits at random places of
    its tensors: trained networks keep fuller rows, so their files come out smaller."""
    twin = structure.twin(seed)
    generator = torch.Generator().manual_seed(seed)
    weights = [getattr(twin, name) for name in ("wq", "wk", "wv", "fc")]
    sizes = [w.numel() for w in weights]
    keep = torch.zeros(sum(sizes), dtype=torch.bool)
    keep[torch.randperm(sum(sizes), generator=generator)[: structure.nonzero_weights]] = True
    with torch.no_grad():
        for weight, part in zip(weights, keep.split(sizes), strict=True):
            weight.mul_(part.view(weight.shape))
    return sparse_bytes(twin)


def saved_size(model: CompactGCN, directory: Path) -> int:
    """Bytes of the network's ``compact.safetensors``."""
    _, tensors = save_compact(model, directory)
    return tensors.stat().st_size


def dense_network(name: str, model: AttentionGCN) -> Network:
    """The dense network as the library runs it, its file the four weight tensors, dense."""
    tensors = {n: w.detach().contiguous() for n, w in model.prunable().items()}
    return describe(name, model, len(save(tensors)), dense=True)


def demo_networks(seed: int, scratch: Path) -> list[Network]:
    torch.manual_seed(seed)
    model = AttentionGCN(GCNConfig())
    # One scale for every tensor: under Glorot bounds the 43,008-input dense layer has by far
    # the smallest weights, so global magnitude pruning would empty it first and leave a
    # network without any path to the classes at high rates.
    with torch.no_grad():
        for weight in model.prunable().values():
            weight.normal_()
    networks = [dense_network("dense", model)]
    for rate in DEMO_RATES:
        name = f"magnitude_rate{rate:.4f}"
        masks = magnitude_masks(model, rate)
        assert isinstance(masks, dict)  # a model in, a dict of masks out
        compact = compact_model(model, masks)
        networks.append(describe(name, compact, saved_size(compact, scratch / name), False))
    return networks


def with_reference(option: str, folder: Path, networks: list[Network], seed: int) -> list[Network]:
    """The networks of one folder after the dense reference: a dense network of their
    configuration (all must share one), run by :class:`~tcmplib.model.AttentionGCN` as
    training and evaluation run it. A ``baseline_*`` network is timed like the others, in its
    compact form (nothing to remove): the two dense implementations side by side."""
    config = networks[0].model.config
    for network in networks:
        if network.model.config != config:
            fail(
                f"{option} {folder}: {network.name} has config {network.model.config}, "
                f"expected {config} like {networks[0].name}"
            )
    torch.manual_seed(seed)
    return [dense_network("dense", AttentionGCN(config)), *networks]


def folder_networks(folder: Path, seed: int) -> list[Network]:
    if not folder.exists():
        fail(f"--models {folder}: no such folder")
    if not folder.is_dir():
        fail(f"--models {folder}: expected a folder, got a file")
    found = sorted(d for d in folder.iterdir() if (d / JSON_NAME).is_file())
    if not found:
        fail(f"--models {folder}: no subfolder holds a compact network ({JSON_NAME})")
    networks = []
    for directory in found:
        try:
            compact = load_compact(directory)
        except CompactFormatError as error:
            fail(str(error))
        size = (directory / TENSORS_NAME).stat().st_size
        networks.append(describe(directory.name, compact, size, dense=False))
    return with_reference("--models", folder, networks, seed)


def structure_networks(folder: Path, seed: int) -> list[Network]:
    """Twins of the networks whose structures a sweep committed (``<results>/networks``)."""
    if not folder.is_dir():
        fail(f"--structures {folder}: expected a folder of structure files (.json)")
    found = sorted(folder.glob("*.json"))
    if not found:
        fail(f"--structures {folder}: no structure file (.json) in it")
    networks = []
    for path in found:
        try:
            structure = load_structure(path)
        except CompactFormatError as error:
            fail(str(error))
        recorded = structure.sparse_bytes
        networks.append(
            Network(
                path.stem,
                structure.twin(seed),
                structure.nonzero_weights,
                structure.stored_values,
                structure.file_bytes,
                sparse_bytes=recorded
                if recorded is not None
                else sparse_twin_bytes(structure, seed),
                sparse_estimated=recorded is None,
            )
        )
    return with_reference("--structures", folder, networks, seed)


def machine(threads: int) -> dict[str, Any]:
    # Other processes inflate every timing: the load average goes next to the numbers.
    return {
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "torch": torch.__version__,
        "threads": threads,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def format_table(networks: Sequence[Network], rows: Sequence[dict[str, Any]]) -> str:
    header = ["network", "kept weights", "stored values", "file bytes", "sparse bytes", "MACs/seq"]
    for stats in rows[0]["latency"]:
        batch = stats["batch"]
        header += [f"b={batch} median ms", f"b={batch} IQR ms", f"b={batch} speed-up"]
        if "onnx_latency" in rows[0]:
            header += [f"b={batch} ORT ms", f"b={batch} ORT speed-up"]
    lines = [header]
    for network, row in zip(networks, rows, strict=True):
        sparse = "" if network.sparse_bytes is None else f"{network.sparse_bytes:,}"
        cells = [
            network.name,
            f"{network.kept_weights:,}",
            f"{network.stored_values:,}",
            f"{network.file_bytes:,}",
            sparse + ("*" if network.sparse_estimated else ""),
            f"{network.multiply_adds:,}",
        ]
        for number, stats in enumerate(row["latency"]):
            iqr = stats["p75_ms"] - stats["p25_ms"]
            cells += [f"{stats['median_ms']:.3f}", f"{iqr:.3f}", f"{stats['speedup']:.2f}x"]
            if "onnx_latency" in row:
                onnx = row["onnx_latency"][number]
                cells += [f"{onnx['median_ms']:.3f}", f"{onnx['speedup']:.2f}x"]
        lines.append(cells)
    return render_table(lines)


def render_table(lines: list[list[str]]) -> str:
    """A header line, a rule and the rows: the first column left-aligned, the rest right."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]

    def render(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([render(lines[0]), rule, *(render(cells) for cells in lines[1:])])


def format_stages(networks: Sequence[Network], rows: Sequence[dict[str, Any]]) -> str:
    """Median ms per stage, one line per (network, batch)."""
    header = ["network", "batch", *STAGES, "sum"]
    lines = [header]
    for network, row in zip(networks, rows, strict=True):
        for entry in row["stages"]:
            medians = [entry[stage] for stage in STAGES]
            cells = [f"{value:.3f}" for value in (*medians, sum(medians))]
            lines.append([network.name, str(entry["batch"]), *cells])
    return render_table(lines)


def stage_model(model: CompactGCN | AttentionGCN) -> CompactGCN:
    # The dense network is profiled as its compact equivalent with every unit kept (same
    # tensors, same multiply-adds; its whole-pass time is the dense network's own).
    return model if isinstance(model, CompactGCN) else compact_model(model)


def with_speedup(timing: list[LatencyStats], dense: list[LatencyStats]) -> list[dict[str, Any]]:
    """Latency rows, each with its speed-up against the dense network in torch."""
    return [
        {**asdict(stats), "speedup": reference.median_ms / stats.median_ms}
        for stats, reference in zip(timing, dense, strict=True)
    ]


def export_all(networks: Sequence[Network], folder: Path) -> list[Path]:
    """Every network as an ONNX file (the dense one in its compact form: the same products)."""
    from tcmplib.export import export_onnx  # onnx is an optional dependency

    return [
        export_onnx(stage_model(network.model), folder / f"{number}.onnx")
        for number, network in enumerate(networks)
    ]


def onnx_latency(path: Path, inputs: torch.Tensor, **timed: Any) -> LatencyStats:
    from tcmplib.export import measure_onnx_latency

    return measure_onnx_latency(path, inputs, **timed)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--models", type=Path, help="a runs/models/<results name> folder")
    source.add_argument(
        "--structures",
        type=Path,
        help="a <results>/networks folder: time twins of the committed structures",
    )
    parser.add_argument(
        "--batches", type=int, nargs="+", default=[1, FPHA_TEST_SIZE], help="batch sizes"
    )
    parser.add_argument("--repeats", type=int, default=20, help="timed forward passes")
    parser.add_argument(
        "--small-repeats",
        type=int,
        default=300,
        help=f"timed forward passes at batches of at most {SMALL_BATCH} sequences, whose "
        "sub-millisecond medians need more repeats to settle",
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed forward passes first")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights and inputs")
    parser.add_argument(
        "--stages", action="store_true", help="also time each stage of the forward pass"
    )
    parser.add_argument(
        "--onnx",
        action="store_true",
        help="also export every network to ONNX and time it with onnxruntime",
    )
    parser.add_argument("--json", type=Path, help="write the rows to this JSON file")
    args = parser.parse_args(argv)
    if min(args.repeats, args.small_repeats) < 1 or args.warmup < 0 or min(args.batches) < 1:
        parser.error(
            "--repeats, --small-repeats: expected >= 1; --warmup: expected >= 0; --batches: >= 1"
        )
    if args.threads is not None and args.threads < 1:
        parser.error("--threads: expected >= 1")

    with tempfile.TemporaryDirectory(prefix="bench-inference-") as scratch:
        if args.models is not None:
            networks = folder_networks(args.models, args.seed)
        elif args.structures is not None:
            networks = structure_networks(args.structures, args.seed)
        else:
            networks = demo_networks(args.seed, Path(scratch))
    config = networks[0].model.config
    threads = args.threads if args.threads is not None else torch.get_num_threads()
    host = machine(threads)

    generator = torch.Generator().manual_seed(args.seed)
    timings: list[list[LatencyStats]] = [[] for _ in networks]
    onnx_timings: list[list[LatencyStats]] = [[] for _ in networks]
    stages: list[list[dict[str, Any]]] = [[] for _ in networks]
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as exported:
        onnx_files = export_all(networks, Path(exported)) if args.onnx else []
        for batch in args.batches:
            repeats = args.small_repeats if batch <= SMALL_BATCH else args.repeats
            timed = {"repeats": repeats, "warmup": args.warmup, "threads": args.threads}
            inputs = torch.randn(batch, config.nodes, config.d_in, generator=generator)
            for number, network in enumerate(networks):
                timings[number].append(measure_latency(network.model, inputs, **timed))
                if onnx_files:
                    onnx_timings[number].append(onnx_latency(onnx_files[number], inputs, **timed))
                if args.stages:
                    by_stage = measure_stages(stage_model(network.model), inputs, **timed)
                    stages[number].append(
                        {"batch": batch, **{name: s.median_ms for name, s in by_stage.items()}}
                    )
    rows = []
    for network, timing, onnx_timing, staged in zip(
        networks, timings, onnx_timings, stages, strict=True
    ):
        rows.append(
            {
                "name": network.name,
                "dense": network.dense,
                "kept_weights": network.kept_weights,
                "stored_values": network.stored_values,
                "file_bytes": network.file_bytes,
                "sparse_bytes": network.sparse_bytes,
                "sparse_estimated": network.sparse_estimated,
                "multiply_adds": network.multiply_adds,
                "latency": with_speedup(timing, timings[0]),
                **({"onnx_latency": with_speedup(onnx_timing, timings[0])} if args.onnx else {}),
                **({"stages": staged} if args.stages else {}),
            }
        )

    kind = "saved networks" if args.models else "structure twins" if args.structures else "demo"
    if kind == "demo":
        print(
            "demo (no --models or --structures): an untrained AttentionGCN "
            f"({config.num_weights():,} weights, N(0, 1), seed {args.seed}), "
            "magnitude-pruned at "
            + "/".join(f"{rate:.0%}".rstrip("%") for rate in DEMO_RATES)
            + "% and compacted; latencies only, no accuracy"
        )
    elif kind == "saved networks":
        print(f"networks of {args.models}; speed-up against {networks[0].name}")
    else:
        print(
            f"twins of the structures in {args.structures} (the recorded tensors and gathers, "
            f"random values at the initial scale); speed-up against {networks[0].name}"
        )
    print(
        f"{host['cpu']} ({host['logical_cpus']} logical CPUs), torch {host['torch']}, "
        f"{threads} threads, 1-min load average {host['load_average_1min']:.1f} before timing; "
        f"median and IQR of {args.repeats} forward passes ({args.small_repeats} at batches up "
        f"to {SMALL_BATCH}) after {args.warmup} untimed\n"
    )
    if host["logical_cpus"] and host["load_average_1min"] >= host["logical_cpus"]:
        # Oversubscribed cores stall torch's worker threads at every parallel region; the
        # medians then measure the scheduler more than the networks.
        print(
            f"warning: load average {host['load_average_1min']:.1f} >= "
            f"{host['logical_cpus']} logical CPUs: other processes compete for the cores, "
            "timings are unreliable (try --threads 1)\n"
        )
    print(format_table(networks, rows))
    if any(network.sparse_estimated for network in networks):
        print(
            "* sparse file of a twin, its nonzeros at random places of the recorded tensors "
            "(the structure predates the sparse format); trained networks keep fuller rows"
        )
    if args.onnx:
        print("ORT: onnxruntime on the exported network, speed-up against torch's dense network")
    if args.stages:
        print("\nmedian ms per stage of the forward pass\n")
        print(format_stages(networks, rows))

    if args.json is not None:
        document = {
            "source": str(args.models or args.structures or "demo"),
            "kind": kind,
            "machine": host,
            "repeats": args.repeats,
            "small_repeats": args.small_repeats,
            "warmup": args.warmup,
            "rows": rows,
        }

        def write(handle: IO[bytes]) -> None:
            handle.write((json.dumps(document, indent=2) + "\n").encode())

        atomic_write(args.json, write)


if __name__ == "__main__":
    main()
