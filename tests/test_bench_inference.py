"""measure_latency and the inference benchmark script (demo mode and a folder of networks)."""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tcmplib.compact import (
    STAGES,
    CompactGCN,
    LatencyStats,
    compact_model,
    measure_latency,
    measure_stages,
    multiply_adds,
    save_compact,
)
from tcmplib.model import AttentionGCN, GCNConfig
from tcmplib.topology import magnitude_masks

TOY = GCNConfig(nodes=3, d_in=4, heads=2, qk_dim=2, channels=3, classes=2)
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_inference.py"


@functools.cache
def load_script() -> ModuleType:
    # benchmarks/ is a folder of scripts, not a package: load the file as a module. It must be
    # in sys.modules while it runs, because dataclasses resolve annotations through it.
    spec = importlib.util.spec_from_file_location("bench_inference", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def toy_inputs(batch: int) -> torch.Tensor:
    return torch.randn(batch, TOY.nodes, TOY.d_in, generator=torch.Generator().manual_seed(0))


def test_measure_latency_returns_ordered_stats_and_restores_threads() -> None:
    model = AttentionGCN(TOY)
    model.train()
    before = torch.get_num_threads()
    stats = measure_latency(model, toy_inputs(7), repeats=5, warmup=1, threads=1)
    assert isinstance(stats, LatencyStats)
    assert 0.0 < stats.p25_ms <= stats.median_ms <= stats.p75_ms
    assert stats.iqr_ms >= 0.0
    assert (stats.batch, stats.repeats, stats.threads) == (7, 5, 1)
    assert torch.get_num_threads() == before
    assert model.training  # the caller's mode comes back


def test_measure_latency_single_repeat_and_default_threads() -> None:
    stats = measure_latency(AttentionGCN(TOY), toy_inputs(1), repeats=1, warmup=0)
    assert stats.p25_ms == stats.median_ms == stats.p75_ms
    assert stats.threads == torch.get_num_threads()


@pytest.mark.parametrize(
    ("keyword", "value"),
    [("repeats", 0), ("repeats", 2.5), ("warmup", -1), ("threads", 0), ("repeats", True)],
)
def test_measure_latency_rejects_bad_arguments(keyword: str, value: object) -> None:
    with pytest.raises(ValueError, match=keyword):
        measure_latency(AttentionGCN(TOY), toy_inputs(2), **{keyword: value})  # type: ignore[arg-type]


def test_measure_latency_rejects_inputs_without_batch_axis() -> None:
    with pytest.raises(ValueError, match="inputs"):
        measure_latency(AttentionGCN(TOY), torch.tensor(1.0))


def test_stages_compose_the_forward_pass() -> None:
    model = AttentionGCN(TOY)
    compact = compact_model(model, magnitude_masks(model, 0.5))
    assert not compact._all_fc_rows, "the convolution must have something to drop"
    x = toy_inputs(3)
    with torch.no_grad():
        staged = compact.dense(compact.convolution(compact.attention(x), compact.values(x)))
        assert torch.equal(staged, compact(x))


class SlowValues(CompactGCN):
    """A compact network whose value projection takes 30 ms more: the profile must charge
    it there."""

    def values(self, x: torch.Tensor) -> torch.Tensor:
        import time

        time.sleep(0.03)
        return super().values(x)


def test_measure_stages_charges_each_stage_its_own_time() -> None:
    compact = compact_model(AttentionGCN(TOY))
    slow = SlowValues(compact.config, compact.kept, dict(compact.named_parameters()))
    slow.train()
    before = torch.get_num_threads()
    stages = measure_stages(slow, toy_inputs(4), repeats=3, warmup=1, threads=1)
    assert list(stages) == list(STAGES)
    assert all((s.batch, s.repeats, s.threads) == (4, 3, 1) for s in stages.values())
    assert stages["values"].p25_ms >= 30.0
    assert all(stages[name].median_ms < 30.0 for name in STAGES if name != "values")
    assert torch.get_num_threads() == before and slow.training


@pytest.mark.parametrize(("keyword", "value"), [("repeats", 0), ("warmup", -1), ("threads", 0)])
def test_measure_stages_rejects_bad_arguments(keyword: str, value: object) -> None:
    compact = compact_model(AttentionGCN(TOY))
    with pytest.raises(ValueError, match=keyword):
        measure_stages(compact, toy_inputs(2), **{keyword: value})  # type: ignore[arg-type]


def test_demo_mode_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    load_script().main(
        ["--repeats", "2", "--small-repeats", "3", "--warmup", "0", "--batches", "1", "40",
         "--json", str(out)]
    )  # fmt: skip
    printed = capsys.readouterr().out
    assert "demo" in printed and "torch" in printed
    document = json.loads(out.read_text())
    rows = document["rows"]
    assert [row["dense"] for row in rows] == [True, False, False, False, False]
    assert rows[0]["name"] in printed
    kept = [row["kept_weights"] for row in rows]
    assert kept == sorted(kept, reverse=True) and len(set(kept)) == len(kept)
    assert all(row["stored_values"] <= rows[0]["stored_values"] for row in rows)
    assert all(row["file_bytes"] > 0 for row in rows)
    for row in rows:
        assert [stats["batch"] for stats in row["latency"]] == [1, 40]
        # small batches take their own, larger number of repeats
        assert [stats["repeats"] for stats in row["latency"]] == [3, 2]
    assert all(stats["speedup"] == 1.0 for stats in rows[0]["latency"])


def save_toy(directory: Path, rate: float) -> None:
    torch.manual_seed(1)
    model = AttentionGCN(TOY)
    with torch.no_grad():
        for weight in model.prunable().values():
            weight.normal_()
    masks = magnitude_masks(model, rate)
    assert isinstance(masks, dict)
    save_compact(compact_model(model, masks), directory)


def test_models_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    models = tmp_path / "models"
    save_toy(models / "baseline_rate0.0000_seed0_000000000000", 0.0)
    save_toy(models / "tcmp_rate0.7500_seed0_0123456789ab", 0.75)
    (models / "not-a-network").mkdir()
    out = tmp_path / "bench.json"
    load_script().main(
        ["--models", str(models), "--repeats", "2", "--batches", "3", "--json", str(out)]
    )
    rows = json.loads(out.read_text())["rows"]
    names = [row["name"] for row in rows]
    # The dense network first, as the library runs it; the baseline in compact form after it.
    assert names == [
        "dense",
        "baseline_rate0.0000_seed0_000000000000",
        "tcmp_rate0.7500_seed0_0123456789ab",
    ]
    assert [row["dense"] for row in rows] == [True, False, False]
    assert rows[2]["kept_weights"] < rows[1]["kept_weights"] == rows[0]["kept_weights"]
    assert rows[0]["kept_weights"] == TOY.num_weights()
    assert rows[1]["file_bytes"] == (models / names[1] / "compact.safetensors").stat().st_size
    assert rows[2]["multiply_adds"] < rows[1]["multiply_adds"] == rows[0]["multiply_adds"]
    assert rows[0]["multiply_adds"] == sum(multiply_adds(TOY).values())
    assert "baseline_rate0.0000" in capsys.readouterr().out


def test_models_folder_without_baseline_has_the_dense_reference_too(tmp_path: Path) -> None:
    save_toy(tmp_path / "tcmp_rate0.5000_seed0_0123456789ab", 0.5)
    out = tmp_path / "bench.json"
    load_script().main(["--models", str(tmp_path), "--repeats", "1", "--json", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [row["dense"] for row in rows] == [True, False]
    assert rows[0]["stored_values"] == TOY.num_weights()


def test_missing_folder_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(SystemExit) as raised:
        load_script().main(["--models", str(missing)])
    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert str(missing) in error and error.count("\n") == 1


def test_folder_without_networks_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty-run").mkdir()
    with pytest.raises(SystemExit) as raised:
        load_script().main(["--models", str(tmp_path)])
    assert raised.value.code == 2
    assert "compact network" in capsys.readouterr().err


def test_structures_folder_times_twins_with_the_recorded_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tcmplib.compact import load_compact, save_structure, structure_of

    models, structures = tmp_path / "models", tmp_path / "networks"
    names = ["baseline_rate0.0000_seed0_000000000000", "tcmp_rate0.7500_seed0_0123456789ab"]
    for name, rate in zip(names, (0.0, 0.75), strict=True):
        save_toy(models / name, rate)
        save_structure(structure_of(load_compact(models / name)), structures / f"{name}.json")
    from_models, from_structures = tmp_path / "a.json", tmp_path / "b.json"
    load_script().main(["--models", str(models), "--repeats", "1", "--json", str(from_models)])
    load_script().main(
        ["--structures", str(structures), "--repeats", "1", "--json", str(from_structures)]
    )
    assert "twins of the structures" in capsys.readouterr().out
    saved, twins = (json.loads(path.read_text()) for path in (from_models, from_structures))
    assert (saved["kind"], twins["kind"]) == ("saved networks", "structure twins")
    sizes = ("name", "dense", "kept_weights", "stored_values", "file_bytes")
    assert [[row[k] for k in sizes] for row in twins["rows"]] == [
        [row[k] for k in sizes] for row in saved["rows"]
    ], "a twin has the sizes of the network it stands for"


def test_structures_folder_errors_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        load_script().main(["--structures", str(tmp_path)])
    assert raised.value.code == 2
    assert "no structure file" in capsys.readouterr().err
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(SystemExit) as raised:
        load_script().main(["--structures", str(tmp_path)])
    error = capsys.readouterr().err
    assert raised.value.code == 2 and "run.json" in error and error.count("\n") == 1


def test_twins_script_times_each_saved_network_against_its_twin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = importlib.util.spec_from_file_location("bench_twins", SCRIPT.with_name("bench_twins.py"))
    assert spec is not None and spec.loader is not None
    twins = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(twins)
    save_toy(tmp_path / "mp_rate0.5000_seed0_0123456789ab", 0.5)
    save_toy(tmp_path / "mp_rate0.9000_seed0_0123456789ab", 0.9)
    twins.main(["--models", str(tmp_path), "--repeats", "1", "--rounds", "1", "--batches", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["network", "b=2"]
    assert [line.split()[0] for line in lines[1:]] == sorted(p.name for p in tmp_path.iterdir())
    for line in lines[1:]:  # a ratio per network: its two medians', as printed
        saved_ms, twin_ms, ratio = (float(cell) for cell in line.split()[-3:])
        assert saved_ms > 0 and twin_ms > 0
        # (One timed pass each: under load the ratio itself can round to 0.00.)
        assert abs(ratio - twin_ms / saved_ms) <= 0.01 + 0.05 * twin_ms / saved_ms
    with pytest.raises(SystemExit) as raised:
        twins.main(["--models", str(tmp_path / "nowhere")])
    assert raised.value.code == 2 and "expected a folder" in capsys.readouterr().err


def test_stages_flag_profiles_every_network_at_every_batch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models, out = tmp_path / "models", tmp_path / "bench.json"
    for name, rate in (("baseline_rate0.0000_seed0_000000000000", 0.0), ("mp_x", 0.75)):
        save_toy(models / name, rate)
    argv = ["--models", str(models), "--repeats", "1", "--batches", "1", "3", "--json", str(out)]
    load_script().main(argv)
    assert "stages" not in json.loads(out.read_text())["rows"][0], "only when asked"
    load_script().main([*argv, "--stages"])
    assert "median ms per stage" in capsys.readouterr().out
    for row in json.loads(out.read_text())["rows"]:
        assert [entry["batch"] for entry in row["stages"]] == [1, 3]
        assert all(entry[stage] > 0.0 for entry in row["stages"] for stage in STAGES)


def test_gather_benchmark_prints_one_line_per_batch_and_share(
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = importlib.util.spec_from_file_location("bench_gather", SCRIPT.parent / "bench_gather.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--batches", "1", "2", "--shares", "0.1", "0.9", "--repeats", "1"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[3:]]
    assert [(row[0], row[1]) for row in rows] == [
        ("1", "0.10"),
        ("1", "0.90"),
        ("2", "0.10"),
        ("2", "0.90"),
    ]
    assert all(row[4] in ("gather", "scatter") for row in rows)
    with pytest.raises(SystemExit):
        module.main(["--shares", "1.5"])


def test_onnx_and_sparse_sizes_in_the_rows(tmp_path: Path) -> None:
    from tcmplib.sparse_file import sparse_bytes

    pytest.importorskip("onnxruntime")
    models = tmp_path / "models"
    save_toy(models / "tcmp_rate0.7500_seed0_0123456789ab", 0.75)
    out = tmp_path / "bench.json"
    load_script().main(
        ["--models", str(models), "--repeats", "2", "--small-repeats", "2", "--batches", "1",
         "40", "--onnx", "--json", str(out)]
    )  # fmt: skip
    dense, tcmp = json.loads(out.read_text())["rows"]
    assert dense["sparse_bytes"] is None and not tcmp["sparse_estimated"]
    from tcmplib.compact import load_compact

    compact = load_compact(models / "tcmp_rate0.7500_seed0_0123456789ab")
    assert tcmp["sparse_bytes"] == sparse_bytes(compact)
    assert [entry["batch"] for entry in tcmp["onnx_latency"]] == [1, 40]
    assert all(entry["median_ms"] > 0 for entry in tcmp["onnx_latency"])
