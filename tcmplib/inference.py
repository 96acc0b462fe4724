"""Size and speed of the tiny networks: reading the inference benchmark's JSON file.

``benchmarks/bench_inference.py --models runs/models/<results name> --json FILE`` times the
compact networks that a sweep saved (one per run, named like the run's result file) next to
the dense baseline, and writes one row per network: kept weights, stored values, file size and
the latency at each batch size (median, quartiles, speed-up against the dense network). This
module reads that file back, joins each network to its run's result (method, rate, seed,
accuracy, % A-C), and plots latency against size. The file holds numbers only, never weights,
so it can be committed even when the networks were trained on data that may not be shared.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from tcmplib.tables import load_results, method_label, method_rank

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "INFERENCE_COLUMNS",
    "STRUCTURE_COLUMNS",
    "benchmark_kind",
    "by_rate",
    "load_inference",
    "load_stages",
    "load_structures",
    "machine_summary",
    "plot_latency",
    "plot_tiny",
]

#: Columns of :func:`load_inference` before the per-batch latency columns.
INFERENCE_COLUMNS: tuple[str, ...] = (
    "network",
    "method",
    "rate (%)",
    "seed",
    "accuracy (%)",
    "% A-C",
    "kept weights",
    "stored values",
    "file KiB",
)

_ROW_KEYS = ("name", "dense", "kept_weights", "stored_values", "file_bytes", "latency")
_LATENCY_KEYS = ("batch", "median_ms", "p25_ms", "p75_ms", "speedup")


def _read(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        detail = " ".join(str(error).split())
        raise ValueError(f"{path}: expected an inference benchmark JSON file ({detail})") from None
    if not isinstance(document, dict) or not isinstance(document.get("rows"), list):
        raise ValueError(f"{path}: expected an object with a list 'rows' (bench_inference.py)")
    if not document["rows"]:
        raise ValueError(f"{path}: expected at least one network in 'rows', got none")
    batches: list[int] | None = None
    for number, row in enumerate(document["rows"]):
        missing = [key for key in _ROW_KEYS if not isinstance(row, dict) or key not in row]
        if missing:
            raise ValueError(f"{path}: rows[{number}]: expected keys {missing}")
        for entry in row["latency"]:
            if not isinstance(entry, dict) or any(key not in entry for key in _LATENCY_KEYS):
                raise ValueError(
                    f"{path}: rows[{number}].latency: expected entries with {list(_LATENCY_KEYS)}"
                )
        found = [int(entry["batch"]) for entry in row["latency"]]
        if batches is None:
            batches = found
        elif found != batches:
            raise ValueError(
                f"{path}: rows[{number}].latency: expected batches {batches}, got {found}"
            )
    return document


def _runs_by_name(results_dir: str | os.PathLike[str] | None) -> dict[str, pd.Series]:
    """A results folder's runs by result-file stem (the name networks are saved under)."""
    if results_dir is None:
        return {}
    runs = load_results(results_dir)
    return {Path(str(f)).stem: row for f, row in runs.set_index("file").iterrows()}


def _run_columns(run: pd.Series | None) -> dict[str, Any]:
    """The run columns of a network's row (empty without a run), and its sort rank."""
    if run is None:
        return {key: None for key in ("method", "rate (%)", "seed", "accuracy (%)", "% A-C")} | {
            "_rank": (99, "")
        }
    return {
        "method": method_label(str(run["method"])),
        "rate (%)": 100.0 * float(run["target_rate"]),
        "seed": int(run["seed"]),
        "accuracy (%)": round(float(run["class_avg_accuracy"]), 2),
        "% A-C": round(float(run["percent_ac"]), 2),
        "_rank": method_rank(str(run["method"])),
    }


def _sort_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """Dense reference first (if marked), then the paper's row order; runless ones last."""
    return (
        not row.get("_dense", False),
        row["rate (%)"] is None,
        row["rate (%)"] or 0.0,
        row["_rank"],
        -1 if row["seed"] is None else row["seed"],
        row["network"],
    )


def _kib(value: Any) -> float | None:
    return None if value is None else round(int(value) / 1024, 1)


def _millions(value: Any) -> float | None:
    return None if value is None else round(int(value) / 1e6, 4)


