"""Figures and tables of the topologically consistent chapters (TCMP, greedy TC, PMP).

Each function draws one figure (and returns it) or builds one table from finished reports;
nothing here trains or prunes, so a chapter cell is one call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import pandas as pd
import torch
from matplotlib.figure import Figure

from tcmplib.pruning.base import PruneReport
from tcmplib.pruning.ste import heaviside_ste, surrogate

if TYPE_CHECKING:
    from tcmplib.diagnostics import Reconnection

__all__ = [
    "plot_ste",
    "plot_tcmp_history",
    "plot_retraining_history",
    "plot_reconnection",
    "comparison_table",
]


def plot_ste(tau: float = 0.5, x_max: float = 3.0, points: int = 1201) -> Figure:
    """The Heaviside step and its sigmoid surrogate (left), and their derivatives (right).

    The derivatives on the right are *measured* with autograd through
    :func:`~tcmplib.pruning.ste.heaviside_ste` (the STE) and through ``sigmoid(x / tau)``;
    the exact Heaviside's derivative, zero except at 0, is drawn for contrast.
    """
    if not (x_max > 0 and math.isfinite(x_max)):
        raise ValueError(f"x_max: expected a positive finite number, got {x_max!r}")
    x = torch.linspace(-x_max, x_max, points, dtype=torch.float64, requires_grad=True)
    step = heaviside_ste(x, tau)
    (ste_grad,) = torch.autograd.grad(step.sum(), x)
    smooth = surrogate(x, tau)
    (smooth_grad,) = torch.autograd.grad(smooth.sum(), x)
    xs = x.detach().numpy()

    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.4))
    left.plot(xs, step.detach().numpy(), label="Heaviside h(x) (forward)", lw=2)
    left.plot(xs, smooth.detach().numpy(), label=f"sigmoid(x / {tau:g}) (surrogate)", ls="--")
    left.set_xlabel("x")
    left.set_title("Forward: the step stays binary")
    left.legend(frameon=False, fontsize="small", loc="upper left")

    right.plot(xs, torch.zeros_like(x).detach().numpy(), label="dh/dx (0 almost everywhere)", lw=2)
    right.plot(xs, ste_grad.numpy(), label="gradient the STE passes", lw=2, alpha=0.8)
    right.plot(xs, smooth_grad.numpy(), label="d sigmoid(x / tau) / dx", ls="--", color="k")
    right.axvline(0.0, color="grey", lw=0.6, ls=":")
    right.set_xlabel("x")
    right.set_title(f"Backward: the surrogate's slope (tau = {tau:g})")
    right.legend(frameon=False, fontsize="small", loc="upper left")
    fig.tight_layout()
    return fig


def _column(report: PruneReport, key: str) -> tuple[list[float], list[float]]:
    rows = [row for row in report.history if key in row]
    if not rows:
        raise ValueError(f"report: its history has no {key!r} column (method {report.method!r})")
    return [row["epoch"] for row in rows], [row[key] for row in rows]


def plot_tcmp_history(report: PruneReport) -> Figure:
    """TCMP's training: the terms of Eq. 3, the rates against the target, and T."""
    if report.method != "tcmp":
        raise ValueError(f"report: expected a 'tcmp' report, got {report.method!r}")
    fig, (losses, rates, temps) = plt.subplots(1, 3, figsize=(12.0, 3.4))
    for key, label in (
        ("ce", "cross entropy"),
        ("budget", "lambda (budget gap)^2"),
        ("consistency", "eta (soft mass off A-C)"),
    ):
        losses.plot(*_column(report, key), label=label)
    losses.set_yscale("symlog", linthresh=1e-4)
    losses.set_xlabel("epoch")
    losses.set_title("Terms of Eq. 3")
    losses.legend(frameon=False, fontsize="small")

    for key, label in (
        ("soft_rate", "soft rate 1 - sum psi / N"),
        ("hard_rate", "psi < 1/2"),
        ("learned_rate", "pruned or not A-C (learned mask)"),
    ):
        epochs, values = _column(report, key)
        rates.plot(epochs, [100 * v for v in values], label=label)
    rates.axhline(100 * report.target_rate, color="k", lw=0.8, ls=":", label="target")
    rates.set_xlabel("epoch")
    rates.set_ylabel("%")
    rates.set_title("Pruning rates")
    rates.legend(frameon=False, fontsize="small")

    temps.plot(*_column(report, "temperature"))
    temps.set_yscale("log")
    temps.set_xlabel("epoch")
    temps.set_title("Temperature T (linear schedule)")
    fig.tight_layout()
    return fig


