"""Figures of the pruning chapters: each function draws one figure and returns it.

Functions take plain numbers or a :class:`~tcmplib.pruning.base.PruneReport`, so a chapter
cell is one call; nothing here trains or prunes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from tcmplib.pruning.base import PruneReport
from tcmplib.pruning.masks import psi

__all__ = ["plot_psi", "plot_mp_history", "plot_pmp_projection"]


def plot_psi(temperatures: Sequence[float], w_max: float = 1.0, points: int = 801) -> Figure:
    """``psi(w) = 2 sigmoid(w^2 / T) - 1`` on ``[-w_max, w_max]`` for each temperature ``T``."""
    if not temperatures or any(not (t > 0 and math.isfinite(t)) for t in temperatures):
        raise ValueError(f"temperatures: expected positive numbers, got {list(temperatures)!r}")
    if not w_max > 0:
        raise ValueError(f"w_max: expected a positive number, got {w_max!r}")
    w = torch.linspace(-w_max, w_max, points, dtype=torch.float64)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for t in sorted(temperatures, reverse=True):
        ax.plot(w.numpy(), psi(w, t).numpy(), label=f"T = {t:g}")
    ax.axhline(0.5, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("weight w")
    ax.set_ylabel("psi(w)")
    ax.set_ylim(-0.03, 1.03)
    ax.legend(frameon=False, fontsize="small")
    ax.set_title("The relaxed mask becomes crisp as T falls")
    fig.tight_layout()
    return fig


def plot_mp_history(report: PruneReport) -> Figure:
    """Relaxed MP's training: soft and hard rates against the target, T, and the budget term."""
    rows = report.history
    if not rows or "temperature" not in rows[0]:
        raise ValueError("report: expected the history of a relaxed MP run (method 'mp')")
    epochs = [row["epoch"] for row in rows]
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
    ax = axes[0]
    ax.plot(epochs, [100 * row["soft_rate"] for row in rows], label="soft: 1 - sum psi / N")
    ax.plot(epochs, [100 * row["hard_rate"] for row in rows], label="psi < 1/2 removed")
    ax.axhline(100 * report.target_rate, color="black", ls="--", lw=0.8, label="target")
    ax.set_xlabel("epoch")
    ax.set_ylabel("pruning rate (%)")
    ax.legend(frameon=False, fontsize="small")
    axes[1].plot(epochs, [row["temperature"] for row in rows], color="tab:red")
    axes[1].set_xlabel("epoch")
    axes[1].set_ylabel("temperature T")
    axes[1].ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    axes[2].semilogy(epochs, [row["budget"] for row in rows], color="tab:green")
    axes[2].set_xlabel("epoch")
    axes[2].set_ylabel("budget term")
    fig.tight_layout()
    return fig


def plot_pmp_projection(runs: Mapping[str, Sequence[PruneReport]]) -> Figure:
    """PMP runs by label (e.g. revision), one panel per target rate: the soft network's
    class-averaged test accuracy at every evaluation, and a dotted drop from the last one to
    the accuracy of the final network (the projection onto the budget), marked by a dot."""
    rates = sorted({report.target_rate for reports in runs.values() for report in reports})
    if not rates:
        raise ValueError("runs: expected at least one PMP report, got none")
    fig, axes = plt.subplots(1, len(rates), figsize=(5.2 * len(rates), 3.4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, rate in zip(axes[0], rates, strict=True):
        for (label, reports), colour in zip(runs.items(), colours, strict=False):
            shown = False
            for report in (r for r in reports if r.target_rate == rate):
                rows = [row for row in report.history if "test_class_avg_accuracy" in row]
                epochs = [row["epoch"] for row in rows]
                soft = [100 * row["test_class_avg_accuracy"] for row in rows]
                final = 100 * report.class_avg_accuracy
                ax.plot(epochs, soft, color=colour, lw=1, label=None if shown else label)
                ax.plot([epochs[-1]] * 2, [soft[-1], final], color=colour, ls=":", lw=1)
                ax.plot(epochs[-1], final, "o", color=colour, ms=5)
                shown = True
        ax.set_title(f"PMP at {100 * rate:g}%")
        ax.set_xlabel("epoch (dot: after the projection onto the budget)")
        ax.set_ylabel("class-averaged test accuracy (%)")
        ax.set_ylim(0, 100)
        ax.legend(frameon=False, fontsize="small", loc="lower left")
    fig.tight_layout()
    return fig
