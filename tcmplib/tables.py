"""Result files to the paper's Table 1 (right), side by side with the published numbers.

A sweep writes one run record per run (:mod:`tcmplib.records`). :func:`load_results` reads a
folder of them into one row per run, with accuracies converted to %; :func:`table1_right`
averages the seeds of each (target rate, method) into the paper's columns;
:func:`compare_with_paper` puts our rows next to the published ones, so that the reader sees
at once what reproduces, what does not, and what has not been run yet.

The published numbers
---------------------
``tcmplib/paper/table1_right.csv`` is the paper's published Table 1 (right) on FPHA, typed
from the paper. Its ``method`` column holds our method keys (``baseline``, ``mp``,
``greedy-tc``, ``tcmp``), ``target_rate`` the nominal grid rate as a fraction (0, 0.5, 0.75,
0.95, 0.99), and ``tc`` the paper's TC column as booleans, with an empty cell where the paper
writes "NA" (the dense baseline). The other columns are the published numbers as printed:
the achieved pruning rate in %, the number of kept parameters, % A-C and the accuracy in %.
The sibling PMP paper's table could not be obtained, so the file holds no published PMP
numbers: PMP rows of a comparison show our numbers with the paper's columns empty.

Table layout
------------
Tables returned here (:func:`table1_right`, :func:`paper_table1_right`,
:func:`compare_with_paper`) are indexed by ``(target_rate, method_key)``: the nominal rate
as a fraction and the method key, which is what the comparison joins on. The ``method``
column holds the method's label (:attr:`tcmplib.pruning.PruningMethod.label`). Rows run as in
the paper: the baseline first, then by rate, and within a rate in the registration order of
:data:`tcmplib.pruning.METHODS`. Numbers are rounded
the way they are printed (2 decimals, parameters as integers), so a table renders as is.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Hashable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tcmplib.pruning import METHODS, method_label
from tcmplib.records import RunRecord, read_folder
from tcmplib.train import atomic_write

__all__ = [
    "RESULT_COLUMNS",
    "TABLE_COLUMNS",
    "COMPARISON_COLUMNS",
    "TIME_COLUMNS",
    "INDEX_NAMES",
    "method_label",
    "method_rank",
    "tc_mark",
    "load_results",
    "aggregate_seeds",
    "table1_right",
    "training_times",
    "paper_table1_right",
    "paper_table1_left",
    "compare_with_paper",
    "to_markdown",
    "write_table",
]

#: Columns of :func:`load_results` and their dtypes (accuracies in %, rates as fractions).
RESULT_COLUMNS: dict[str, str] = {
    "dataset": "object",
    "profile": "object",
    "recipe": "object",
    "method": "object",
    "target_rate": "float64",
    "seed": "int64",
    "achieved_rate": "float64",
    "kept_weights": "int64",
    "total_weights": "int64",
    "percent_ac": "float64",
    "class_avg_accuracy": "float64",
    "accuracy": "float64",
    "wall_time_s": "float64",
    "device": "object",
    "config_hash": "object",
    "git_commit": "object",
    "file": "object",
}

#: Columns of :func:`table1_right` and :func:`paper_table1_right`, in the paper's order.
TABLE_COLUMNS: tuple[str, ...] = (
    "pruning rate (%)",
    "TC",
    "# parameters",
    "% A-C",
    "accuracy (%)",
    "± std",
    "seeds",
    "method",
)

#: Columns of :func:`compare_with_paper`.
COMPARISON_COLUMNS: tuple[str, ...] = (
    "method",
    "TC",
    "ours: pruning rate (%)",
    "ours: # parameters",
    "ours: % A-C",
    "ours: accuracy (%)",
    "ours: ± std",
    "ours: seeds",
    "paper: pruning rate (%)",
    "paper: # parameters",
    "paper: % A-C",
    "paper: accuracy (%)",
    "Δ accuracy (ours − paper)",
)

#: Index levels of every table here: the nominal rate (fraction) and the method key.
INDEX_NAMES: tuple[str, str] = ("target_rate", "method_key")

_PAPER_CSV_COLUMNS = (
    "target_rate",
    "method",
    "tc",
    "pruning_rate_percent",
    "parameters",
    "percent_ac",
    "accuracy_percent",
)


# --------------------------------------------------------------------------- labels, order


def tc_mark(key: str) -> str:
    """The paper's TC cell: ✓ when the method enforces consistency, ✗ when not, NA/? else."""
    if key not in METHODS:
        return "?"
    tc = METHODS[key].tc_by_design
    return "NA" if tc is None else ("✓" if tc else "✗")