def load_inference(
    path: str | os.PathLike[str], results_dir: str | os.PathLike[str] | None = None
) -> pd.DataFrame:
    """One row per timed network, dense reference first, then in the paper's row order.

    With ``results_dir`` (the sweep's results folder), each network named after a run is
    joined to that run's result: method, target rate, seed, class-averaged accuracy and
    % A-C; a network without a result keeps those columns empty. Per batch size ``b`` the
    columns ``b=<b> ms`` (median), ``b=<b> IQR ms`` and ``b=<b> speed-up`` (dense median
    over this network's median) follow :data:`INFERENCE_COLUMNS`.
    """
    source = Path(path)
    document = _read(source)
    by_name = _runs_by_name(results_dir)
    rows = []
    for entry in document["rows"]:
        row: dict[str, Any] = {
            "network": entry["name"],
            **_run_columns(by_name.get(entry["name"])),
            "kept weights": int(entry["kept_weights"]),
            "stored values": int(entry["stored_values"]),
            "file KiB": round(int(entry["file_bytes"]) / 1024, 1),
            "sparse KiB": _kib(entry.get("sparse_bytes")),
            "MACs/seq (M)": _millions(entry.get("multiply_adds")),
            "_dense": bool(entry["dense"]),
        }
        onnx = {int(stats["batch"]): stats for stats in entry.get("onnx_latency", [])}
        for stats in entry["latency"]:
            batch = int(stats["batch"])
            row[f"b={batch} ms"] = round(float(stats["median_ms"]), 3)
            row[f"b={batch} IQR ms"] = round(float(stats["p75_ms"]) - float(stats["p25_ms"]), 3)
            row[f"b={batch} speed-up"] = round(float(stats["speedup"]), 2)
            if batch in onnx:
                row[f"b={batch} ORT ms"] = round(float(onnx[batch]["median_ms"]), 3)
                row[f"b={batch} ORT speed-up"] = round(float(onnx[batch]["speedup"]), 2)
        rows.append(row)
    rows.sort(key=_sort_key)
    frame = pd.DataFrame(rows)
    for column in ("seed", "kept weights", "stored values"):
        frame[column] = frame[column].astype("Int64")
    frame = frame.drop(columns=["_dense", "_rank"]).reset_index(drop=True)
    # Columns of benchmarks made before they were measured are left out, not filled.
    unmeasured = [c for c in ("sparse KiB", "MACs/seq (M)") if frame[c].isna().all()]
    return frame.drop(columns=unmeasured)


