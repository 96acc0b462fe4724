"""PruneReport survives a trip through a result file's report and history."""

from __future__ import annotations

import json

import pytest

from tcmplib.pruning.base import PruneReport


def test_from_dict_round_trip_with_a_separate_history() -> None:
    report = PruneReport(
        method="tcmp",
        target_rate=0.99,
        achieved_rate=0.9875,
        kept_weights=25,
        total_weights=2000,
        percent_ac=100.0,
        class_avg_accuracy=0.5,
        accuracy=0.51,
        wall_time_s=1.5,
        device="cpu",
        history=[{"epoch": 1, "loss": 2.0}],
        options={"tau": 0.5},
        details={"projected": 0.0},
    )
    stored = json.loads(json.dumps(report.to_dict()))
    history = stored.pop("history")  # a sweep result keeps it beside the report
    assert PruneReport.from_dict(stored, history) == report
    assert PruneReport.from_dict(stored).history == []


def test_from_dict_names_missing_keys() -> None:
    with pytest.raises(ValueError, match=r"report: expected the keys \['kept_weights'"):
        PruneReport.from_dict({"method": "mp", "target_rate": 0.5, "achieved_rate": 0.5})
