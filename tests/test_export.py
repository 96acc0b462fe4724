"""ONNX export: onnxruntime computes the compact network's logits; `tcmp export` writes files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
from compact_factory import random_compact  # noqa: E402

from tcmplib.cli import main  # noqa: E402
from tcmplib.compact import CompactGCN, compact_model, save_compact  # noqa: E402
from tcmplib.export import (  # noqa: E402
    export_onnx,
    measure_onnx_latency,
    run_onnx,
)
from tcmplib.model import PRUNABLE, AttentionGCN, GCNConfig  # noqa: E402
from tcmplib.sparse_file import load_sparse  # noqa: E402

TINY = GCNConfig(nodes=5, d_in=6, heads=3, qk_dim=3, channels=5, classes=4)
#: The attention neighbourhood needs the hand's 21 joints.
TINY_HAND = GCNConfig(nodes=21, d_in=6, heads=3, qk_dim=3, channels=5, classes=4, neighbourhood=2)
TINY_PER_HEAD = GCNConfig(
    nodes=21, d_in=6, heads=3, qk_dim=3, channels=5, classes=4, neighbourhood=2, values="per-head"
)


def random_compact_network(config: GCNConfig, seed: int, keep: float) -> CompactGCN:
    return random_compact(config, seed, keep)[1]


TOLERANCE = 1e-5


def inputs(config: GCNConfig, batch: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, config.nodes, config.d_in, generator=generator)


def assert_onnx_matches(
    compact: CompactGCN, path: Path, batches: tuple[int, ...] = (1, 7, 40)
) -> None:
    """Batch 40 is above the slice the convolution runs by on CPU (CONVOLUTION_SLICE)."""
    for batch in batches:
        x = inputs(compact.config, batch, seed=batch)
        with torch.no_grad():
            expected = compact(x).numpy()
        got = run_onnx(path, x.numpy(), threads=1)
        assert got.dtype == np.float32 and got.shape == (batch, compact.config.classes)
        assert np.abs(got - expected).max(initial=0.0) <= TOLERANCE, f"batch {batch}"


@pytest.mark.parametrize(
    "config", [TINY, TINY_HAND, TINY_PER_HEAD], ids=["all-joints", "neighbourhood-2", "per-head"]
)
@pytest.mark.parametrize("keep", [0.2, 0.6])
def test_tiny_pruned_network_runs_the_same_in_onnxruntime(
    tmp_path: Path, config: GCNConfig, keep: float
) -> None:
    compact = random_compact_network(config, 0, keep)
    path = export_onnx(compact, tmp_path / "net.onnx")
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["skeletons"]
    assert [o.name for o in model.graph.output] == ["logits"]
    batch_axis = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_axis.dim_param == "batch", "the batch axis is dynamic"
    assert_onnx_matches(compact, path)
    assert [p.name for p in tmp_path.iterdir()] == ["net.onnx"], "no temporary file left"


@pytest.mark.parametrize("neighbourhood", [None, 2])
def test_full_size_99_percent_runs_the_same_in_onnxruntime(
    tmp_path: Path, neighbourhood: int | None
) -> None:
    compact = random_compact_network(GCNConfig(neighbourhood=neighbourhood), 0, 0.01)
    assert len(compact.kept.fc_inputs) < compact.config.fc_in
    assert_onnx_matches(compact, export_onnx(compact, tmp_path / "net.onnx"))


def test_dense_network_exports_through_its_compaction(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = AttentionGCN(TINY_HAND)
    compact = compact_model(model)  # nothing pruned: every unit kept
    assert compact.num_parameters() == model.num_weights()
    path = export_onnx(compact, tmp_path / "dense.onnx")
    assert_onnx_matches(compact, path)
    x = inputs(TINY_HAND, 7)
    with torch.no_grad():
        assert np.abs(run_onnx(path, x) - model(x).numpy()).max() <= TOLERANCE


def test_live_head_without_query_key_pairs_exports(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = AttentionGCN(TINY)
    masks = {n: torch.zeros(s, dtype=torch.bool) for n, s in TINY.weight_shapes().items()}
    masks["wv"][0, 0] = masks["wv"][2, 1] = masks["fc"][0, 0] = masks["fc"][1, 3] = True
    compact = compact_model(model, masks)
    assert compact.wq.shape == (1, TINY.d_in, 0), "uniform attention, width-0 Q/K"
    assert_onnx_matches(compact, export_onnx(compact, tmp_path / "net.onnx"))


def test_inputs_and_weights_are_checked(tmp_path: Path) -> None:
    compact = random_compact_network(TINY, 0, 0.5)
    path = export_onnx(compact, tmp_path / "net.onnx")
    with pytest.raises(ValueError, match="inputs: expected float32 of shape"):
        run_onnx(path, np.zeros((2, TINY.nodes, TINY.d_in)))
    with pytest.raises(ValueError, match="inputs: expected float32 of shape"):
        run_onnx(path, np.zeros((TINY.nodes, TINY.d_in), dtype=np.float32))
    double = CompactGCN(TINY, compact.kept, {n: getattr(compact, n).double() for n in PRUNABLE})
    with pytest.raises(ValueError, match="expected float32 weights to export"):
        export_onnx(double, tmp_path / "double.onnx")
    empty = compact_model(
        AttentionGCN(TINY), {n: torch.zeros(s) for n, s in TINY.weight_shapes().items()}
    )
    with pytest.raises(ValueError, match="expected a network with live units"):
        export_onnx(empty, tmp_path / "empty.onnx")
    with pytest.raises(ValueError, match="opset: expected an integer >= 12"):
        export_onnx(compact, tmp_path / "old.onnx", opset=11)
    assert [p.name for p in tmp_path.iterdir()] == ["net.onnx"]


def test_onnx_latency_has_the_shape_of_torch_latency(tmp_path: Path) -> None:
    compact = random_compact_network(TINY, 0, 0.5)
    path = export_onnx(compact, tmp_path / "net.onnx")
    stats = measure_onnx_latency(path, inputs(TINY, 4), repeats=5, warmup=1, threads=1)
    assert stats.repeats == 5 and stats.batch == 4 and stats.threads == 1
    assert 0 < stats.p25_ms <= stats.median_ms <= stats.p75_ms
    with pytest.raises(ValueError, match="repeats: expected an integer >= 1"):
        measure_onnx_latency(path, inputs(TINY, 4), repeats=0)


# --------------------------------------------------------------------------- tcmp export


@pytest.fixture
def model_dir(tmp_path: Path) -> tuple[Path, CompactGCN]:
    compact = random_compact_network(TINY_HAND, 3, 0.3)
    save_compact(compact, tmp_path / "model")
    return tmp_path / "model", compact


def test_cli_writes_both_files_and_reports_them(
    model_dir: tuple[Path, CompactGCN], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, compact = model_dir
    sparse, onnx_path = tmp_path / "out" / "net.tcmps", tmp_path / "out" / "net.onnx"
    assert main(["export", str(directory), "--sparse", str(sparse), "--onnx", str(onnx_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    nonzero = compact.num_nonzero()
    for line, path in zip(lines, (sparse, onnx_path), strict=True):
        size = path.stat().st_size
        assert line.startswith(f"wrote {path}: {size:,} bytes, {size / nonzero:.2f} bytes per")
    difference = re.search(r"max \|difference\| (\S+)$", lines[1])
    assert difference is not None and float(difference.group(1)) <= TOLERANCE
    loaded = load_sparse(sparse)
    assert all(torch.equal(getattr(loaded, n), getattr(compact, n)) for n in PRUNABLE)
    assert_onnx_matches(compact, onnx_path)


def test_cli_writes_one_file_when_asked_for_one(
    model_dir: tuple[Path, CompactGCN], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, _ = model_dir
    assert main(["export", str(directory), "--sparse", str(tmp_path / "a.tcmps")]) == 0
    assert capsys.readouterr().out.count("wrote") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tcmps", "model"]


def test_cli_errors_are_one_line(
    model_dir: tuple[Path, CompactGCN], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory, _ = model_dir
    assert main(["export", str(directory)]) == 2
    error = capsys.readouterr().err
    assert error == "tcmp export: expected --sparse OUT.tcmps and/or --onnx OUT.onnx\n"
    assert main(["export", str(tmp_path / "nothing"), "--sparse", str(tmp_path / "a")]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "compact.json: expected a compact-model description" in error
    assert not (tmp_path / "a").exists()
