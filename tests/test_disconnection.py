from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from tcmplib.disconnection import one_shot_connectivity
from tcmplib.model import GCNConfig
from tcmplib.pruning.masks import keep_count, scoped_topk_masks

TINY = GCNConfig(nodes=3, d_in=4, heads=2, qk_dim=2, channels=4, classes=2)


def test_scoped_top_k_on_a_hand_worked_pair_of_tensors() -> None:
    scores = {"a": torch.tensor([[4.0, 1.0], [3.0, 2.0]]), "b": torch.tensor([9.0, 8.0, 7.0, 6.0])}
    glob = scoped_topk_masks(scores, 0.5, "global")  # keep 4 of 8: all of b
    assert glob["a"].sum() == 0 and glob["b"].all()
    per = scoped_topk_masks(scores, 0.5, "per-tensor")  # keep 2 of each
    assert per["a"].tolist() == [[True, False], [True, False]]
    assert per["b"].tolist() == [True, True, False, False]
    with pytest.raises(ValueError, match="scope"):
        scoped_topk_masks(scores, 0.5, "layer")


def test_per_tensor_budget_can_leave_kept_weights_without_a_path() -> None:
    # Value weights 100x smaller than the rest: the global ranking prunes the value
    # projection first, so no convolution channel gets an input and nothing is A-C; per
    # tensor, every tensor keeps its share.
    generator = torch.Generator().manual_seed(0)
    shapes = TINY.weight_shapes()
    weights = {name: torch.randn(shape, generator=generator) for name, shape in shapes.items()}
    weights["wv"] = weights["wv"] * 0.01
    table = one_shot_connectivity(weights, TINY, rates=(0.5,)).set_index("scope")
    assert table.loc["global", "wv kept"] == 0 and table.loc["global", "% A-C"] == 0.0
    per = table.loc["per-tensor"]
    assert per["wv kept"] == keep_count(16, 0.5) and per["fc kept"] == keep_count(48, 0.5)
    assert 0.0 < per["% A-C"] <= 100.0
    assert per["kept"] == sum(keep_count(int(torch.tensor(s).prod()), 0.5) for s in shapes.values())
    with pytest.raises(ValueError, match="missing"):
        one_shot_connectivity({"wq": weights["wq"]}, TINY)


def test_a_per_tensor_budget_closes_bilinear_heads() -> None:
    # Head 1's query weights 100x smaller than head 0's: per tensor at 50%, wq keeps head 0's
    # entries only, head 1 has no Q/K pair left, and with bilinear attention its filters'
    # dense-layer weights lose their paths; with softmax attention it stays live.
    from dataclasses import replace

    generator = torch.Generator().manual_seed(1)
    weights = {n: torch.randn(s, generator=generator) for n, s in TINY.weight_shapes().items()}
    weights["wq"][1] *= 0.01
    for attention, heads in (("softmax", TINY.heads), ("bilinear", TINY.heads - 1)):
        config = replace(TINY, attention=attention)
        row = one_shot_connectivity(weights, config, rates=(0.5,)).set_index("scope")
        assert row.loc["per-tensor", "live heads"] == heads, attention


def test_cli_disconnect_reads_dense_networks_and_refuses_pruned_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tcmplib.cli import main
    from tcmplib.compact import compact_model, save_compact
    from tcmplib.model import AttentionGCN
    from tcmplib.topology import magnitude_masks

    torch.manual_seed(0)
    dense = AttentionGCN(TINY)
    save_compact(compact_model(dense), tmp_path / "baseline")
    out = tmp_path / "one-shot.json"
    assert (
        main(["disconnect", str(tmp_path / "baseline"), "--rates", "0.5", "--json", str(out)]) == 0
    )
    rows = json.loads(out.read_text())["rows"]
    assert [(row["scope"], row["rate (%)"], row["network"]) for row in rows] == [
        ("global", 50.0, "baseline"),
        ("per-tensor", 50.0, "baseline"),
    ]
    assert "% A-C" in capsys.readouterr().out
    pruned = compact_model(dense, magnitude_masks(dense, 0.9))
    save_compact(pruned, tmp_path / "pruned")
    assert main(["disconnect", str(tmp_path / "pruned")]) == 2
    assert "expected a dense network" in capsys.readouterr().err


def test_cli_disconnect_reads_per_head_networks_in_their_shapes(tmp_path: Path) -> None:
    from dataclasses import replace

    from tcmplib.cli import main
    from tcmplib.compact import compact_model, load_compact, save_compact
    from tcmplib.model import AttentionGCN

    config = replace(TINY, values="per-head")
    torch.manual_seed(0)
    dense = AttentionGCN(config)
    save_compact(compact_model(dense), tmp_path / "baseline")
    weights = load_compact(tmp_path / "baseline").dense_weights()
    assert all(torch.equal(weights[n], getattr(dense, n).detach()) for n in weights)
    out = tmp_path / "one-shot.json"
    args = ["disconnect", str(tmp_path / "baseline"), "--rates", "0.5", "0.75"]
    assert main([*args, "--json", str(out)]) == 0
    expected = one_shot_connectivity(weights, config, (0.5, 0.75)).to_dict("records")
    rows = json.loads(out.read_text())["rows"]
    assert [{k: v for k, v in row.items() if k != "network"} for row in rows] == expected


