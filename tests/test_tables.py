"""Result files to Table 1 (right): loading, seed averages, the paper join, output, plots."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from record_factory import make_record  # noqa: E402

from tcmplib import tables  # noqa: E402
from tcmplib.run import RunConfig  # noqa: E402
from tcmplib.table_plots import (  # noqa: E402
    plot_ac_vs_rate,
    plot_accuracy_vs_rate,
    plot_metric_vs_rate,
)
from tcmplib.tables import (  # noqa: E402
    COMPARISON_COLUMNS,
    RESULT_COLUMNS,
    TABLE_COLUMNS,
    compare_with_paper,
    load_results,
    paper_table1_right,
    table1_right,
    to_markdown,
    write_table,
)


def _result(
    method: str,
    rate: float,
    seed: int,
    accuracy: float,
    *,
    achieved: float | None = None,
    kept: int = 1000,
    ac: float = 100.0,
) -> dict[str, Any]:
    return make_record(
        method,
        rate,
        seed,
        achieved_rate=rate if achieved is None else achieved,
        kept_weights=kept,
        percent_ac=ac,
        class_avg_accuracy=accuracy,
        accuracy=accuracy + 0.01,
    )


def _write(folder: Path, name: str, document: dict[str, Any]) -> Path:
    path = folder / name
    path.write_text(json.dumps(document), encoding="utf-8")
    return path


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    """A small sweep: two seeds for TCMP 95% and MP 95%, one for the rest."""
    folder = tmp_path / "results"
    folder.mkdir()
    # Written in a scrambled order on purpose: the table must not depend on it.
    _write(folder, "z-pmp.json", _result("pmp", 0.95, 0, 0.70, kept=1000, ac=90.0))
    _write(folder, "a-tcmp-1.json", _result("tcmp", 0.95, 1, 0.84, achieved=0.9540, kept=920))
    _write(folder, "b-tcmp-0.json", _result("tcmp", 0.95, 0, 0.80, achieved=0.9550, kept=900))
    _write(folder, "c-mp-0.json", _result("mp", 0.95, 0, 0.75, kept=1000, ac=70.0))
    _write(folder, "d-mp-1.json", _result("mp", 0.95, 1, 0.78, kept=1000, ac=75.0))
    _write(folder, "e-greedy.json", _result("greedy-tc", 0.5, 0, 0.85, kept=10000))
    _write(folder, "f-base.json", _result("baseline", 0.0, 0, 0.86, achieved=0.0, kept=20000))
    # Not result files: ignored.
    (folder / "notes.txt").write_text("not a result", encoding="utf-8")
    (folder / "sub").mkdir()
    _write(folder / "sub", "x.json", {"format": 99})
    return folder


# --------------------------------------------------------------------------- load_results


def test_load_results_one_row_per_file_in_order(results_dir: Path) -> None:
    frame = load_results(results_dir)
    assert list(frame.columns) == list(RESULT_COLUMNS)
    assert len(frame) == 7
    order = list(zip(frame["method"], frame["target_rate"], frame["seed"], strict=True))
    assert order == [
        ("baseline", 0.0, 0),
        ("mp", 0.95, 0),
        ("mp", 0.95, 1),
        ("greedy-tc", 0.5, 0),
        ("tcmp", 0.95, 0),
        ("tcmp", 0.95, 1),
        ("pmp", 0.95, 0),
    ]
    tcmp0 = frame.iloc[4]
    assert tcmp0["file"] == "b-tcmp-0.json"
    assert tcmp0["class_avg_accuracy"] == pytest.approx(80.0)
    assert tcmp0["accuracy"] == pytest.approx(81.0)
    assert tcmp0["achieved_rate"] == pytest.approx(0.955)
    assert tcmp0["kept_weights"] == 900
    assert tcmp0["dataset"] == "synthetic" and tcmp0["profile"] == "book"
    assert tcmp0["config_hash"] == RunConfig(method="tcmp", rate=0.95, seed=0).hash
    assert tcmp0["git_commit"] == "abc123"


def test_load_results_empty_folder(tmp_path: Path) -> None:
    frame = load_results(tmp_path)
    assert frame.empty
    assert list(frame.columns) == list(RESULT_COLUMNS)
    table = table1_right(frame)
    assert table.empty and list(table.columns) == list(TABLE_COLUMNS)


def test_load_results_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ValueError, match="results_dir: expected an existing folder") as info:
        load_results(missing)
    assert str(missing) in str(info.value)


def test_load_results_bad_json_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="broken.json: expected a JSON run record") as info:
        load_results(tmp_path)
    assert "\n" not in str(info.value)


def test_load_results_wrong_format_names_the_file(tmp_path: Path) -> None:
    document = _result("mp", 0.5, 0, 0.8)
    document["format"] = 3
    _write(tmp_path, "future.json", document)
    with pytest.raises(ValueError, match=r"future\.json: expected a run record \(format 2"):
        load_results(tmp_path)


def test_load_results_refuses_a_format_1_file_with_the_way_out(tmp_path: Path) -> None:
    document = {"format": 1, "config": {}, "config_hash": "0" * 12, "report": {}}
    _write(tmp_path, "old.json", document)
    with pytest.raises(ValueError, match=r"old\.json: a format-1 result file; .*migrate_results"):
        load_results(tmp_path)


def test_load_results_missing_key_names_file_and_key(tmp_path: Path) -> None:
    document = _result("mp", 0.5, 0, 0.8)
    del document["report"]["class_avg_accuracy"]
    _write(tmp_path, "old.json", document)
    with pytest.raises(ValueError, match=r"old\.json: missing field 'report\.class_avg_accuracy'"):
        load_results(tmp_path)


def test_load_results_missing_section(tmp_path: Path) -> None:
    document = _result("mp", 0.5, 0, 0.8)
    del document["provenance"]
    _write(tmp_path, "bare.json", document)
    with pytest.raises(ValueError, match=r"bare\.json: missing field 'provenance'"):
        load_results(tmp_path)


def test_load_results_rejects_a_string_number(tmp_path: Path) -> None:
    document = _result("mp", 0.5, 0, 0.8)
    document["report"]["accuracy"] = "0.8"
    _write(tmp_path, "typed.json", document)
    with pytest.raises(ValueError, match=r"typed\.json: field 'report\.accuracy': unexpected"):
        load_results(tmp_path)


# --------------------------------------------------------------------------- table1_right


def test_table1_right_means_stds_and_order(results_dir: Path) -> None:
    table = table1_right(load_results(results_dir))
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert list(table.index.names) == ["target_rate", "method_key"]
    assert list(table.index) == [
        (0.0, "baseline"),
        (0.5, "greedy-tc"),
        (0.95, "mp"),
        (0.95, "tcmp"),
        (0.95, "pmp"),
    ]
    assert list(table["method"]) == ["Baseline GCN", "TCMP (greedy)", "MP", "TCMP (our)", "PMP"]
    assert list(table["TC"]) == ["NA", "✓", "✗", "✓", "✗"]

    tcmp = table.loc[(0.95, "tcmp")]
    assert tcmp["accuracy (%)"] == 82.00  # (80 + 84) / 2
    assert tcmp["± std"] == 2.83  # sqrt(((80-82)^2 + (84-82)^2) / 1) = 2.828...
    assert tcmp["seeds"] == 2
    assert tcmp["pruning rate (%)"] == 95.45  # (95.40 + 95.50) / 2
    assert tcmp["# parameters"] == 910
    assert tcmp["% A-C"] == 100.0

    mp = table.loc[(0.95, "mp")]
    assert mp["accuracy (%)"] == 76.50  # (75 + 78) / 2
    assert mp["± std"] == 2.12  # 3 / sqrt(2)
    assert mp["% A-C"] == 72.50

    pmp = table.loc[(0.95, "pmp")]
    assert pmp["seeds"] == 1 and math.isnan(pmp["± std"])
    assert table.loc[(0.0, "baseline"), "# parameters"] == 20000


def test_table1_right_rejects_mixed_experiments(results_dir: Path) -> None:
    frame = load_results(results_dir)
    frame.loc[0, "profile"] = "paper"
    with pytest.raises(ValueError, match="expected one \\(dataset, profile\\)"):
        table1_right(frame)


def test_table1_right_rejects_duplicate_runs(results_dir: Path) -> None:
    _write(results_dir, "again.json", _result("tcmp", 0.95, 0, 0.81))
    with pytest.raises(ValueError, match="again.json"):
        table1_right(load_results(results_dir))


# --------------------------------------------------------------------------- the paper


def test_paper_csv_matches_the_published_table() -> None:
    paper = paper_table1_right()
    assert list(paper.columns) == list(TABLE_COLUMNS)
    assert len(paper) == 13
    ours = paper.loc[(0.99, "tcmp")]
    assert ours["# parameters"] == 19285
    assert ours["accuracy (%)"] == 82.95
    assert ours["pruning rate (%)"] == 99.01
    assert ours["TC"] == "✓" and ours["method"] == "TCMP (our)"
    baseline = paper.loc[(0.0, "baseline")]
    assert baseline["# parameters"] == 1967616 and baseline["accuracy (%)"] == 86.08
    assert baseline["TC"] == "NA"
    published = {
        (0.5, "mp"): (50.00, "✗", 983808, 100.0, 86.08),
        (0.5, "greedy-tc"): (50.00, "✓", 983808, 100.0, 86.08),
        (0.5, "tcmp"): (49.99, "✓", 983836, 100.0, 84.34),
        (0.75, "mp"): (75.00, "✗", 491904, 99.40, 85.73),
        (0.75, "greedy-tc"): (75.00, "✓", 491904, 100.0, 85.91),
        (0.75, "tcmp"): (75.19, "✓", 487990, 100.0, 85.21),
        (0.95, "mp"): (95.00, "✗", 98379, 72.30, 83.82),
        (0.95, "greedy-tc"): (95.00, "✓", 98379, 100.0, 84.86),
        (0.95, "tcmp"): (95.45, "✓", 89453, 100.0, 85.21),
        (0.99, "mp"): (99.00, "✗", 19674, 21.20, 76.00),
        (0.99, "greedy-tc"): (99.00, "✓", 19674, 100.0, 80.69),
        (0.99, "tcmp"): (99.01, "✓", 19285, 100.0, 82.95),
    }
    for key, expected in published.items():
        row = paper.loc[key]
        got = (row["pruning rate (%)"], row["TC"], row["# parameters"], row["% A-C"])
        assert (*got, row["accuracy (%)"]) == expected, key
    assert paper["seeds"].isna().all() and paper["± std"].isna().all()


def test_paper_tc_agrees_with_tc_by_design() -> None:
    paper = paper_table1_right()
    for (_, key), mark in paper["TC"].items():
        assert mark == tables.tc_mark(key)


def test_compare_with_paper_keeps_both_kinds_of_gap(results_dir: Path) -> None:
    comparison = compare_with_paper(table1_right(load_results(results_dir)))
    assert list(comparison.columns) == list(COMPARISON_COLUMNS)
    # 13 paper rows + PMP, which the paper lacks.
    assert len(comparison) == 14
    assert list(comparison.index[:2]) == [(0.0, "baseline"), (0.5, "mp")]
    assert list(comparison.loc[0.95].index) == ["mp", "greedy-tc", "tcmp", "pmp"]

    tcmp = comparison.loc[(0.95, "tcmp")]
    assert tcmp["ours: accuracy (%)"] == 82.00
    assert tcmp["paper: accuracy (%)"] == 85.21
    assert tcmp["Δ accuracy (ours − paper)"] == -3.21
    assert tcmp["ours: seeds"] == 2 and tcmp["paper: # parameters"] == 89453

    pmp = comparison.loc[(0.95, "pmp")]
    assert pmp["ours: accuracy (%)"] == 70.0
    assert pmp["method"] == "PMP" and pmp["TC"] == "✗"
    for column in COMPARISON_COLUMNS:
        if column.startswith("paper: ") or column.startswith("Δ"):
            assert pd.isna(pmp[column]), column

    missing = comparison.loc[(0.99, "tcmp")]  # not run yet
    assert missing["paper: accuracy (%)"] == 82.95 and missing["method"] == "TCMP (our)"
    for column in COMPARISON_COLUMNS:
        if column.startswith("ours: ") or column.startswith("Δ"):
            assert pd.isna(missing[column]), column


def test_compare_with_paper_checks_its_input(results_dir: Path) -> None:
    with pytest.raises(ValueError, match="ours: expected an index"):
        compare_with_paper(load_results(results_dir))


# --------------------------------------------------------------------------- output


def _tiny() -> pd.DataFrame:
    return pd.DataFrame(
        {"method": ["MP", "TCMP | our"], "accuracy (%)": [82.0, float("nan")], "seeds": [2, 1]}
    )


def test_to_markdown_exact() -> None:
    assert to_markdown(_tiny()) == (
        "| method      | accuracy (%) | seeds |\n"
        "| ----------- | -----------: | ----: |\n"
        "| MP          |         82.0 |     2 |\n"
        "| TCMP \\| our |            — |     1 |"
    )


def test_to_markdown_index_and_floatfmt() -> None:
    frame = _tiny().set_index("method")
    assert to_markdown(frame, floatfmt=".2f") == (
        "| method      | accuracy (%) | seeds |\n"
        "| ----------- | -----------: | ----: |\n"
        "| MP          |        82.00 |     2 |\n"
        "| TCMP \\| our |            — |     1 |"
    )


def test_to_markdown_of_a_table_shows_missing_cells(results_dir: Path) -> None:
    text = to_markdown(table1_right(load_results(results_dir)))
    lines = text.splitlines()
    assert len(lines) == 2 + 5
    assert lines[0].split("|")[1].strip() == "target_rate"
    pmp = next(line for line in lines if "PMP" in line)
    assert "—" in pmp  # single seed: no std


def test_write_table_md_and_csv(tmp_path: Path) -> None:
    frame = _tiny()
    md = write_table(frame, tmp_path / "out" / "table.md")
    assert md.read_text(encoding="utf-8") == to_markdown(frame) + "\n"
    csv = write_table(frame, tmp_path / "table.CSV")
    assert pd.read_csv(csv).equals(frame)
    # Atomic: nothing but the finished files is left behind.
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["table.CSV", "table.md"]


def test_write_table_replaces_an_old_file(tmp_path: Path) -> None:
    path = tmp_path / "table.md"
    path.write_text("old", encoding="utf-8")
    write_table(_tiny(), path)
    assert path.read_text(encoding="utf-8").startswith("| method")


def test_write_table_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "table.html"
    with pytest.raises(ValueError, match=r"table\.html: expected a \.md or \.csv"):
        write_table(_tiny(), path)
    assert not path.exists()


# --------------------------------------------------------------------------- training times


def _timed(method: str, rate: float, seed: int, seconds: float, device: str) -> dict[str, Any]:
    document = _result(method, rate, seed, 0.5)
    document["report"].update(wall_time_s=seconds, device=device)
    return document


def test_training_times_by_device_and_method(tmp_path: Path) -> None:
    one, two = "cpu (1 threads)", "cpu (2 threads)"
    for name, args in {
        "a.json": ("tcmp", 0.95, 0, 100.4, one),
        "b.json": ("tcmp", 0.95, 1, 300.0, one),
        "c.json": ("tcmp", 0.99, 0, 250.0, one),
        "d.json": ("mp", 0.95, 0, 3600.0, one),
        "e.json": ("mp", 0.95, 1, 7200.0, two),
        "f.json": ("baseline", 0.0, 0, 10.0, two),
    }.items():
        _write(tmp_path, name, _timed(*args))
    times = tables.training_times(load_results(tmp_path))
    assert list(times.columns) == list(tables.TIME_COLUMNS)
    # By device, then in the paper's method order (the baseline before MP before TCMP).
    assert list(times.index) == [(one, "mp"), (one, "tcmp"), (two, "baseline"), (two, "mp")]
    tcmp = times.loc[(one, "tcmp")]
    assert tcmp.tolist() == [3, 250, 100, 300, round(650.4 / 3600, 2)]
    assert times.loc[(two, "mp"), "total (h)"] == 2.0
    assert times.loc[(one, "mp"), "median (s)"] == 3600


def test_training_times_checks_its_input() -> None:
    with pytest.raises(ValueError, match=r"missing \['device'\]"):
        tables.training_times(pd.DataFrame({"method": ["mp"], "wall_time_s": [1.0]}))


def test_cli_table_times(results_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tcmplib import cli

    assert cli.main(["table", str(results_dir), "--times"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split("|")[1:3] == [" device          ", " method_key "]
    assert len(out) == 2 + 5  # one device, five methods
    assert cli.main(["table", str(results_dir), "--times", "--paper"]) == 2
    assert "at most one" in capsys.readouterr().err


# --------------------------------------------------------------------------- plots


def _gids(figure: plt.Figure, prefix: str) -> list[str]:
    gids = [line.get_gid() for line in figure.axes[0].lines]
    return [gid for gid in gids if gid is not None and gid.startswith(prefix)]


def test_accuracy_plot_lines(results_dir: Path) -> None:
    figure = plot_accuracy_vs_rate(load_results(results_dir))
    try:
        assert isinstance(figure, plt.Figure)
        assert _gids(figure, "method:") == [
            "method:mp",
            "method:greedy-tc",
            "method:tcmp",
            "method:pmp",
        ]
        assert _gids(figure, "baseline") == ["baseline"]
        assert _gids(figure, "paper:") == []
        tcmp = next(line for line in figure.axes[0].lines if line.get_gid() == "method:tcmp")
        assert list(tcmp.get_ydata()) == pytest.approx([82.0])
        # Error bars for the two configurations with two seeds only.
        assert len(figure.axes[0].containers) == 2
    finally:
        plt.close(figure)


def test_accuracy_plot_with_paper_overlay(results_dir: Path) -> None:
    figure = plot_accuracy_vs_rate(load_results(results_dir), paper=paper_table1_right())
    try:
        assert _gids(figure, "paper:") == [
            "paper:mp",
            "paper:greedy-tc",
            "paper:tcmp",
            "paper:baseline",
        ]
        paper_tcmp = next(line for line in figure.axes[0].lines if line.get_gid() == "paper:tcmp")
        assert list(paper_tcmp.get_ydata()) == pytest.approx([84.34, 85.21, 85.21, 82.95])
        assert paper_tcmp.get_markerfacecolor() == "none"
    finally:
        plt.close(figure)


def test_ac_plot_has_no_baseline_line(results_dir: Path) -> None:
    figure = plot_ac_vs_rate(load_results(results_dir))
    try:
        assert len(_gids(figure, "method:")) == 4
        assert _gids(figure, "baseline") == []
        mp = next(line for line in figure.axes[0].lines if line.get_gid() == "method:mp")
        assert list(mp.get_ydata()) == pytest.approx([72.5])
    finally:
        plt.close(figure)


def test_plot_rejects_unknown_metric_and_empty_results(results_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="metric: expected one of"):
        plot_metric_vs_rate(load_results(results_dir), "loss")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="results: expected at least one run"):
        plot_accuracy_vs_rate(load_results(empty))
