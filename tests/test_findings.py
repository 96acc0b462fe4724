"""The paper's claims as tests on Table 1: hand-edited copies of the published table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from record_factory import make_record

from tcmplib.findings import (
    AC_BY_TENSOR_COLUMNS,
    FINDINGS,
    OFF_AC_COLUMNS,
    ONESHOT_MP_COLUMNS,
    VERDICTS,
    MaskCollapse,
    ac_by_tensor,
    check_findings,
    findings_by_recipe,
    kept_off_ac,
    mask_collapse,
    oneshot_mp_ac,
    training_spikes,
)
from tcmplib.tables import paper_table1_right


@pytest.fixture
def paper() -> pd.DataFrame:
    return paper_table1_right()


def verdicts(ours: pd.DataFrame, paper: pd.DataFrame) -> dict[str, str]:
    return check_findings(ours, paper)["verdict"].to_dict()


def test_every_claim_holds_on_the_paper_table(paper: pd.DataFrame) -> None:
    table = check_findings(paper, paper)
    assert list(table.index) == [f.key for f in FINDINGS]
    assert set(table["paper's verdict"]) == {"holds"}
    assert set(table["verdict"]) == {"holds"}
    assert table.loc["mp-disconnects", "paper"] == "95%: 72.30%, 99%: 21.20%"
    assert table.loc["tcmp-beats-mp", "paper"] == (
        "95%: 85.21% vs 83.82% (+1.39); 99%: 82.95% vs 76.00% (+6.95)"
    )


def test_findings_by_recipe_put_the_verdicts_side_by_side(paper: pd.DataFrame) -> None:
    consistent_mp = paper.copy()
    consistent_mp.loc[(0.99, "mp"), "% A-C"] = 100.0
    table = findings_by_recipe({"a": paper, "b": consistent_mp}, paper)
    assert list(table.columns) == ["claim", "paper", "a", "a: verdict", "b", "b: verdict"]
    assert table.loc["mp-disconnects", "a: verdict"] == "holds"
    assert table.loc["mp-disconnects", "b: verdict"] == "does not hold"
    assert table.loc["mp-disconnects", "b"] == "95%: 72.30%, 99%: 100.00%"
    with pytest.raises(ValueError, match="tables: expected at least one labelled table"):
        findings_by_recipe({}, paper)


def test_nothing_run_yet(paper: pd.DataFrame) -> None:
    assert set(verdicts(paper.iloc[:0], paper).values()) == {"not run yet"}


def test_consistent_mp_breaks_the_disconnection_claim(paper: pd.DataFrame) -> None:
    ours = paper.copy()
    ours.loc[(0.99, "mp"), "% A-C"] = 100.0
    assert verdicts(ours, paper)["mp-disconnects"] == "does not hold"
    ours = paper.copy()  # below 100 at both rates, but fewer dangling connections at 99%
    ours.loc[(0.99, "mp"), "% A-C"] = 80.0
    assert verdicts(ours, paper)["mp-disconnects"] == "does not hold"


def test_one_dangling_tcmp_connection_breaks_consistency(paper: pd.DataFrame) -> None:
    ours = paper.copy()
    ours.loc[(0.5, "tcmp"), "% A-C"] = 99.99
    assert verdicts(ours, paper)["tc-consistent"] == "does not hold"


def test_missing_runs_make_a_claim_incomplete(paper: pd.DataFrame) -> None:
    ours = paper.drop(index=[(0.99, "tcmp")])
    found = verdicts(ours, paper)
    assert found["tcmp-beats-mp"] == "incomplete"
    assert found["tcmp-beats-greedy"] == "not run yet"
    assert found["tc-consistent"] == "incomplete"
    assert found["baseline"] == "holds"


def test_a_violation_among_partial_runs_already_fails(paper: pd.DataFrame) -> None:
    ours = paper.drop(index=[(0.99, "tcmp")])
    ours.loc[(0.95, "tcmp"), "accuracy (%)"] = 80.0  # behind MP's 83.82
    assert verdicts(ours, paper)["tcmp-beats-mp"] == "does not hold"


def test_seed_spread_and_single_seeds(paper: pd.DataFrame) -> None:
    ours = paper.copy()
    ours["seeds"] = pd.array([3] * len(ours), dtype="Int64")
    ours.loc[(0.99, "tcmp"), "± std"] = 3.0  # TCMP ahead of greedy TC by 2.26 points only
    ours.loc[(0.95, "tcmp"), "± std"] = 2.0  # and of MP by 1.39 at 95% (by 6.95 at 99%)
    found = verdicts(ours, paper)
    assert found["tcmp-beats-greedy"] == "holds within seed spread"
    assert found["tcmp-beats-mp"] == "holds within seed spread"  # the worse of 95% and 99%
    ours["seeds"] = pd.array([1] * len(ours), dtype="Int64")
    ours["± std"] = math.nan
    found = verdicts(ours, paper)
    assert found["tcmp-beats-greedy"] == "holds (one seed)"
    assert found["mp-disconnects"] == "holds"  # a measured share, not a noisy difference


def test_baseline_and_low_rates_tolerances(paper: pd.DataFrame) -> None:
    ours = paper.copy()
    ours.loc[(0.0, "baseline"), "accuracy (%)"] = 70.0
    found = check_findings(ours, paper)
    assert found.loc["baseline", "verdict"] == "does not hold"
    assert found.loc["baseline", "ours"] == "70.00% (-16.08 points)"
    assert found.loc["low-rates", "verdict"] == "holds"  # every pruned run beats 70%
    ours = paper.copy()
    ours.loc[(0.75, "greedy-tc"), "accuracy (%)"] = 83.0  # 3.08 below the baseline
    found = check_findings(ours, paper)
    assert found.loc["low-rates", "verdict"] == "does not hold"
    assert found.loc["low-rates", "ours"] == "lowest: greedy TC at 75%, 83.00% vs 86.08% (-3.08)"


def test_verdicts_are_from_the_documented_list(paper: pd.DataFrame) -> None:
    ours = paper.drop(index=[(0.5, "mp"), (0.99, "greedy-tc")])
    for verdict in check_findings(ours, paper)["verdict"]:
        assert verdict.removesuffix(" (one seed)") in VERDICTS


def test_a_table_of_the_wrong_layout_is_refused(paper: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="ours: expected a table indexed by"):
        check_findings(paper.reset_index(), paper)
    with pytest.raises(ValueError, match="paper: expected a column '% A-C'"):
        check_findings(paper, paper.drop(columns=["% A-C"]))


def _row(epoch: int, rate: float, accuracy: float) -> dict[str, float]:
    return {
        "epoch": epoch,
        "hard_rate": rate,
        "test_class_avg_accuracy": accuracy,
        "temperature": 1e-4 / epoch,
        "lr": 0.01,
    }


def test_mask_collapse_finds_the_first_epoch_off_budget() -> None:
    history = [
        _row(50, 0.90, 0.5),  # not yet on budget: not a collapse
        _row(100, 0.987, 0.6),  # within 0.5 points of 99%
        _row(150, 0.989, 0.65),
        {"epoch": 175, "hard_rate": 0.5},  # not evaluated: ignored
        _row(200, 0.02, 0.2),
        _row(250, 0.99, 0.3),
    ]
    found = mask_collapse(history, 0.99)
    assert found == MaskCollapse(
        epoch=200,
        last_epoch_on_budget=150,
        rate_before=0.989,
        rate_after=0.02,
        accuracy_before=0.65,
        accuracy_after=0.2,
        temperature=1e-4 / 150,
        lr=0.01,
    )


def test_no_collapse_when_the_budget_holds_or_is_never_met() -> None:
    assert mask_collapse([_row(50, 0.8, 0.5), _row(100, 0.985, 0.6)], 0.99) is None
    assert mask_collapse([_row(50, 0.99, 0.5), _row(100, 0.991, 0.6)], 0.99) is None
    assert mask_collapse([], 0.99) is None
    assert mask_collapse([_row(50, 0.99, 0.5), _row(100, 0.90, 0.6)], 0.99, tolerance=0.1) is None
    # Pruning more than the target is not a collapse (relaxed MP at 50%: 50.35%, then 51.06%).
    assert mask_collapse([_row(50, 0.5035, 0.6), _row(100, 0.5106, 0.7)], 0.5) is None
    over_then_under = [_row(50, 0.5035, 0.6), _row(100, 0.5106, 0.7), _row(150, 0.49, 0.4)]
    assert mask_collapse(over_then_under, 0.5) == MaskCollapse(
        epoch=150,
        last_epoch_on_budget=50,
        rate_before=0.5035,
        rate_after=0.49,
        accuracy_before=0.6,
        accuracy_after=0.4,
        temperature=1e-4 / 50,
        lr=0.01,
    )


# --------------------------------------------------------------------------- result readers


def _write_result(folder: Path, method: str, rate: float, **extra: Any) -> None:
    record = make_record(
        method,
        rate,
        dataset="fpha",
        profile="paper",
        kept_weights=10,
        total_weights=100,
        percent_ac=80.0,
        device="cpu",
        **extra,
    )
    (folder / f"{method}_{rate}.json").write_text(json.dumps(record), encoding="utf-8")


def test_ac_by_tensor_reads_the_breakdown_of_the_chosen_methods(tmp_path: Path) -> None:
    tensors = [
        {"tensor": "wv", "weights": 40, "kept": 6, "effective": 6},
        {"tensor": "fc", "weights": 60, "kept": 4, "effective": 2},
        {"tensor": "wq", "weights": 8, "kept": 0, "effective": 0},
    ]
    _write_result(tmp_path, "mp", 0.9, tensors=tensors)
    _write_result(tmp_path, "tcmp", 0.9, tensors=tensors)
    _write_result(tmp_path, "mp", 0.5)  # made before the breakdown existed: no rows
    frame = ac_by_tensor(tmp_path)
    assert tuple(frame.columns) == AC_BY_TENSOR_COLUMNS
    assert frame["tensor"].tolist() == ["wv", "fc", "wq"]
    assert frame["method"].unique().tolist() == ["MP"]
    assert frame["% A-C"].tolist()[:2] == [100.0, 50.0]
    assert math.isnan(frame["% A-C"].iloc[2]), "nothing kept: no share"
    assert len(ac_by_tensor(tmp_path, methods=("mp", "tcmp"))) == 6


def test_oneshot_mp_ac_sits_next_to_the_papers_mp(tmp_path: Path) -> None:
    _write_result(tmp_path, "greedy-tc", 0.99, details={"mp_percent_ac": 97.5, "dense_epochs": 5})
    _write_result(tmp_path, "greedy-tc", 0.5, details={})  # no measurement: no row
    _write_result(tmp_path, "mp", 0.99, details={"mp_percent_ac": 1.0})  # not greedy TC
    frame = oneshot_mp_ac(tmp_path)
    assert tuple(frame.columns) == ONESHOT_MP_COLUMNS
    assert frame.to_dict("records") == [
        {
            "rate (%)": 99.0,
            "seed": 0,
            "dense epochs": 5,
            "one-shot MP % A-C (ours)": 97.5,
            "MP % A-C (paper)": 21.2,
        }
    ]


def test_training_spikes_count_drops_after_the_split_was_fitted(tmp_path: Path) -> None:
    def row(epoch: int, train: float, test: float, lr: float = 0.01) -> dict[str, float]:
        return {
            "epoch": epoch,
            "train_accuracy": train,
            "test_class_avg_accuracy": test,
            "lr": lr,
            "loss": epoch * 1e-3,
        }

    # Not fitted yet at epoch 50 (0.9 is no spike), fitted at 100, two spikes after it.
    spiky = [
        row(50, 0.9, 0.2),
        row(100, 1.0, 0.6),
        row(150, 0.6, 0.3, 0.009),
        row(200, 1.0, 0.7),
        row(250, 0.95, 0.5),
    ]
    _write_result(tmp_path, "pmp", 0.5, history=spiky)
    _write_result(tmp_path, "mp", 0.5, history=[row(50, 1.0, 0.6), row(100, 0.995, 0.61)])
    frame = training_spikes(tmp_path).set_index("method")
    pmp, mp = frame.loc["PMP"], frame.loc["MP"]
    assert pmp["spikes"] == 2 and pmp["first spike epoch"] == 150
    assert pmp["train CE before"] == pytest.approx(0.1)  # the loss at epoch 100
    assert pmp["lowest train acc. (%)"] == pytest.approx(60.0) and pmp["lr at the lowest"] == 0.009
    assert pmp["best test acc. (%)"] == pytest.approx(70.0) and pmp["best epoch"] == 200
    assert pmp["final train acc. (%)"] == pytest.approx(95.0)
    assert pmp["final train CE"] == pytest.approx(0.25)
    assert pmp["final test acc. (%)"] == pytest.approx(50.0)  # the report's, not the history's
    assert mp["spikes"] == 0 and pd.isna(mp["first spike epoch"])
    assert pd.isna(mp["train CE before"])
    assert training_spikes(tmp_path, floor=0.999).set_index("method").loc["MP", "spikes"] == 1

    # Greedy TC: the drop at its selection (phase 1 starts unfitted) is no spike; a later
    # drop within the retraining is.
    phased = [
        {**row(50, 1.0, 0.7), "phase": 0.0},
        {**row(100, 0.3, 0.2), "phase": 1.0},
        {**row(150, 1.0, 0.6), "phase": 1.0, "ce": 3e-8},  # CE apart from an extra loss
        {**row(200, 0.8, 0.5), "phase": 1.0},
    ]
    _write_result(tmp_path, "greedy-tc", 0.9, history=phased)
    greedy = training_spikes(tmp_path).set_index("method").loc["TCMP (greedy)"]
    assert greedy["spikes"] == 1 and greedy["first spike epoch"] == 200
    assert greedy["train CE before"] == 3e-8
    assert greedy["final train CE"] == pytest.approx(0.2)
    assert greedy["best test acc. (%)"] == pytest.approx(60.0), "the retrained network's best"


def test_kept_off_ac_finds_the_reservoir_and_the_reconnection(tmp_path: Path) -> None:
    # 100 weights, 90% pruned: a budget of 10. Kept (hard) and kept A-C (learned) by hand:
    # (14, 10) -> (13, 10) -> (17, 17) -> (17, 17): 4, 3, 0, 0 off A-C; the A-C count rose
    # by 7 in the evaluation of epoch 150.
    def row(epoch: int, kept: int, kept_ac: int) -> dict[str, float]:
        return {"epoch": epoch, "hard_rate": 1 - kept / 100, "learned_rate": 1 - kept_ac / 100}

    history = [row(50, 14, 10), row(100, 13, 10), row(150, 17, 17), row(200, 17, 17)]
    details = {"learned_rate": 0.83, "projected": 1.0, "projection_changed_edges": 7.0}
    _write_result(tmp_path, "tcmp", 0.9, history=history, details=details)
    _write_result(tmp_path, "mp", 0.9, history=[{"epoch": 50, "hard_rate": 0.9}])  # not TCMP
    frame = kept_off_ac(tmp_path)
    assert list(frame.columns) == list(OFF_AC_COLUMNS) and len(frame) == 1
    tcmp = frame.iloc[0]
    assert tcmp["budget"] == 10
    assert tcmp["most kept off A-C"] == 4 and tcmp["kept off A-C at the end"] == 0
    assert tcmp["largest rise of kept A-C"] == 7 and tcmp["rise by epoch"] == 150
    assert tcmp["learned rate (%)"] == pytest.approx(83.0)
    assert bool(tcmp["projected"]) and tcmp["edges moved by projection"] == 7
    assert tcmp["final test acc. (%)"] == pytest.approx(50.0)