def test_one_shot_rows_load_summarize_and_plot(tmp_path: Path) -> None:
    from tcmplib.disconnection import load_one_shot, plot_one_shot, summarize_one_shot

    rows = [
        {"network": n, "scope": scope, "rate (%)": 99.0, "% A-C": value}
        for n, scope, value in (
            ("a", "global", 90.0),
            ("b", "global", 80.0),
            ("a", "per-tensor", 50.0),
        )
    ]
    path = tmp_path / "one-shot.json"
    path.write_text(json.dumps({"rows": rows}))
    summary = summarize_one_shot(load_one_shot(path)).set_index("scope")
    assert summary.loc["global", ["mean", "min", "max", "networks"]].tolist() == [
        85.0,
        80.0,
        90.0,
        2,
    ]
    assert summary.loc["per-tensor", "networks"] == 1
    plot_one_shot(summary.reset_index())
    path.write_text("{}")
    with pytest.raises(ValueError, match="one-shot.json"):
        load_one_shot(path)


def test_one_shot_across_puts_variants_side_by_side(tmp_path: Path) -> None:
    from tcmplib.disconnection import one_shot_across

    def write(name: str, values: dict[str, float]) -> Path:
        rows = [
            {"network": network, "scope": "global", "rate (%)": 99.0, "% A-C": value}
            for network, value in values.items()
        ]
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"rows": rows}))
        return path

    files = {"a": write("a", {"s0": 90.0, "s1": 80.0}), "b": write("b", {"s0": 10.0}),
             "c": tmp_path / "missing.json"}  # fmt: skip
    table = one_shot_across(files)
    assert list(table.columns) == ["a (2 networks)", "b (1 network)"]
    assert table.loc[("global", 99.0)].tolist() == [85.0, 10.0]
    with pytest.raises(ValueError, match="none of .*missing.json exists yet"):
        one_shot_across({"c": files["c"]})
    from tcmplib.disconnection import across_numbers

    sentence = across_numbers(table)["across_sentence"]
    assert "2 variants' one-shot MP keeps 10.00 to 85.00% with a global budget" in sentence
    assert "the lowest, b (1 network) with a global budget, keeps 10.00%" in sentence
    connected = across_numbers(table[["a (2 networks)"]])["across_sentence"]
    assert "none of them falls under half" in connected


def test_mp_against_tcmp_reads_each_variants_runs(tmp_path: Path) -> None:
    from record_factory import make_record

    from tcmplib.disconnection import mp_against_tcmp

    shared, per_head = tmp_path / "shared", tmp_path / "per-head"
    for folder in (shared, per_head):
        folder.mkdir()
    runs = [
        (shared, "mp", 0.99, 0, 0.60, 53.0),
        (per_head, "mp", 0.99, 0, 0.40, 10.0),
        (per_head, "mp", 0.99, 1, 0.50, 30.0),
        (per_head, "tcmp", 0.99, 0, 0.70, 100.0),
        (per_head, "tcmp", 0.99, 1, 0.72, 100.0),
        (per_head, "baseline", 0.0, 0, 0.80, 100.0),
    ]
    for folder, method, rate, seed, accuracy, ac in runs:
        record = make_record(method, rate, seed, class_avg_accuracy=accuracy, percent_ac=ac)
        (folder / f"{record['name']}.json").write_text(json.dumps(record))
    table = mp_against_tcmp({"shared": shared, "per-head": per_head}, rates=(0.95, 0.99))
    assert table[["variant", "method", "seeds"]].values.tolist() == [
        ["shared", "mp", 1],
        ["per-head", "mp", 2],
        ["per-head", "tcmp", 2],
    ]
    mp = table.iloc[1]
    assert (mp["% A-C"], mp["% A-C min"], mp["% A-C max"]) == (20.0, 10.0, 30.0)
    assert mp["accuracy (%)"] == 45.0 and mp["± std"] == pytest.approx(7.07, abs=0.01)
    assert math.isnan(table.iloc[0]["± std"])
    with pytest.raises(ValueError, match="expected a results folder for the variant 'x'"):
        mp_against_tcmp({"x": tmp_path / "missing"})

    from tcmplib.disconnection import describe_runs, tcmp_lead

    assert describe_runs(table, "per-head", 99.0, "mp") == (
        "20.00% A-C (10.00 to 30.00) and 45.00 ± 7.07% accuracy (2 seeds)"
    )
    assert describe_runs(table, "shared", 99.0, "mp") == "53.00% A-C and 60.00% accuracy (1 seed)"
    assert describe_runs(table, "shared", 95.0, "mp") == "not run yet"
    assert tcmp_lead(table, "per-head", 99.0) == (
        "+26.00 points, beyond the larger seed spread (7.07)"
    )
    assert tcmp_lead(table, "shared", 99.0).startswith("not measured yet")

    from tcmplib.disconnection import loss_range

    # make_record's history is one row with loss 1.0 per run.
    assert loss_range(per_head, "mp", 0.99) == "1.00 and 1.00"
    assert loss_range(per_head, "tcmp", 0.95) == "(no tcmp run at 95% yet)"


def test_per_head_numbers_of_the_first_mask() -> None:
    from tcmplib.disconnection import per_head_numbers, untrained_connectivity

    config = GCNConfig(nodes=3, d_in=4, heads=2, qk_dim=2, channels=3, classes=2, values="per-head")
    fresh = untrained_connectivity(config)
    assert fresh.equals(untrained_connectivity(config))  # seeded
    numbers = per_head_numbers(config, fresh)
    first = fresh.set_index(["scope", "rate (%)"]).loc[("global", 99.0)]
    assert numbers["per_head_first_fc"] == str(int(first["fc kept"]))
    assert numbers["per_head_columns"] == "6" and numbers["per_head_wv"] == "24"
    assert numbers["per_head_weights"] == str(config.num_weights())
    assert float(numbers["per_head_scale_ratio"]) == pytest.approx(
        math.sqrt(6 / 7) / math.sqrt(6 / (config.fc_in + 2)), abs=0.05
    )
