"""Reading the paper-scale baselines of the recipe chapter under other reporting conventions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tcmplib.recipe_plots import reporting_conventions


def _baseline(folder: Path, seed: int, curve: list[float]) -> None:
    history = [{"epoch": 50 * (i + 1), "test_class_avg_accuracy": a} for i, a in enumerate(curve)]
    history.insert(1, {"epoch": 60})  # an epoch without test metrics is skipped
    record = {"config": {"seed": seed}, "report": {}, "history": history}
    (folder / f"baseline_rate0.0000_seed{seed}_abc.json").write_text(json.dumps(record))


def test_last_mean_of_last_and_best_evaluation(tmp_path: Path) -> None:
    _baseline(tmp_path, 0, [0.5, 0.9, 0.6, 0.7])
    _baseline(tmp_path, 1, [0.4, 0.8, 0.8, 0.5])
    table = reporting_conventions({"r": tmp_path}, last=2)
    row = table.loc["r"]
    assert row["last epoch"] == pytest.approx(60.0)  # (70 + 50) / 2
    assert row["mean of the last 2 evaluations"] == pytest.approx(65.0)  # (65 + 65) / 2
    assert row["best evaluation"] == pytest.approx(85.0)  # (90 + 80) / 2
