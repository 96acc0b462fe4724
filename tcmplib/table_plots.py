"""Figures of a sweep: accuracy and % A-C against the pruning rate, one line per method.

The x axis is spaced by the share of kept weights on a log scale, reversed, and labelled with
the pruning rate: 50%, 75%, 95% and 99% would crowd together on a linear axis, while the
paper's story happens between 95% and 99%. Error bars are the sample standard deviation over
seeds (only where there is more than one). The paper's published numbers can be overlaid as
hollow markers of the same colour, so that a reader compares shapes rather than tables.
Each method's colour and marker is its registered ``style`` (the Okabe-Ito palette, as in
:mod:`tcmplib.topology_plots`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tcmplib.pruning import METHODS
from tcmplib.tables import INDEX_NAMES, aggregate_seeds, method_label, method_rank

__all__ = [
    "METRICS",
    "plot_metric_vs_rate",
    "plot_accuracy_vs_rate",
    "plot_ac_vs_rate",
]

# Methods registered without a style (or not registered) take these in turn.
_FALLBACK_STYLE: tuple[tuple[str, str], ...] = (
    ("#56B4E9", "P"),
    ("#F0E442", "X"),
    ("#000000", "*"),
)

#: metric -> (column of load_results, column of table1_right, axis label).
METRICS: dict[str, tuple[str, str, str]] = {
    "accuracy": ("class_avg_accuracy", "accuracy (%)", "class-averaged accuracy (%)"),
    "ac": ("percent_ac", "% A-C", "% A-C (effective / kept)"),
}

# Kept shares (%) that may carry a tick, labelled with the matching pruning rate.
_TICKS = (100.0, 50.0, 25.0, 10.0, 5.0, 2.0, 1.0, 0.5, 0.2, 0.1)
# Neighbouring methods are shifted by this many decades so that error bars do not overlap.
_DODGE = 0.012


def _styles(keys: Sequence[str]) -> dict[str, tuple[str, str]]:
    styles: dict[str, tuple[str, str]] = {}
    spare = 0
    for key in keys:
        if key in METHODS:
            styles[key] = METHODS[key].style
        else:
            styles[key] = _FALLBACK_STYLE[spare % len(_FALLBACK_STYLE)]
            spare += 1
    return styles


def _kept_percent(rates: Sequence[float], position: int, count: int) -> list[float]:
    """x of each rate: the kept share in %, shifted a little per method (``position``)."""
    shift = 10 ** (_DODGE * (position - (count - 1) / 2))
    return [100.0 * (1.0 - rate) * shift for rate in rates]


def _pruned_keys(*tables: pd.DataFrame) -> list[str]:
    """Method keys other than the baseline, in registration order."""
    keys = {str(key) for table in tables for key in table.index.get_level_values(INDEX_NAMES[1])}
    return sorted(keys - {"baseline"}, key=method_rank)


def _rows(table: pd.DataFrame, key: str) -> pd.DataFrame:
    """The rows of one method, by rate."""
    rows = table[table.index.get_level_values(INDEX_NAMES[1]) == key]
    return rows.sort_index(level=INDEX_NAMES[0])


def _rates(rows: pd.DataFrame) -> list[float]:
    return [float(rate) for rate in rows.index.get_level_values(INDEX_NAMES[0])]


def _placed(
    table: pd.DataFrame, keys: list[str]
) -> Iterator[tuple[str, pd.DataFrame, list[float]]]:
    """Each method of ``keys`` that ``table`` has rows of: its key, rows and their x.

    A method's x depends on its position among all ``keys``, so that ours and the paper's
    points of one method stand at the same x.
    """
    for position, key in enumerate(keys):
        rows = _rows(table, key)
        if not rows.empty:
            yield key, rows, _kept_percent(_rates(rows), position, len(keys))


def _draw_ours(
    ax: Axes, stats: pd.DataFrame, keys: list[str], styles: dict[str, tuple[str, str]]
) -> list[float]:
    """Our mean per method as a line, with std error bars where there are several seeds."""
    xs: list[float] = []
    for key, rows, x in _placed(stats, keys):
        colour, marker = styles[key]
        mean = rows["mean"].astype("float64").to_numpy()
        ax.plot(
            x,
            mean,
            "-",
            marker=marker,
            color=colour,
            label=method_label(key),
            gid=f"method:{key}",
            zorder=3,
        )
        spread = (rows["seeds"].fillna(0).to_numpy() > 1) & rows["std"].notna().to_numpy()
        if spread.any():
            ax.errorbar(
                [value for value, keep in zip(x, spread, strict=True) if keep],
                mean[spread],
                yerr=rows["std"].astype("float64").to_numpy()[spread],
                fmt="none",
                ecolor=colour,
                elinewidth=1.0,
                capsize=3,
                zorder=2,
            )
        xs += x
    return xs


def _draw_paper(
    ax: Axes,
    paper: pd.DataFrame,
    column: str,
    keys: list[str],
    styles: dict[str, tuple[str, str]],
) -> list[float]:
    """The published numbers as hollow markers, at the same x as our points."""
    xs: list[float] = []
    for key, rows, x in _placed(paper, keys):
        colour, marker = styles[key]
        ax.plot(
            x,
            rows[column].astype("float64").to_numpy(),
            ls="",
            marker=marker,
            markersize=10,
            markerfacecolor="none",
            markeredgecolor=colour,
            markeredgewidth=1.4,
            label=f"{method_label(key)} (paper)",
            gid=f"paper:{key}",
            zorder=4,
        )
        xs += x
    return xs


def _draw_baseline(ax: Axes, stats: pd.DataFrame, paper: pd.DataFrame | None, column: str) -> None:
    """The dense baseline as a dashed line (a band of ± std with several seeds)."""
    rows = _rows(stats, "baseline")
    if not rows.empty:
        mean = float(rows["mean"].iloc[0])
        ax.axhline(
            mean,
            color="black",
            ls="--",
            lw=1.0,
            label=method_label("baseline"),
            gid="baseline",
            zorder=1,
        )
        std = rows["std"].iloc[0]
        if int(rows["seeds"].iloc[0]) > 1 and pd.notna(std):
            ax.axhspan(mean - float(std), mean + float(std), color="black", alpha=0.08, lw=0)
    published = _rows(paper, "baseline") if paper is not None else None
    if published is not None and not published.empty:
        ax.axhline(
            float(published[column].iloc[0]),
            color="grey",
            ls=":",
            lw=1.2,
            label=f"{method_label('baseline')} (paper)",
            gid="paper:baseline",
            zorder=1,
        )


def _rate_axis(ax: Axes, xs: list[float]) -> None:
    """Log axis of the kept share, reversed, with ticks labelled as pruning rates."""
    ax.set_xscale("log")
    low, high = (min(xs), max(xs)) if xs else (1.0, 50.0)
    ticks = [tick for tick in _TICKS if low / 1.3 <= tick <= high * 1.3]
    ax.set_xticks(ticks, [f"{100.0 - tick:g}" for tick in ticks])
    ax.minorticks_off()
    ax.set_xlim(high * 1.4, low / 1.4)  # reversed: higher pruning rates to the right
    ax.set_xlabel("pruning rate (%), spaced by kept weights (log scale)")


def plot_metric_vs_rate(
    results: pd.DataFrame, metric: str = "accuracy", *, paper: pd.DataFrame | None = None
) -> Figure:
    """``metric`` ("accuracy" or "ac") against the target rate, one line per method.

    ``results`` is a frame of :func:`tcmplib.tables.load_results` (one dataset and profile);
    seeds are averaged as in :func:`tcmplib.tables.table1_right`. ``paper`` (e.g.
    :func:`tcmplib.tables.paper_table1_right`) adds the published numbers as hollow markers.
    On the accuracy plot the dense baseline is a horizontal dashed line; on the % A-C plot it
    is left out, its 100% being true by construction.

    Lines carry a ``gid``: ``method:<key>`` for ours, ``paper:<key>`` for the overlay,
    ``baseline`` and ``paper:baseline`` for the horizontal lines.
    """
    if metric not in METRICS:
        raise ValueError(f"metric: expected one of {sorted(METRICS)}, got {metric!r}")
    if results.empty:
        raise ValueError("results: expected at least one run to plot, got an empty frame")
    result_column, table_column, axis_label = METRICS[metric]
    stats = aggregate_seeds(results, result_column)
    keys = _pruned_keys(stats) if paper is None else _pruned_keys(stats, paper)
    styles = _styles(keys)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
    xs = _draw_ours(ax, stats, keys, styles)
    if paper is not None:
        xs += _draw_paper(ax, paper, table_column, keys, styles)
    if metric == "accuracy":
        _draw_baseline(ax, stats, paper, table_column)
    else:
        ax.set_ylim(-3, 103)
    _rate_axis(ax, xs)
    ax.set_ylabel(axis_label)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(
            loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, frameon=False, fontsize="small"
        )
    return fig


def plot_accuracy_vs_rate(results: pd.DataFrame, *, paper: pd.DataFrame | None = None) -> Figure:
    """Class-averaged accuracy against the pruning rate; see :func:`plot_metric_vs_rate`."""
    return plot_metric_vs_rate(results, "accuracy", paper=paper)


def plot_ac_vs_rate(results: pd.DataFrame, *, paper: pd.DataFrame | None = None) -> Figure:
    """% A-C against the pruning rate; see :func:`plot_metric_vs_rate`."""
    return plot_metric_vs_rate(results, "ac", paper=paper)