def by_rate(frame: pd.DataFrame, methods: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Per pruning rate, the median over the networks of ``methods`` (all when None) of what
    the dense network (first row of :func:`load_inference`) costs against them: its file
    over their sparse file, its multiply-adds over theirs, and each speed-up column."""
    dense = frame.iloc[0]
    pruned = frame[frame["rate (%)"].fillna(0) > 0]
    if methods is not None:
        pruned = pruned[pruned["method"].isin(methods)]
    ratios = pd.DataFrame({"rate (%)": pruned["rate (%)"], "networks": 1})
    if "sparse KiB" in frame:
        ratios["file: dense / sparse"] = dense["file KiB"] / pruned["sparse KiB"]
    if "MACs/seq (M)" in frame:
        ratios["MACs: dense / ours"] = dense["MACs/seq (M)"] / pruned["MACs/seq (M)"]
    speedups = [column for column in frame.columns if column.endswith("speed-up")]
    for column in speedups:
        ratios[column] = pruned[column]
    grouped = ratios.groupby("rate (%)")
    table = grouped.median(numeric_only=True).round(2)
    table["networks"] = grouped["networks"].sum()
    return table.reset_index()


def plot_tiny(table: pd.DataFrame) -> Figure:
    """The dense network's cost over the pruned ones' against the rate (:func:`by_rate`),
    log scale: file size, multiply-adds, and latency at each batch in torch and ORT."""
    import matplotlib.pyplot as plt

    columns = [c for c in table.columns if c not in ("rate (%)", "networks")]
    if table.empty or not columns:
        raise ValueError("table: expected rows and ratio columns from by_rate")
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    # Rates as evenly spaced categories: 95 and 99% are where pruning starts to pay.
    positions = range(len(table))
    for column in columns:
        style = "--" if "ORT" in column else ":" if column.startswith(("file", "MACs")) else "-"
        ax.plot(positions, table[column], style, marker="o", label=column)
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks(list(positions), [f"{rate:g}" for rate in table["rate (%)"]])
    ax.set_xlabel("pruning rate (%)")
    ax.set_ylabel("dense / pruned (x, median)")
    ax.set_title("What pruning buys at inference")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", ncol=2)
    fig.tight_layout()
    return fig


def load_stages(
    path: str | os.PathLike[str], results_dir: str | os.PathLike[str] | None = None
) -> pd.DataFrame:
    """Where each timed network spends its forward pass: one row per (network, batch).

    Reads the per-stage medians that ``bench_inference.py --stages`` writes (the stages of
    :data:`tcmplib.compact.STAGES`, in ms), with the run columns of :func:`load_inference`,
    the sum of the stages and the median of whole forward passes at that batch. Empty when
    the benchmark was run without ``--stages``.
    """
    from tcmplib.compact import STAGES

    source = Path(path)
    document = _read(source)
    by_name = _runs_by_name(results_dir)
    rows = []
    for number, entry in enumerate(document["rows"]):
        forward = {int(stats["batch"]): float(stats["median_ms"]) for stats in entry["latency"]}
        for staged in entry.get("stages", []):
            if not isinstance(staged, dict) or any(k not in staged for k in ("batch", *STAGES)):
                raise ValueError(
                    f"{source}: rows[{number}].stages: expected entries with {['batch', *STAGES]}"
                )
            batch = int(staged["batch"])
            times = {f"{stage} ms": round(float(staged[stage]), 3) for stage in STAGES}
            rows.append(
                {
                    "network": entry["name"],
                    **_run_columns(by_name.get(entry["name"])),
                    "_dense": bool(entry["dense"]),
                    "batch": batch,
                    **times,
                    "sum ms": round(sum(times.values()), 3),
                    "forward ms": round(forward[batch], 3) if batch in forward else None,
                }
            )
    columns = [
        *INFERENCE_COLUMNS[:4],
        "batch",
        *(f"{s} ms" for s in STAGES),
        "sum ms",
        "forward ms",
    ]
    if not rows:
        return pd.DataFrame(columns=columns)
    rows.sort(key=lambda row: (row["batch"], *_sort_key(row)))
    frame = pd.DataFrame(rows)
    frame["seed"] = frame["seed"].astype("Int64")
    return frame[columns].reset_index(drop=True)


def benchmark_kind(document: dict[str, Any]) -> str:
    """What a benchmark file timed: ``"saved networks"`` (``--models``), ``"structure
    twins"`` (``--structures``) or ``"demo"``. Files written before the field existed were
    made with ``--models`` or in demo mode, which their ``source`` tells apart."""
    kind = document.get("kind")
    if kind is None:
        return "demo" if document.get("source") == "demo" else "saved networks"
    return str(kind)


def machine_summary(path: str | os.PathLike[str]) -> str:
    """One line on what was timed and where: networks, CPU, threads, torch, load, repeats."""
    document = _read(Path(path))
    host = document.get("machine", {})
    timed = {
        "saved networks": "the saved networks of",
        "structure twins": "twins (recorded structure, random values) of the networks in",
        "demo": "the demo networks",
    }.get(benchmark_kind(document), "networks of")
    source = "" if benchmark_kind(document) == "demo" else f" {document.get('source', '?')}"
    return (
        f"timed {timed}{source} on "
        f"{host.get('cpu', 'unknown CPU')} ({host.get('logical_cpus', '?')} logical CPUs), "
        f"torch {host.get('torch', '?')}, {host.get('threads', '?')} threads, "
        f"1-min load average {host.get('load_average_1min', '?')} before timing; "
        f"median of {document.get('repeats', '?')} forward passes after "
        f"{document.get('warmup', '?')} untimed"
    )


def plot_latency(frame: pd.DataFrame) -> Figure:
    """Median latency against kept weights, one panel per batch size, log-log."""
    import matplotlib.pyplot as plt

    batches = [column.split()[0] for column in frame.columns if column.endswith(" ms")]
    batches = [b for b in batches if not b.endswith("IQR")]
    batches = list(dict.fromkeys(batches))
    if frame.empty or not batches:
        raise ValueError("frame: expected rows and latency columns from load_inference")
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 3.6), squeeze=False)
    for ax, batch in zip(axes[0], batches, strict=True):
        labels = frame["method"].fillna(frame["network"])
        for label in dict.fromkeys(labels):
            rows = frame[labels == label]
            ax.scatter(rows["kept weights"].astype(float), rows[f"{batch} ms"], label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("kept weights")
        ax.set_ylabel("median latency (ms)")
        ax.set_title(f"forward pass, {batch.replace('b=', 'batch ')}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    return fig


#: Columns of :func:`load_structures`: the sizes of :data:`INFERENCE_COLUMNS`, then the
#: units that survived compaction, per axis.
STRUCTURE_COLUMNS: tuple[str, ...] = (
    *INFERENCE_COLUMNS,
    "inputs",
    "channels",
    "heads",
    "dense-layer inputs",
)


def load_structures(
    networks_dir: str | os.PathLike[str], results_dir: str | os.PathLike[str] | None = None
) -> pd.DataFrame:
    """One row per committed network structure (``<results>/networks/*.json``), paper order.

    The sizes of every network a sweep trained, whether or not its weights still exist:
    nonzero (kept) weights, stored values, file size, and the units that survived compaction
    per axis (value-path inputs, convolution channels, heads, dense-layer inputs). With
    ``results_dir``, each is joined to its run's result like :func:`load_inference` does.
    A bad file raises a ValueError naming it.
    """
    from tcmplib.compact import CompactFormatError, load_structure

    folder = Path(networks_dir)
    by_name = _runs_by_name(results_dir)
    rows = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            structure = load_structure(path)
        except CompactFormatError as error:
            raise ValueError(str(error)) from None
        kept = structure.kept
        rows.append(
            {
                "network": path.stem,
                **_run_columns(by_name.get(path.stem)),
                "kept weights": structure.nonzero_weights,
                "stored values": structure.stored_values,
                "file KiB": round(structure.file_bytes / 1024, 1),
                "inputs": len(kept.value_inputs),
                "channels": len(kept.channels),
                "heads": len(kept.heads),
                "dense-layer inputs": len(kept.fc_inputs),
            }
        )
    rows.sort(key=_sort_key)
    frame = pd.DataFrame(rows, columns=[*STRUCTURE_COLUMNS, "_rank"])
    frame["seed"] = frame["seed"].astype("Int64")
    return frame.drop(columns=["_rank"]).reset_index(drop=True)
