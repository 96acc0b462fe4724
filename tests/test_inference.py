"""Reading the inference benchmark's file: hand-written documents, joined to result files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd
import pytest
import torch
from record_factory import make_record

from tcmplib.inference import (
    INFERENCE_COLUMNS,
    STRUCTURE_COLUMNS,
    benchmark_kind,
    load_inference,
    load_stages,
    load_structures,
    machine_summary,
    plot_latency,
)

matplotlib.use("Agg")


def _latency(batch: int, median: float, dense_median: float) -> dict[str, Any]:
    return {
        "median_ms": median,
        "p25_ms": median - 0.1,
        "p75_ms": median + 0.2,
        "repeats": 5,
        "batch": batch,
        "threads": 1,
        "speedup": dense_median / median,
    }


def _row(name: str, kept: int, b1: float, b575: float, dense: bool = False) -> dict[str, Any]:
    return {
        "name": name,
        "dense": dense,
        "kept_weights": kept,
        "stored_values": 2 * kept,
        "file_bytes": 8 * kept,
        "latency": [_latency(1, b1, 2.0), _latency(575, b575, 40.0)],
    }


def _document(rows: list[dict[str, Any]]) -> dict[str, Any]:
    machine = {"cpu": "Test CPU", "logical_cpus": 2, "torch": "2.x", "threads": 1}
    machine["load_average_1min"] = 0.5
    return {"source": "runs/models/x", "machine": machine, "repeats": 5, "warmup": 1, "rows": rows}


def _result(method: str, rate: float, seed: int, accuracy: float, ac: float) -> dict[str, Any]:
    return make_record(
        method,
        rate,
        seed,
        dataset="fpha",
        profile="paper",
        kept_weights=10,
        total_weights=100,
        percent_ac=ac,
        class_avg_accuracy=accuracy,
        accuracy=accuracy,
        wall_time_s=1.0,
        device="cpu",
        provenance={"git_commit": None},
    )


@pytest.fixture
def bench(tmp_path: Path) -> tuple[Path, Path]:
    results = tmp_path / "results"
    results.mkdir()
    runs = {
        "baseline_s0": ("baseline", 0.0, 0, 0.80, 100.0),
        "tcmp_s0": ("tcmp", 0.99, 0, 0.75, 100.0),
        "mp_s0": ("mp", 0.99, 0, 0.50, 40.0),
    }
    for name, args in runs.items():
        (results / f"{name}.json").write_text(json.dumps(_result(*args)), encoding="utf-8")
    rows = [  # the dense reference first, as the benchmark writes it
        _row("baseline_s0", 1000, 2.0, 40.0, dense=True),
        _row("tcmp_s0", 10, 0.5, 4.0),
        _row("mp_s0", 12, 1.0, 5.0),
        _row("unmatched", 20, 1.0, 10.0),
    ]
    path = tmp_path / "inference.json"
    path.write_text(json.dumps(_document(rows)), encoding="utf-8")
    return path, results


def test_rows_joined_to_their_runs_in_paper_order(bench: tuple[Path, Path]) -> None:
    path, results = bench
    frame = load_inference(path, results)
    assert tuple(frame.columns[: len(INFERENCE_COLUMNS)]) == INFERENCE_COLUMNS
    assert list(frame["network"]) == ["baseline_s0", "mp_s0", "tcmp_s0", "unmatched"]
    assert list(frame["method"].iloc[:3]) == ["Baseline GCN", "MP", "TCMP (our)"]
    tcmp = frame.set_index("network").loc["tcmp_s0"]
    assert tcmp["rate (%)"] == 99.0
    assert tcmp["accuracy (%)"] == 75.0
    assert tcmp["% A-C"] == 100.0
    assert tcmp["kept weights"] == 10
    assert tcmp["file KiB"] == round(80 / 1024, 1)
    assert tcmp["b=1 ms"] == 0.5
    assert tcmp["b=1 IQR ms"] == 0.3
    assert tcmp["b=1 speed-up"] == 4.0
    assert tcmp["b=575 speed-up"] == 10.0
    assert pd.isna(frame.set_index("network").loc["unmatched", "method"])


def test_without_results_only_the_benchmark(bench: tuple[Path, Path]) -> None:
    frame = load_inference(bench[0])
    assert frame["network"].iloc[0] == "baseline_s0"
    assert frame["method"].isna().all()


def test_bad_documents_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="bench.json: expected an inference benchmark JSON"):
        load_inference(path)
    path.write_text(json.dumps({"rows": []}), encoding="utf-8")
    with pytest.raises(ValueError, match="bench.json: expected at least one network"):
        load_inference(path)
    rows = [_row("a", 1, 1.0, 1.0, dense=True), _row("b", 1, 1.0, 1.0)]
    rows[1]["latency"] = rows[1]["latency"][:1]
    path.write_text(json.dumps(_document(rows)), encoding="utf-8")
    with pytest.raises(ValueError, match=r"rows\[1\].latency: expected batches \[1, 575\]"):
        load_inference(path)
    del rows[1]["file_bytes"]
    path.write_text(json.dumps(_document(rows)), encoding="utf-8")
    with pytest.raises(ValueError, match=r"rows\[1\]: expected keys \['file_bytes'\]"):
        load_inference(path)


def test_machine_summary_and_plot(bench: tuple[Path, Path]) -> None:
    path, results = bench
    assert machine_summary(path).startswith(
        "timed the saved networks of runs/models/x on Test CPU (2 logical CPUs), torch 2.x, "
        "1 threads"
    ), "a file without 'kind' was written with --models"
    fig = plot_latency(load_inference(path, results))
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == [
        "forward pass, batch 1",
        "forward pass, batch 575",
    ]


@pytest.mark.parametrize(
    ("fields", "kind", "start"),
    [
        ({"source": "demo"}, "demo", "timed the demo networks on Test CPU"),
        (
            {"source": "results/x/networks", "kind": "structure twins"},
            "structure twins",
            "timed twins (recorded structure, random values) of the networks in results/x/networks",
        ),
    ],
)
def test_summary_says_what_was_timed(
    tmp_path: Path, fields: dict[str, str], kind: str, start: str
) -> None:
    document = {**_document([_row("baseline_s0", 1000, 2.0, 40.0, dense=True)]), **fields}
    path = tmp_path / "inference.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    assert benchmark_kind(document) == kind
    assert machine_summary(path).startswith(start)


def test_structures_give_the_sizes_of_every_network_with_its_run(
    bench: tuple[Path, Path], tmp_path: Path
) -> None:
    from tcmplib.compact import compact_model, save_structure, structure_of
    from tcmplib.model import AttentionGCN, GCNConfig
    from tcmplib.topology import magnitude_masks

    _, results = bench
    toy = GCNConfig(nodes=3, d_in=4, heads=2, qk_dim=2, channels=3, classes=2)
    torch.manual_seed(1)
    model = AttentionGCN(toy)
    with torch.no_grad():  # one scale for all tensors, so that pruning keeps some of each
        for weight in model.prunable().values():
            weight.normal_()
    networks = tmp_path / "networks"
    for name, rate in (("tcmp_s0", 0.75), ("baseline_s0", 0.0), ("unmatched", 0.5)):
        masks = magnitude_masks(model, rate)
        assert isinstance(masks, dict)
        save_structure(structure_of(compact_model(model, masks)), networks / f"{name}.json")
    frame = load_structures(networks, results)
    assert tuple(frame.columns) == STRUCTURE_COLUMNS
    assert list(frame["network"]) == ["baseline_s0", "tcmp_s0", "unmatched"], "paper order"
    dense = frame.iloc[0]
    assert dense["kept weights"] == dense["stored values"] == toy.num_weights()
    assert (dense["channels"], dense["heads"], dense["dense-layer inputs"]) == (3, 2, toy.fc_in)
    assert frame.iloc[1]["method"] == "TCMP (our)" and frame.iloc[1]["accuracy (%)"] == 75.0
    assert 0 < frame.iloc[1]["kept weights"] < frame.iloc[1]["stored values"]
    assert pd.isna(frame.iloc[2]["method"]), "a network without a result keeps its sizes"
    assert load_structures(tmp_path / "none").empty, "no folder yet: no rows"
    (networks / "bad.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.json"):
        load_structures(networks)


def test_stages_per_network_and_batch_with_their_sum(bench: tuple[Path, Path]) -> None:
    path, results = bench
    assert load_stages(path, results).empty, "a benchmark without --stages has none"
    document = json.loads(path.read_text(encoding="utf-8"))
    times = {"attention": 1.0, "values": 0.5, "convolution": 8.0, "dense": 0.25}
    for row in document["rows"]:
        row["stages"] = [{"batch": 575, **times}, {"batch": 1, **times}]
    path.write_text(json.dumps(document), encoding="utf-8")
    frame = load_stages(path, results)
    assert list(frame["batch"]) == [1] * 4 + [575] * 4, "batch 1 first"
    first = frame[frame["batch"] == 575].iloc[0]
    assert first["network"] == "baseline_s0" and first["convolution ms"] == 8.0
    assert first["sum ms"] == 9.75 and first["forward ms"] == 40.0
    tcmp = frame[(frame["batch"] == 1) & (frame["network"] == "tcmp_s0")].iloc[0]
    assert (tcmp["method"], tcmp["forward ms"]) == ("TCMP (our)", 0.5)
    del document["rows"][1]["stages"][0]["values"]
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(ValueError, match=r"inference.json: rows\[1\].stages"):
        load_stages(path)


def test_sparse_size_multiply_adds_and_onnx_columns_and_the_ratios_by_rate(
    bench: tuple[Path, Path],
) -> None:
    from tcmplib.inference import by_rate, plot_tiny

    path, results = bench
    assert "sparse KiB" not in load_inference(path, results), "not measured: left out"
    document = json.loads(path.read_text(encoding="utf-8"))
    for row, (sparse, macs) in zip(
        document["rows"],
        [(None, 4_000_000), (1024, 400_000), (2048, 1_000_000), (512, 100_000)],
        strict=True,
    ):
        row["sparse_bytes"], row["multiply_adds"] = sparse, macs
        row["onnx_latency"] = [_latency(1, 0.25, 2.0), _latency(575, 20.0, 40.0)]
    path.write_text(json.dumps(document), encoding="utf-8")
    frame = load_inference(path, results)
    tcmp = frame.set_index("network").loc["tcmp_s0"]
    assert (tcmp["sparse KiB"], tcmp["MACs/seq (M)"]) == (1.0, 0.4)
    assert (tcmp["b=1 ORT ms"], tcmp["b=1 ORT speed-up"]) == (0.25, 8.0)
    table = by_rate(frame)  # the unmatched network has no rate: left out
    assert list(table["rate (%)"]) == [99.0] and table["networks"].iloc[0] == 2
    # dense file 8,000 B (7.8 KiB); sparse files of 1 and 2 KiB
    assert table["file: dense / sparse"].iloc[0] == 5.85  # median of 7.8 / 1 and 7.8 / 2
    assert table["MACs: dense / ours"].iloc[0] == 7.0  # median of 10x and 4x
    assert table["b=1 speed-up"].iloc[0] == 3.0  # median of 4x (TCMP) and 2x (MP)
    assert list(by_rate(frame, ("MP",))["networks"]) == [1]
    plot_tiny(table)