def plot_retraining_history(reports: Mapping[str, PruneReport]) -> Figure:
    """Training accuracy and, where measured, test accuracy of several runs, epoch by epoch.

    For the two-phase methods (dense training, then retraining after the selection) the
    phase boundary shows as a drop in training accuracy.
    """
    if not reports:
        raise ValueError("reports: expected at least one report")
    fig, (train_ax, test_ax) = plt.subplots(1, 2, figsize=(10.0, 3.4))
    for label, report in reports.items():
        epochs, values = _column(report, "train_accuracy")
        train_ax.plot(epochs, [100 * v for v in values], label=label)
        epochs, values = _column(report, "test_class_avg_accuracy")
        test_ax.plot(epochs, [100 * v for v in values], marker=".", label=label)
    for ax, title in ((train_ax, "training accuracy"), (test_ax, "test class-average accuracy")):
        ax.set_xlabel("epoch")
        ax.set_ylabel("%")
        ax.set_title(title)
        ax.legend(frameon=False, fontsize="small")
    fig.tight_layout()
    return fig


def comparison_table(reports: Mapping[str, PruneReport]) -> pd.DataFrame:
    """One row per run in the layout of Table 1: rate, TC, # parameters, % A-C, accuracy."""
    if not reports:
        raise ValueError("reports: expected at least one report")
    rows = [
        {
            "method": label,
            "pruning rate (%)": round(100 * r.achieved_rate, 2),
            "TC": "yes" if r.topologically_consistent else "no",
            "# parameters": r.kept_weights,
            "% of A-C": round(r.percent_ac, 2),
            "class-avg accuracy (%)": round(100 * r.class_avg_accuracy, 2),
        }
        for label, r in reports.items()
    ]
    return pd.DataFrame(rows).set_index("method")


def plot_reconnection(
    rows: list[dict[str, float]], found: Reconnection, before: int = 30
) -> Figure:
    """A TCMP trace around a reconnection (:func:`tcmplib.diagnostics.reconnection`).

    Left: per weight tensor, the kept weights on A-C connections (solid) and all kept weights
    (dashed, where they differ). Right: the loss terms (cross entropy, budget, consistency)
    and each tensor's largest step, on a log scale. From ``before`` epochs before the rise
    to the end of the rows; the rise's first epoch is marked.
    """
    first = found.before["epoch"] - before
    shown = [
        row
        for row in rows
        if row["epoch"] >= first and "kept_ac_" + found.tensors[0]["tensor"] in row
    ]
    epochs = [row["epoch"] for row in shown]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10.0, 3.6))
    for i, tensor in enumerate(entry["tensor"] for entry in found.tensors):
        color = f"C{i}"
        ac = [row[f"kept_ac_{tensor}"] for row in shown]
        kept = [row[f"kept_{tensor}"] for row in shown]
        left.plot(epochs, ac, color=color, label=f"{tensor}: A-C")
        if kept != ac:
            left.plot(epochs, kept, color=color, ls="--", label=f"{tensor}: kept")
        right.plot(
            epochs,
            [row[f"step_max_{tensor}"] for row in shown],
            color=color,
            lw=0.8,
            ls=":",
            label=f"largest step, {tensor}",
        )
    for key, color in (("ce", "k"), ("budget", "C5"), ("consistency", "C6")):
        # A term at exactly 0 has no place on a log scale: left out, not floored.
        values = [row[key] if row[key] > 0 else math.nan for row in shown]
        right.plot(epochs, values, color=color, label=key)
    right.set_yscale("log")
    for ax, title in ((left, "kept weights"), (right, "loss terms and steps")):
        ax.axvline(found.start, color="0.6", lw=0.8)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    return fig
