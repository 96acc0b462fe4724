"""The numbers the experiment chapters quote: tcmplib.chapter_numbers on hand-made records."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from record_factory import make_record

from tcmplib import chapter_numbers as cn
from tcmplib.compact import STAGES
from tcmplib.findings import OFF_AC_COLUMNS, training_spikes
from tcmplib.model import GCNConfig
from tcmplib.records import read_folder, read_record
from tcmplib.tables import load_results, table1_right

RATES = (0.5, 0.75, 0.95, 0.99)
METHODS = ("mp", "greedy-tc", "tcmp", "pmp")


def write(folder: Path, method: str, rate: float = 0.0, seed: int = 0, **fields: Any) -> Path:
    """A run record under its sweep name (so that the sweep and find_result see it)."""
    record = make_record(method, rate, seed, **fields)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{record['name']}.json"
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


def fpha(folder: Path, method: str, rate: float = 0.0, seed: int = 0, **fields: Any) -> Path:
    return write(folder, method, rate, seed, dataset="fpha", profile="paper", **fields)


def test_glue_numbers_glues_every_value_without_display(monkeypatch) -> None:
    import myst_nb

    glued = []
    monkeypatch.setattr(myst_nb, "glue", lambda *args, **kw: glued.append((args, kw)))
    cn.glue_numbers({"a": 1, "b": "two"})
    assert glued == [(("a", 1), {"display": False}), (("b", "two"), {"display": False})]


# --------------------------------------------------------------------------- chapter 7


def _grid(folder: Path, accuracy: dict[tuple[float, str], float], mp_99_hard: float) -> None:
    write(folder, "baseline", class_avg_accuracy=0.9)
    for method in METHODS:
        for rate in RATES:
            history = [{"epoch": 1, "loss": 1.0, "hard_rate": mp_99_hard}]
            write(folder, method, rate, class_avg_accuracy=accuracy.get((rate, method), 0.85),
                  percent_ac=99.0 if method == "mp" else 100.0, history=history)  # fmt: skip


def test_experiments_numbers_compare_and_caveat(tmp_path: Path) -> None:
    accuracy = {(0.99, "tcmp"): 0.8, (0.99, "mp"): 0.3, (0.99, "greedy-tc"): 0.805,
                (0.95, "tcmp"): 0.6, (0.5, "pmp"): 0.5, (0.75, "mp"): 0.95}  # fmt: skip
    _grid(tmp_path, accuracy, mp_99_hard=0.90)
    numbers = cn.experiments_numbers(tmp_path, dataset="synthetic", profile="book", seeds=1)
    assert numbers["data_label"] == "the synthetic hand actions"
    assert (numbers["epochs"], numbers["runs"], numbers["seeds"]) == (150, 17, 1)
    assert numbers["base_acc"] == pytest.approx(90.0)
    assert numbers["tcmp_99_acc"] == pytest.approx(80.0) and numbers["mp_99_ac"] == 99.0
    assert numbers["tcmp_99_params"] == 1000 and isinstance(numbers["tcmp_99_params"], int)
    assert numbers["tcmp_vs_mp_99"] == "ahead of"
    assert numbers["tcmp_vs_greedy_99"] == "on par with"  # within one point
    assert numbers["tcmp_vs_mp_95"] == "behind"
    # PMP (50% at rate 0.5) is quoted apart from the paper's three methods
    assert (numbers["low_min"], numbers["low_max"]) == pytest.approx((85.0, 95.0))
    assert (numbers["pmp_50_acc"], numbers["pmp_75_acc"]) == pytest.approx((50.0, 85.0))
    assert numbers["mp_ac_99_words"] == "below 100%"
    assert numbers["paper_tcmp_99_acc"] == pytest.approx(82.95)  # the published table
    assert numbers["mp_99_caveat"].startswith("Its relaxed mask ended the run with only 90.00%")


def test_experiments_numbers_mask_on_budget(tmp_path: Path) -> None:
    _grid(tmp_path, {}, mp_99_hard=0.991)
    numbers = cn.experiments_numbers(tmp_path, dataset="fpha", profile="smoke", seeds=1)
    assert numbers["data_label"] == "FPHA" and numbers["epochs"] == 4
    assert "99.10% of the weights below psi = 1/2, on its budget" in numbers["mp_99_caveat"]


# --------------------------------------------------------------------------- chapter 8


def test_coverage_counts_the_grid_and_says_what_rows_average(tmp_path: Path) -> None:
    fpha(tmp_path, "baseline", wall_time_s=1800.0)
    fpha(tmp_path, "mp", 0.5, wall_time_s=3600.0)
    numbers = cn.coverage_numbers(tmp_path, seeds=2)
    assert (numbers["done"], numbers["total"]) == (2, 34)
    assert numbers["hours"] == pytest.approx(1.5)
    assert numbers["coverage_sentence"].startswith("where a configuration has fewer seeds")
    assert "earlier revision" not in numbers["coverage_sentence"]
    # A record of an older revision of its method (here MP's soft budget) counts as such.
    fpha(tmp_path, "mp", 0.75, options={"budget": "soft"})
    numbers = cn.coverage_numbers(tmp_path, seeds=2)
    assert (numbers["done"], numbers["total"]) == (2, 34)
    assert numbers["coverage_sentence"].endswith(
        "; 1 of the records (1 of MP) were computed by an earlier revision of their method, "
        "which the rows show as they are and which the sweep would run again under the "
        "current one"
    )
    results = load_results(tmp_path).query("target_rate != 0.75")
    assert cn.seed_coverage(results).to_dict() == {"0%": {"Baseline GCN": 1, "MP": 0},
                                                   "50%": {"Baseline GCN": 0, "MP": 1}}  # fmt: skip


def test_table1_left_ends_with_our_baseline(tmp_path: Path) -> None:
    write(tmp_path, "baseline", 0.0, 0, class_avg_accuracy=0.70)
    write(tmp_path, "baseline", 0.0, 1, class_avg_accuracy=0.72)
    ours = table1_right(load_results(tmp_path))
    table = cn.table1_left_with_ours(ours, tmp_path)
    last = table.iloc[-1]
    assert last["method"] == "our reconstruction (2 seed(s))"
    assert last["accuracy (%)"] == "71.00 ± 1.41"
    assert (last["pose"], last["color"], last["source"]) == ("✓", "✗", str(tmp_path))
    assert set(table["source"].iloc[:-1]) == {"paper (published)"}
    alone = cn.table1_left_with_ours(ours.iloc[:0], tmp_path)
    assert len(alone) == len(table) - 1


def test_baseline_fit_epoch_and_finding_names(tmp_path: Path) -> None:
    history = [{"epoch": 50, "loss": 1.0, "train_accuracy": 0.9},
               {"epoch": 1100, "loss": 0.1, "train_accuracy": 1.0}]  # fmt: skip
    record = read_record(fpha(tmp_path, "baseline", history=history))
    assert cn.paper_run(tmp_path, "baseline") == record
    assert cn.paper_run(tmp_path, "baseline", seed=1) is None
    assert cn.baseline_numbers(record) == {"fit_epoch": "1,100"}
    assert cn.baseline_numbers(None) == {"fit_epoch": "—"}
    findings = pd.DataFrame({"verdict": ["holds"], "ours": ["95%: 1%"]}, index=["mp-disconnects"])
    assert cn.finding_numbers(findings) == {"finding_mp_disconnects": "holds",
                                            "numbers_mp_disconnects": "95%: 1%"}  # fmt: skip


def _tcmp_history(rates: list[float], accuracy: float = 0.6) -> list[dict[str, float]]:
    return [{"epoch": 500 * (i + 1), "loss": 0.1, "hard_rate": rate, "temperature": 1e-4,
             "lr": 0.01, "test_class_avg_accuracy": accuracy}
            for i, rate in enumerate(rates)]  # fmt: skip


def test_collapse_found_in_revision_1_and_fixed_in_revision_2(tmp_path: Path) -> None:
    current = tmp_path / "fpha-paper"
    fpha(tmp_path / "fpha-paper-superseded", "tcmp", 0.99, history=_tcmp_history([0.99, 0.02]),
         class_avg_accuracy=0.16)  # fmt: skip
    fpha(current, "tcmp", 0.99, history=_tcmp_history([0.99, 0.992]), class_avg_accuracy=0.64,
         details={"learned_rate": 0.99, "projected": 0.0})  # fmt: skip
    fpha(current, "pmp", 0.99)  # not a relaxed method: not scanned
    runs = cn.relaxed_runs(current)
    assert [run.results for run in runs] == ["revision 1 (superseded)", "current"]
    events = cn.collapse_events(runs)
    assert events[["results", "epoch off", "mask rate after (%)"]].values.tolist() == [
        ["revision 1 (superseded)", 1000, 2.0]
    ]
    numbers = cn.collapse_numbers(runs)
    assert (numbers["collapses"], numbers["current_relaxed_runs"]) == (1, 1)
    assert (numbers["current_collapses"], numbers["current_collapse_runs"]) == (0, "none")
    assert numbers["collapse_sentence"].startswith(
        "In TCMP (our) at 99% (seed 0, revision 1 (superseded)), the mask held 99.00%"
    )
    assert "band half-width was 0.0105" in numbers["collapse_sentence"]
    assert numbers["rerun_sentence"] == (
        "The rerun of TCMP at 99%, seed 0, with revision 2 kept its mask on budget to the end: "
        "from epoch 500 on, the share of weights with psi < 1/2 stayed within 0.20 points of "
        "the target, the learned mask ended at 99.00% (used as learned, no projection), and "
        "the network classifies at 64.00% against 16.00% for revision 1."
    )
    assert cn.find_relaxed(runs, current=True, seed=1) is None


def test_no_collapse_and_no_rerun(tmp_path: Path) -> None:
    numbers = cn.collapse_numbers(cn.relaxed_runs(tmp_path))
    assert numbers["collapse_sentence"] == "No run lost its budget after reaching it."
    assert numbers["rerun_sentence"].endswith("is not in the results yet.")


def test_off_ac_numbers_per_rate_and_the_other_runs_at_99() -> None:
    rows = [(95.0, 0, 431, 10, 100), (95.0, 1, 869, 5, 150), (50.0, 0, 0, 0, 50),
            (99.0, 0, 7079, 73, 2150), (99.0, 2, 7351, 9000, 1450)]  # fmt: skip
    frame = pd.DataFrame(
        [{"rate (%)": rate, "seed": seed, "most kept off A-C": most,
          "largest rise of kept A-C": rise, "rise by epoch": epoch,
          "final test acc. (%)": 60.0 + seed} for rate, seed, most, rise, epoch in rows],
        columns=OFF_AC_COLUMNS,
    )  # fmt: skip
    numbers = cn.off_ac_numbers(frame)
    assert (numbers["off_ac_95"], numbers["off_ac_95_runs"]) == ("431 to 869", "2")
    assert (numbers["off_ac_99"], numbers["off_ac_low"]) == ("7,079 to 7,351", "0")
    assert numbers["off_ac_other_rises"] == "seed 0: 73 by epoch 2,150"  # seed 2 was traced
    assert numbers["tcmp_runs"] == "5"
    assert numbers["tcmp_99_seeds"] == "60.00% (seed 0), 62.00% (seed 2)"
    empty = cn.off_ac_numbers(frame.iloc[:0])
    assert (empty["off_ac_99"], empty["tcmp_99_seeds"], empty["off_ac_99_runs"]) == ("—", "—", "0")


def _trace(folder: Path) -> None:
    # Tensor a keeps 20 weights off A-C until epoch 6 reconnects them (as in test_diagnostics).
    b = {1: 100, 2: 98, 3: 100, 4: 99, 5: 102, 6: 90, 7: 130, 8: 110}
    rows = [{"epoch": float(epoch), "kept_a": 20.0, "kept_ac_a": 20.0 if epoch >= 6 else 0.0,
             "kept_b": float(kept), "kept_ac_b": float(kept), "consistency": 1e-5,
             "budget": 1e-6 if epoch < 6 else 2.5, "ce": 1e-4, "lr": 0.004,
             "temperature": 1e-5, "loss": 0.5,
             "step_max_a": 0.2 if epoch == 4 else 0.1, "step_max_b": 0.1 if epoch == 4 else 0.01}
            for epoch, kept in b.items()]  # fmt: skip
    folder.mkdir(parents=True)
    name = "trace_tcmp_rate0.9900_seed2_lrmax0.01.json"
    (folder / name).write_text(json.dumps({"rows": rows}), encoding="utf-8")


def test_reconnection_numbers_from_a_trace(tmp_path: Path) -> None:
    assert cn.traced_reconnection(tmp_path) is None
    assert set(cn.reconnection_numbers(None).values()) == {"—"}
    history = [{"epoch": 4.0, "loss": 0.5, "test_class_avg_accuracy": 0.7},
               {"epoch": 8.0, "loss": 0.5, "test_class_avg_accuracy": 0.5}]  # fmt: skip
    fpha(tmp_path, "tcmp", 0.99, seed=2, history=history, class_avg_accuracy=0.5,
         details={"learned_rate": 0.98, "projection_changed_edges": 12.0})  # fmt: skip
    _trace(tmp_path / "diagnostics" / "tcmp")
    traced = cn.traced_reconnection(tmp_path)
    assert traced is not None and traced.found.onset == 6
    numbers = cn.reconnection_numbers(traced)
    assert numbers["rec_match"].startswith("at all 2 evaluated epochs it traced")
    assert (numbers["rec_reservoir"], numbers["rec_reservoir_tensors"]) == ("20", "20 in `a`")
    assert (numbers["rec_grown"], numbers["rec_grown_peak"]) == ("`b`", "130")
    assert numbers["rec_cap"] == f"{math.sqrt(1e-5 * math.log(3)) / 2:.5f}"
    assert numbers["rec_final"].endswith("ended at 50.00% (its best evaluated epoch: 70.00% at "
                                         "epoch 4)")  # fmt: skip
    assert set(numbers) == set(cn.reconnection_numbers(None))


def test_spike_numbers_plain_greedy_and_pmp(tmp_path: Path) -> None:
    def row(epoch: int, train: float, alignment: float = 1.0) -> dict[str, float]:
        return {"epoch": epoch, "train_accuracy": train, "test_class_avg_accuracy": 0.5,
                "lr": 0.005, "loss": 1e-6, "alignment": alignment}  # fmt: skip

    fpha(tmp_path, "pmp", 0.5, history=[row(50, 1.0), row(100, 0.5, 3.0), row(150, 0.9)],
         details={"threshold_pooled": 0.0123})  # fmt: skip
    greedy = {"dense_class_avg_accuracy": 0.7, "pruned_class_avg_accuracy": 0.69}
    fpha(tmp_path, "greedy-tc", 0.5, history=[row(50, 1.0), row(100, 0.8), row(150, 1.0)],
         details=greedy)  # fmt: skip
    fpha(
        tmp_path,
        "greedy-tc",
        0.99,
        history=[row(50, 1.0)],
        details={
            "dense_class_avg_accuracy": 0.7,
            "pruned_class_avg_accuracy": 0.1,
            "dense_epochs": 1350.0,
        },
    )
    spikes = training_spikes(tmp_path)
    numbers = cn.spike_numbers(tmp_path, spikes)
    assert numbers["spike_runs"] == "2 of 3"
    assert numbers["spiky_methods"] == "PMP, TCMP (greedy)"
    assert numbers["plain_spike_sentence"].startswith(
        "Not PMP's alone: TCMP (greedy) at 50% (seed 0) spiked at epoch 100"
    )
    assert "This training minimizes" in numbers["plain_spike_sentence"]
    assert numbers["greedy_spike_sentence"].startswith(
        "Greedy TC spiked in 1 of its 2 runs, and its selection had cost those runs little test "
        "accuracy (50% seed 0: 1.00 points, dense minus right after the selection; 60.00 to "
        "60.00 points at the other rates)"
    )
    assert numbers["pmp_bands"] == "a = 0.0123 at 50% (seed 0), a/2 below the cap"
    # Spike epochs 100 and 150; the alignment tripled at 100 and fell at 150.
    assert (numbers["lr_max"], numbers["alignment_rose"]) == ("0.01", "1 of 2")
    assert numbers["spike_end_sentence"].startswith("PMP at 50% (seed 0) ends inside a spike")
    discussion = cn.discussion_numbers(tmp_path, table1_right(load_results(tmp_path)), spikes)
    assert discussion["low_rate_spikes"].startswith("Runs at these rates that spiked")
    assert discussion["greedy_99_acc"] == "50.00" and discussion["tcmp_99_acc"] == "—"
    assert discussion["greedy_phases"] == (
        "at 99% it selects on a dense network at 70.00% (epoch 1,350), falls to 10.00% right after "
        "the selection and retrains to 50.00%"
    )
    assert discussion["paper_mp_95_acc"] == "83.82"


def test_trace_numbers() -> None:
    assert set(cn.trace_numbers(pd.DataFrame()).values()) == {"—"}
    onset = {"rate (%)": 99.0, "lr": 0.004, "mean step before": 2e-4,
             "mean step 10 epochs earlier": 1e-4, "largest mean step in the spike": 2e-3,
             "lowest train accuracy": 0.1, "crossed before": 1000.0, "steepness": 5.0,
             "alignment": 1.0, "alignment 10 epochs earlier": 2.0,
             "largest alignment in the spike": 10.0}  # fmt: skip
    traces = pd.DataFrame([{**onset, "lr_max": 0.01, "onset epoch": 142.0},
                           {**onset, "lr_max": 0.002, "onset epoch": 265.0},
                           {**onset, "lr_max": 0.01, "onset epoch": None}])  # fmt: skip
    numbers = cn.trace_numbers(traces)
    assert numbers["trace_spikes"] == "2"
    assert numbers["trace_lr_sentence"] == (
        "With the cap at 0.002 instead of 0.01, the first spike at 99% came at epoch 265 "
        "instead of 142."
    )
    assert numbers["trace_sentence"].startswith("PMP at 99% (cap 0.002) first spiked at epoch 265")
    assert (numbers["trace_step_ratio"], numbers["trace_growth"]) == ("2.0 to 2.0", "10 to 10")
    assert numbers["trace_crossed"] == "1,000 (0.05%)"
    assert numbers["trace_divergence_fell"] == "2 of 2"


def test_architecture_numbers() -> None:
    tiny = GCNConfig(nodes=5, d_in=6, heads=2, qk_dim=3, channels=4, classes=3)
    row = {"rate (%)": 99.0, "seed": 1, "dense epochs": 1350,
           "one-shot MP % A-C (ours)": 91.3, "MP % A-C (paper)": 21.2}  # fmt: skip
    oneshot = pd.DataFrame([row])
    numbers = cn.architecture_numbers(oneshot, tiny)
    assert numbers["fc_edges_per_channel"] == "30" and numbers["wv_edges_per_channel"] == "6"
    assert numbers["channels"] == "4"
    assert numbers["budget_99"] == f"{round(0.01 * tiny.num_weights()):,}"
    assert numbers["oneshot_sentence"] == (
        "at 99% (seed 1), one-shot MP on the dense weights of epoch 1,350 keeps 91.30% A-C "
        "where the paper's MP has 21.20%"
    )
    assert cn.architecture_numbers(oneshot.iloc[:0])["fc_edges_per_channel"] == "15,120"


# --------------------------------------------------------------------------- chapter 9


def _networks() -> pd.DataFrame:
    rows = [("dense", 0.0, 0, 1000, 1000, 100.0, 0.5, 100.0, 1.0, 1.0),
            ("dense-2", 0.0, 2, 1000, 1000, 100.0, 0.5, 95.0, 1.01, 1.06),
            ("a", 99.0, 0, 10, 40, 1.0, 0.25, 50.0, 2.0, 2.0),
            ("b", 99.0, 1, 12, 60, 1.5, 0.5, 25.0, 1.0, 4.0)]  # fmt: skip
    columns = ["network", "rate (%)", "seed", "kept weights", "stored values", "file KiB",
               "b=1 ms", "b=575 ms", "b=1 speed-up", "b=575 speed-up"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns).assign(method=["baseline", "baseline", "MP", "MP"])


def test_network_numbers() -> None:
    numbers = cn.network_numbers(_networks())
    assert (numbers["dense_b1"], numbers["dense_b575"], numbers["dense_kib"]) == (
        "0.50", "100", "100")  # fmt: skip
    assert numbers["dense_repeat_sentence"] == (
        "the dense baseline of seed 2, the same function in compact form, ran at 1.01x and "
        "1.06x the reference"
    )
    assert numbers["network_summary"].startswith(
        "MP at 99% (seed 0): 10 weights in 40 stored values, 1 KiB, 2.00x at batch 1"
    )
    assert (numbers["b1_range"], numbers["b575_range"]) == ("1.00x to 2.00x", "2.00x to 4.00x")


def test_tiny_numbers_are_medians_over_the_tc_networks() -> None:
    networks = _networks().assign(method=["Baseline GCN", "Baseline GCN", "TCMP (our)", "MP"])
    networks["sparse KiB"] = [None, None, 10.0, 20.0]
    networks["MACs/seq (M)"] = [3.0, 3.0, 0.5, 1.0]
    numbers = cn.tiny_numbers(networks)
    assert numbers["dense_macs"] == "3.57"
    # TCMP only (MP is not TC): file 100 / 10, MACs 3 / 0.5, speed-ups of network "a"
    assert (numbers["tc99_file"], numbers["tc99_macs"]) == ("10.0x", "6.0x")
    assert (numbers["tc99_b1"], numbers["tc99_b575"]) == ("2.0x", "2.0x")
    assert numbers["tc99_ort_b1"] == numbers["tc95_b1"] == "—"


def test_stage_numbers() -> None:
    networks = _networks()
    stages = networks[["network", "rate (%)"]].assign(batch=575)
    for stage, ms in zip(STAGES, (1.0, 1.0, 6.5, 1.5), strict=True):
        stages[f"{stage} ms"] = ms
    stages["sum ms"] = 10.0
    structures = pd.DataFrame({"network": ["a", "b"], "heads": [16, 2], "channels": [128, 128]})
    numbers = cn.stage_numbers(stages, networks, structures)
    assert numbers["stage_batch"] == "575"
    assert (numbers["convolution_share"], numbers["dense_share"]) == ("65 to 65%", "15 to 15%")
    assert numbers["full_grid_sentence"] == (
        "1 of the 2 compact networks timed keep all 16 heads and all 128 channels; at batch 575 "
        "they run 2.00x to 2.00x as fast as the dense network"
    )
    # network "a" keeps all 16 heads; its attention takes 1 ms of the dense network's 100 ms
    assert numbers["attention_floor"] == (
        "1.0 ms, so that no network that keeps all 16 heads can run more than 100.0x as fast "
        "as the dense network there"
    )
    assert set(cn.stage_numbers(stages.iloc[:0], networks, structures).values()) == {"—"}


def test_low_rate_pmp_from_a_folder_or_nan_without_one(tmp_path: Path) -> None:
    _grid(tmp_path / "r", {(0.5, "pmp"): 0.91, (0.75, "pmp"): 0.4}, mp_99_hard=0.99)
    numbers = cn.low_rate_pmp(tmp_path / "r", prefix="x_")
    assert numbers == pytest.approx({"x_pmp_50_acc": 91.0, "x_pmp_75_acc": 40.0})
    missing = cn.low_rate_pmp(tmp_path / "absent")
    assert list(missing) == ["pmp_50_acc", "pmp_75_acc"]
    assert all(math.isnan(v) for v in missing.values())


def test_pmp_projection_per_revision_and_what_the_table_holds(tmp_path: Path) -> None:
    def row(soft: float, below: float) -> list[dict[str, float]]:
        return [{"epoch": 150, "test_class_avg_accuracy": soft, "threshold_rate": below}]

    folder = tmp_path / "r"
    old = tmp_path / "r-superseded"
    fpha(old, "pmp", 0.99, 0, options={"threshold": "prior"}, history=row(0.80, 0.972),
         class_avg_accuracy=0.15)  # fmt: skip
    fpha(old, "pmp", 0.95, 0, options={"threshold": "prior"}, history=row(0.78, 0.945),
         class_avg_accuracy=0.50)  # fmt: skip
    fpha(folder, "pmp", 0.5, 0, options={"threshold": "prior"}, history=row(0.79, 0.5))
    fpha(folder, "pmp", 0.99, 0, history=row(0.76, 0.93), class_avg_accuracy=0.755)
    fpha(folder, "pmp", 0.99, 1, history=row(0.77, 0.94), class_avg_accuracy=0.765)
    numbers = cn.pmp_projection_numbers(folder, prefix="sel_")
    one, two = numbers["sel_pmp_projection"].split(". PMP revision 2")
    assert "2 runs at 95% and 99%" in one and "78.0-80.0%" in one
    assert "94.5-97.2% of the latent weights" in one and "at 15.0-50.0%" in one
    assert "2 runs at 99%" in two and "at 75.5-76.5%" in two  # the 50% run is not at 95/99
    assert numbers["sel_pmp_in_table"] == (
        "revision 1 at 50% (1 seed); revision 2 at 99% (2 seeds)"
    )
    empty = cn.pmp_projection_numbers(tmp_path / "none")
    assert "revision 1 (its band at the prior's quantile a(r)) has no run" in empty[
        "pmp_projection"
    ]
    assert empty["pmp_in_table"] == "no PMP run"


def test_plot_pmp_projection_one_panel_per_rate(tmp_path: Path) -> None:
    from tcmplib.pruning.plots import plot_pmp_projection

    history = [
        {"epoch": 50, "test_class_avg_accuracy": 0.8},
        {"epoch": 100, "test_class_avg_accuracy": 0.79},
    ]
    for rate in (0.95, 0.99):
        fpha(tmp_path / "r", "pmp", rate, history=history, class_avg_accuracy=0.2)
    reports = [record.report for record in cn.pmp_runs(tmp_path / "r")]
    figure = plot_pmp_projection({"revision 2": reports})
    assert [ax.get_title() for ax in figure.axes] == ["PMP at 95%", "PMP at 99%"]
    dots = [line for line in figure.axes[1].lines if line.get_marker() == "o"]
    assert [tuple(line.get_ydata()) for line in dots] == [(20.0,)]
    with pytest.raises(ValueError, match="at least one PMP report"):
        plot_pmp_projection({"revision 1": []})


def test_mp_revision_reads_the_budget_and_decay_options(tmp_path: Path) -> None:
    def revision(recipe: str, **options: Any) -> int:
        folder = tmp_path / f"{recipe}-{len(list(tmp_path.glob('*')))}"
        return cn.mp_revision(read_record(fpha(folder, "mp", 0.95, recipe=recipe, options=options)))

    assert revision("selected") == 4
    assert revision("selected", budget="soft") == 2
    assert revision("selected", budget="soft", masked_decay=False) == 3
    assert revision("as-written", budget="soft") == 2


def test_grid_cells_quote_a_grid_under_way(tmp_path: Path) -> None:
    for seed, accuracy in ((0, 0.80), (1, 0.84)):
        fpha(tmp_path, "baseline", seed=seed, class_avg_accuracy=accuracy)
    fpha(tmp_path, "mp", 0.99, percent_ac=97.5, class_avg_accuracy=0.7)
    numbers = cn.grid_cells(table1_right(load_results(tmp_path)), 3, "g_")
    assert numbers == {
        "g_runs": 3,
        "g_baseline": "82.00 ± 2.83%",  # sample std of 80 and 84: 2 sqrt(2)
        "g_mp95_acc": "—", "g_tcmp95_acc": "—", "g_mp95_ac": "—",
        "g_mp99_acc": "70.00% (one seed)", "g_tcmp99_acc": "—", "g_mp99_ac": "97.50%",
    }  # fmt: skip


def test_latest_recipe_numbers_quote_mp_at_95_and_99_by_revision(tmp_path: Path) -> None:
    latest, superseded = tmp_path / "latest", tmp_path / "latest-superseded"
    rev4: dict[str, Any] = {"recipe": "selected"}
    rev2: dict[str, Any] = {"recipe": "selected", "options": {"budget": "soft"}}
    for seed, ac, hard in ((0, 60.0, 0.9504), (1, 70.0, 0.9511)):
        last = [{"epoch": 2700, "loss": 1.0, "soft_rate": 0.93, "hard_rate": hard}]
        fpha(latest, "mp", 0.95, seed=seed, percent_ac=ac, history=last, **rev4)
    fpha(latest, "tcmp", 0.99, class_avg_accuracy=0.80, **rev4)
    soft = [{"epoch": 2700, "loss": 1.0, "soft_rate": 0.9976}]
    fpha(superseded, "mp", 0.95, seed=0, history=soft, **rev2)
    history = [{"epoch": 50, "loss": 3.8, "soft_rate": 0.993, "train_accuracy": 0.025}]
    fpha(superseded, "mp", 0.99, seed=0, class_avg_accuracy=0.0407, history=history, **rev2)
    fpha(tmp_path / "selected", "baseline")
    latest_table = table1_right(load_results(latest))
    selected = table1_right(load_results(tmp_path / "selected"))
    records = [record for _, record in read_folder(latest)]
    old = [record for _, record in read_folder(superseded)]
    numbers = cn.latest_recipe_numbers(latest_table, selected, records, old)
    assert numbers == {
        "latest_runs": 3,
        "latest_mp95_ac": "65.00%",  # the mean over the two seeds
        "latest_mp95_acc": "50.00 ± 0.00%",
        "latest_tcmp95_acc": "—",
        "latest_mp95_seeds": 2,
        "sel_mp95_ac": "—",  # no MP run at 95% under the selected recipe
        "paper_mp95_ac": "72.30%",
        "latest_mp99_ac": "—",
        "latest_mp99_acc": "—",
        "latest_tcmp99_acc": "80.00% (one seed)",
        "latest_mp99_seeds": 0,
        "sel_mp99_ac": "—",
        "paper_mp99_ac": "21.20%",
        "latest_mp_hard": "0.9504 (95%, seed 0), 0.9511 (95%, seed 1)",
        "rev2_mp95_soft": "0.998 (seed 0)",
        "rev2_mp99_sentence": "seed 0 ends at 4.07% (at epoch 50: soft rate 0.993, "
        "training accuracy 2.5%)",
    }
    numbers = cn.latest_recipe_numbers(latest_table, selected, [])
    assert numbers["latest_mp_hard"] == "no run yet"
    assert numbers["rev2_mp99_sentence"] == "no run"
    # Runs of an older revision left in the folder are not quoted as revision 4.
    assert cn.latest_recipe_numbers(latest_table, selected, old)["latest_mp_hard"] == "no run yet"
    assert cn.mp_soft_rate_numbers(old, "x_") == {
        "x_mp_soft": "0.998 against 0.95; 0.993 against 0.99"
    }
    assert cn.mp_soft_rate_numbers(records, "x_") == {"x_mp_soft": "no run of revision 2"}
    assert cn.mp_soft_rate_numbers(records, "x_", revision=4) == {
        "x_mp_soft": "0.930 against 0.95"
    }