def method_rank(key: str) -> tuple[int, str]:
    """Registered methods in registration order (the paper's), then others alphabetically."""
    order = list(METHODS)
    return (order.index(key), "") if key in order else (len(order), key)


def _row_order(rate: float, key: str) -> tuple[int, float, tuple[int, str]]:
    """The paper's row order: the baseline first, then by rate, then by method."""
    return (0 if key == "baseline" else 1, rate, method_rank(key))


def _in_paper_order(frame: pd.DataFrame) -> pd.DataFrame:
    keys = [_row_order(float(rate), str(key)) for rate, key in frame.index]
    positions = sorted(range(len(keys)), key=keys.__getitem__)
    return frame.iloc[positions]


def _empty_index() -> pd.MultiIndex:
    return pd.MultiIndex.from_arrays(
        [pd.Index([], dtype="float64"), pd.Index([], dtype="object")], names=list(INDEX_NAMES)
    )


# --------------------------------------------------------------------------- result files


def _result_row(path: Path, record: RunRecord) -> dict[str, Any]:
    """One run record as one row of :data:`RESULT_COLUMNS`."""
    config, report = record.config, record.report
    return {
        "dataset": config.dataset,
        "profile": config.profile,
        "recipe": config.recipe,
        "method": config.method,
        "target_rate": config.rate,
        "seed": config.seed,
        "achieved_rate": float(report.achieved_rate),
        "kept_weights": int(report.kept_weights),
        "total_weights": int(report.total_weights),
        "percent_ac": float(report.percent_ac),
        # Reports hold fractions; tables print %, like the paper.
        "class_avg_accuracy": 100.0 * report.class_avg_accuracy,
        "accuracy": 100.0 * report.accuracy,
        "wall_time_s": float(report.wall_time_s),
        "device": report.device,
        "config_hash": record.hash,
        "git_commit": record.provenance.git_commit,
        "file": path.name,
    }


def _empty_results() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in RESULT_COLUMNS.items()})


def load_results(results_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Every run record (``*.json``) directly in ``results_dir``, one row per run.

    Columns are :data:`RESULT_COLUMNS`: ``target_rate`` is the nominal rate of the run's
    config, ``achieved_rate`` the measured one (fractions); ``class_avg_accuracy`` (the
    paper's accuracy) and ``accuracy`` are in %; ``file`` is the file's name. Rows are sorted
    by method (registration order), rate, seed and file name, so that a table built from
    them does not depend on the order the file system lists them in. Subfolders and other
    files are ignored; an empty folder gives an empty frame with the same columns.

    A bad file stops the load with a ValueError naming it: a silently skipped run would bias
    the seed averages without anyone noticing.
    """
    found = read_folder(results_dir)
    if not found:
        return _empty_results()
    files = [path for path, _ in found]
    frame = pd.DataFrame(
        [_result_row(path, record) for path, record in found], columns=list(RESULT_COLUMNS)
    )
    rank = [method_rank(key) for key in frame["method"]]
    order = sorted(
        range(len(frame)),
        key=lambda i: (rank[i], frame["target_rate"].iat[i], frame["seed"].iat[i], files[i].name),
    )
    return frame.iloc[order].reset_index(drop=True).astype(RESULT_COLUMNS)


# --------------------------------------------------------------------------- tables


def _check_one_experiment(results: pd.DataFrame) -> None:
    """Averages over seeds only mean something within one dataset, profile and config."""
    missing = [name for name in RESULT_COLUMNS if name not in results.columns]
    if missing:
        raise ValueError(f"results: expected the columns of load_results, missing {missing}")
    experiments = sorted(set(zip(results["dataset"], results["profile"], strict=True)))
    if len(experiments) > 1:
        raise ValueError(
            f"results: expected one (dataset, profile), got {experiments}; filter the frame first"
        )
    duplicated = results.duplicated(["method", "target_rate", "seed"], keep=False)
    if duplicated.any():
        files = sorted(results.loc[duplicated, "file"])
        raise ValueError(
            f"results: expected one run per (method, rate, seed), got duplicates in {files}"
        )


def aggregate_seeds(results: pd.DataFrame, column: str) -> pd.DataFrame:
    """Mean, sample std (ddof=1, NaN for one seed) and seed count of ``column``.

    Indexed by ``(target_rate, method_key)`` in the paper's row order; not rounded. The
    tables and the plots share it, so both average the seeds the same way.
    """
    _check_one_experiment(results)
    if column not in results.columns:
        raise ValueError(f"column: expected a column of load_results, got {column!r}")
    if results.empty:
        return pd.DataFrame(
            {
                "mean": np.array([], dtype="float64"),
                "std": np.array([], dtype="float64"),
                "seeds": pd.array([], dtype="Int64"),
            },
            index=_empty_index(),
        )
    grouped = results.groupby(["target_rate", "method"], sort=False)[column]
    stats = pd.DataFrame(
        {
            "mean": grouped.mean(),
            "std": grouped.std(ddof=1),
            "seeds": grouped.count().astype("Int64"),
        }
    )
    stats.index = stats.index.set_names(list(INDEX_NAMES))
    return _in_paper_order(stats)


def _labels_and_tc(index: pd.MultiIndex) -> tuple[list[str], list[str]]:
    keys = [str(key) for key in index.get_level_values(INDEX_NAMES[1])]
    return [method_label(key) for key in keys], [tc_mark(key) for key in keys]


def table1_right(results: pd.DataFrame) -> pd.DataFrame:
    """Our Table 1 (right): the seeds of each (target rate, method) averaged.

    ``results`` is a frame of :func:`load_results` for one dataset and profile. Columns are
    :data:`TABLE_COLUMNS`: the mean achieved pruning rate in %, TC by design of the method
    (:attr:`~tcmplib.pruning.PruningMethod.tc_by_design`), the mean number of kept weights,
    the mean % A-C, the mean class-averaged accuracy in %, its sample standard deviation
    over seeds (NaN for a single seed: one run says nothing about the spread), the number of
    seeds and the method's label. The index is ``(target_rate, method_key)``.
    """
    rate = aggregate_seeds(results, "achieved_rate")
    index = rate.index
    accuracy = aggregate_seeds(results, "class_avg_accuracy").reindex(index)
    kept = aggregate_seeds(results, "kept_weights")["mean"].reindex(index)
    ac = aggregate_seeds(results, "percent_ac")["mean"].reindex(index)
    labels, tc = _labels_and_tc(index)
    table = pd.DataFrame(
        {
            "pruning rate (%)": (100.0 * rate["mean"]).astype("float64").round(2),
            "TC": pd.Series(tc, index=index, dtype="object"),
            "# parameters": kept.astype("float64").round().astype("Int64"),
            "% A-C": ac.astype("float64").round(2),
            "accuracy (%)": accuracy["mean"].astype("float64").round(2),
            "± std": accuracy["std"].astype("float64").round(2),
            "seeds": rate["seeds"].astype("Int64"),
            "method": pd.Series(labels, index=index, dtype="object"),
        },
        index=index,
    )
    return table[list(TABLE_COLUMNS)]


#: Columns of :func:`training_times`.
TIME_COLUMNS: tuple[str, ...] = ("runs", "median (s)", "min (s)", "max (s)", "total (h)")


def training_times(results: pd.DataFrame) -> pd.DataFrame:
    """Training time of the runs, by device and method: count, median, range, total.

    ``results`` is a frame of :func:`load_results`; times are the reports' ``wall_time_s``
    (the training of a run, summed over the calls of a resumed one). Grouped by the
    report's device string, which names the thread count ("cpu (1 threads)"), since runs on
    different devices are not comparable; rows are sorted by device, then in
    registration order. The index is ``(device, method_key)``; seconds are rounded to
    integers and the total to 0.01 h, as printed.
    """
    missing = [name for name in ("device", "method", "wall_time_s") if name not in results]
    if missing:
        raise ValueError(f"results: expected the columns of load_results, missing {missing}")
    grouped = results.groupby(["device", "method"])["wall_time_s"]
    table = pd.DataFrame(
        {
            "runs": grouped.count().astype("int64"),
            "median (s)": grouped.median().round().astype("int64"),
            "min (s)": grouped.min().round().astype("int64"),
            "max (s)": grouped.max().round().astype("int64"),
            "total (h)": (grouped.sum() / 3600.0).round(2),
        }
    )
    table.index = table.index.set_names(["device", "method_key"])
    order = sorted(table.index, key=lambda row: (str(row[0]), method_rank(str(row[1]))))
    return table.reindex(pd.MultiIndex.from_tuples(order, names=table.index.names))[
        list(TIME_COLUMNS)
    ]


def _paper_tc(value: str) -> str:
    marks = {"": "NA", "True": "✓", "False": "✗"}
    if value not in marks:
        raise ValueError(f"table1_right.csv: expected tc True, False or empty, got {value!r}")
    return marks[value]


def _paper_csv(name: str, columns: tuple[str, ...], dtype: dict[str, str]) -> pd.DataFrame:
    """A published table shipped in ``tcmplib/paper/``, its columns checked."""
    source = resources.files("tcmplib") / "paper" / name
    with source.open("r", encoding="utf-8") as handle:
        table = pd.read_csv(handle, dtype=dtype, keep_default_na=False)
    if tuple(table.columns) != columns:
        raise ValueError(f"{name}: expected columns {list(columns)}, got {list(table.columns)}")
    return table


def paper_table1_right() -> pd.DataFrame:
    """The paper's published Table 1 (right), in the layout of :func:`table1_right`.

    ``± std`` and ``seeds`` are empty: the paper reports one number per cell.
    """
    raw = _paper_csv("table1_right.csv", _PAPER_CSV_COLUMNS, {"method": "object", "tc": "object"})
    index = pd.MultiIndex.from_arrays(
        [raw["target_rate"].astype("float64"), raw["method"].astype("object")],
        names=list(INDEX_NAMES),
    )
    table = pd.DataFrame(
        {
            "pruning rate (%)": raw["pruning_rate_percent"].astype("float64").to_numpy(),
            "TC": [_paper_tc(str(value)) for value in raw["tc"]],
            "# parameters": pd.array(raw["parameters"].astype("int64"), dtype="Int64"),
            "% A-C": raw["percent_ac"].astype("float64").to_numpy(),
            "accuracy (%)": raw["accuracy_percent"].astype("float64").to_numpy(),
            "± std": np.full(len(raw), np.nan),
            "seeds": pd.array([pd.NA] * len(raw), dtype="Int64"),
            "method": [method_label(str(key)) for key in raw["method"]],
        },
        index=index,
    )
    return _in_paper_order(table)[list(TABLE_COLUMNS)]


def paper_table1_left() -> pd.DataFrame:
    """The paper's published Table 1 (left): earlier FPHA results and the paper's baseline.

    Columns: ``method``, ``ref`` (the paper's citation number), ``color``, ``depth`` and
    ``pose`` (the input modalities, booleans) and ``accuracy_percent``, as printed.
    """
    columns = ("method", "ref", "color", "depth", "pose", "accuracy_percent")
    return _paper_csv("table1_left.csv", columns, {"ref": "object"})


def _check_table(table: pd.DataFrame, name: str) -> None:
    if list(table.index.names) != list(INDEX_NAMES):
        raise ValueError(
            f"{name}: expected an index {list(INDEX_NAMES)} (from table1_right), "
            f"got {list(table.index.names)}"
        )
    missing = [column for column in TABLE_COLUMNS if column not in table.columns]
    if missing:
        raise ValueError(f"{name}: expected the columns of table1_right, missing {missing}")


def compare_with_paper(ours: pd.DataFrame, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our table next to the published one, per (target rate, method).

    ``ours`` comes from :func:`table1_right`; ``paper`` defaults to
    :func:`paper_table1_right`. Columns are :data:`COMPARISON_COLUMNS`: ``ours: ...`` and
    ``paper: ...`` for each number, then the accuracy difference (ours − paper) in points.
    The join is outer: a row the paper lacks (PMP) keeps empty paper columns, and a row we
    have not run yet keeps empty ``ours`` columns, so a missing run shows up as a gap rather
    than disappearing from the table.
    """
    if paper is None:
        paper = paper_table1_right()
    _check_table(ours, "ours")
    _check_table(paper, "paper")
    rows = [(float(rate), str(key)) for rate, key in ours.index]
    rows += [(float(rate), str(key)) for rate, key in paper.index if (rate, key) not in ours.index]
    rows.sort(key=lambda row: _row_order(*row))
    index = pd.MultiIndex.from_tuples(rows, names=list(INDEX_NAMES)) if rows else _empty_index()
    ours_rows = ours.reindex(index)
    paper_rows = paper.reindex(index)
    labels, tc = _labels_and_tc(index)
    columns: dict[str, Any] = {"method": labels, "TC": tc}
    for column in ("pruning rate (%)", "# parameters", "% A-C", "accuracy (%)", "± std", "seeds"):
        columns[f"ours: {column}"] = ours_rows[column].to_numpy()
    for column in ("pruning rate (%)", "# parameters", "% A-C", "accuracy (%)"):
        columns[f"paper: {column}"] = paper_rows[column].to_numpy()
    columns["Δ accuracy (ours − paper)"] = (
        (ours_rows["accuracy (%)"].astype("float64") - paper_rows["accuracy (%)"].astype("float64"))
        .round(2)
        .to_numpy()
    )
    comparison = pd.DataFrame(columns, index=index)
    for column in ("ours: # parameters", "ours: seeds", "paper: # parameters"):
        comparison[column] = comparison[column].astype("Int64")
    for column in comparison.columns:
        if column not in ("method", "TC") and comparison[column].dtype == object:
            comparison[column] = comparison[column].astype("float64")
    return comparison[list(COMPARISON_COLUMNS)]


# --------------------------------------------------------------------------- output


def _cell(value: Any, floatfmt: str | None) -> str:
    """One markdown cell: empty values as "—", integers without ".0", "|" escaped."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, (bool, np.bool_)):
        text = str(bool(value))
    elif isinstance(value, numbers.Integral):
        text = str(int(value))
    elif isinstance(value, numbers.Real):
        number = float(value)
        if math.isnan(number):
            return "—"
        text = format(number, floatfmt) if floatfmt else str(number)
    else:
        text = str(value)
    return " ".join(text.split()).replace("|", "\\|")


def _is_numeric(values: pd.Index | pd.Series) -> bool:
    dtype = values.dtype
    return bool(pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype))


def _header(name: Hashable) -> str:
    if name is None:
        return ""
    if isinstance(name, tuple):
        return " ".join(str(part) for part in name)
    return str(name)


def _markdown_columns(
    df: pd.DataFrame, index: bool, floatfmt: str | None
) -> list[tuple[str, list[str], bool]]:
    """(header, cells, right-aligned) for each printed column, index levels first."""
    columns: list[tuple[str, list[str], bool]] = []
    if index:
        for level, name in enumerate(df.index.names):
            values = df.index.get_level_values(level)
            cells = [_cell(value, floatfmt) for value in values]
            columns.append((_header(name), cells, _is_numeric(values)))
    for position, name in enumerate(df.columns):
        series = df.iloc[:, position]
        cells = [_cell(value, floatfmt) for value in series]
        columns.append((_header(name), cells, _is_numeric(series)))
    return columns


def _markdown_line(cells: Sequence[str], widths: Sequence[int], right: Sequence[bool]) -> str:
    padded = [
        cell.rjust(width) if flush else cell.ljust(width)
        for cell, width, flush in zip(cells, widths, right, strict=True)
    ]
    return "| " + " | ".join(padded) + " |"


def to_markdown(df: pd.DataFrame, *, index: bool | None = None, floatfmt: str | None = None) -> str:
    """A GitHub-flavoured markdown table of ``df``, with no dependency beyond pandas.

    Empty cells (NaN, NA, None) print as "—". Floats print as stored (``str(float)``), since
    the tables here are already rounded for print; ``floatfmt`` (e.g. ``".2f"``) formats
    every float instead. The index is printed unless it is a plain range (``index=None``);
    numeric columns are right-aligned. Returned without a trailing newline.
    """
    show_index = not isinstance(df.index, pd.RangeIndex) if index is None else index
    columns = _markdown_columns(df, show_index, floatfmt)
    if not columns:
        raise ValueError("df: expected at least one column or index level to print")
    headers = [header.replace("|", "\\|") for header, _, _ in columns]
    right = [flush for _, _, flush in columns]
    widths = [
        max(3, len(header), *(len(cell) for cell in cells))
        for header, (_, cells, _) in zip(headers, columns, strict=True)
    ]
    rule = [
        ("-" * (width - 1) + ":") if flush else "-" * width
        for width, flush in zip(widths, right, strict=True)
    ]
    lines = [_markdown_line(headers, widths, right), "| " + " | ".join(rule) + " |"]
    for row in range(len(df)):
        lines.append(_markdown_line([cells[row] for _, cells, _ in columns], widths, right))
    return "\n".join(lines)


def write_table(df: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ``df`` as markdown (``.md``) or CSV (``.csv``), atomically.

    The file is replaced in one rename, so a book page or a reader never sees half a table.
    As in :func:`to_markdown`, the index is written unless it is a plain range.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix == ".md":
        text = to_markdown(df) + "\n"
    elif suffix == ".csv":
        text = df.to_csv(index=not isinstance(df.index, pd.RangeIndex))
    else:
        raise ValueError(f"{target}: expected a .md or .csv file name, got suffix {suffix!r}")
    data = text.encode("utf-8")
    return atomic_write(target, lambda handle: handle.write(data))
