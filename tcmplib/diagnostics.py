"""Epoch-by-epoch traces of a pruning run, to look inside a failure that results only sample.

A result file keeps the evaluated epochs (one in 50 at paper scale); a spike of the training
accuracy lasts a few dozen epochs and starts within one. :func:`trace_run` trains a method on
the real schedule (its annealing set by the full epoch count) but stops after the first
``stop_epoch`` epochs, and records for every epoch the trainer's history row plus what the
weights did in that epoch's step: the mean and largest ``|delta w|`` of each weight tensor and
how many weights crossed the magnitude at which the mask switches, where the mask has a
fixed one (PMP's band-stop ``a(r)``; the relaxed masks of MP and TCMP switch at a magnitude
that anneals, and are traced without crossings). Meant for the single-phase methods: a
two-phase one calls the trainer once per phase, and its epochs would restart at 1.
:func:`spike_onsets` then lists where the training accuracy, once fitted, fell, with the
state just before.

Nothing here changes a run: the trace reads the model through
:func:`tcmplib.train.observing`, so a traced run is the same computation as an untraced one.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from tcmplib.model import PRUNABLE, AttentionGCN, GCNConfig
from tcmplib.pruning import METHODS
from tcmplib.train import TrainConfig, TrainData, observing

if TYPE_CHECKING:  # pandas is imported only when traces are tabulated
    import pandas as pd

__all__ = [
    "trace_run",
    "spike_onsets",
    "trace_spikes",
    "trace_rows",
    "Reconnection",
    "reconnection",
    "differing_epochs",
    "consistency_pull",
]


class _StopTrace(Exception):
    """Raised by the observer after the last traced epoch."""


def _latent(model: AttentionGCN) -> dict[str, torch.Tensor]:
    return {name: w.detach().clone() for name, w in model.prunable().items()}


def _thresholds(model: AttentionGCN) -> dict[str, float]:
    """The fixed magnitude at which each tensor's mask switches, where the mask has one."""
    found: dict[str, float] = {}
    parametrizations = getattr(model, "parametrizations", {})
    for name in model.prunable():
        if name in parametrizations:
            for module in parametrizations[name]:
                threshold = getattr(module, "threshold", None)
                if isinstance(threshold, float) and threshold > 0:
                    found[name] = threshold
    return found


def _accessibility_counts(model: AttentionGCN) -> dict[str, float]:
    """Per tensor, the crisp mask's kept weights and those on A-C connections (TCMP only).

    Read from the accessibility networks the masks share, evaluated on the weights after the
    step (the trainer's own logs are the totals before it). Empty for other masks.
    """
    parametrizations = getattr(model, "parametrizations", {})
    for name in model.prunable():
        for module in parametrizations[name] if name in parametrizations else ():
            networks = getattr(module, "networks", None)
            if networks is not None:
                with torch.no_grad():
                    state = networks.evaluate()
                counts: dict[str, float] = {}
                for tensor, kept in state.kept.items():
                    counts[f"kept_{tensor}"] = float(kept.sum())
                    counts[f"kept_ac_{tensor}"] = float((kept * state.gate[tensor]).sum())
                return counts
    return {}


def trace_run(
    method: str,
    model: AttentionGCN,
    data: TrainData,
    rate: float,
    *,
    train_config: TrainConfig,
    stop_epoch: int,
    **options: Any,
) -> list[dict[str, float]]:
    """Rows of the first ``stop_epoch`` epochs of ``method`` on ``train_config``'s schedule.

    Each row is the trainer's (``epoch``, ``loss``, ``ce``, ``lr``, ``train_accuracy``
    measured before the epoch's step, the method's logs) plus, per weight tensor ``t``,
    ``step_mean_t`` and ``step_max_t`` (``|delta w|`` of the step) and ``crossed_t`` (weights
    whose ``|w|`` passed the mask's threshold in the step; absent for masks without one).
    TCMP's rows also give, per tensor, ``kept_t`` (the crisp mask's kept weights after the
    step) and ``kept_ac_t`` (those of them on accessible and co-accessible connections).
    """
    if method not in METHODS:
        raise ValueError(f"method: expected one of {', '.join(sorted(METHODS))}, got {method!r}")
    if not isinstance(stop_epoch, int) or not 1 <= stop_epoch <= train_config.epochs:
        raise ValueError(
            f"stop_epoch: expected an integer in [1, {train_config.epochs}], got {stop_epoch!r}"
        )
    rows: list[dict[str, float]] = []
    previous = _latent(model)

    def observe(row: dict[str, float], observed: nn.Module) -> None:
        assert isinstance(observed, AttentionGCN)
        current = _latent(observed)
        thresholds = _thresholds(observed)
        for name, w in current.items():
            before = previous[name].to(w.device)
            delta = (w - before).abs()
            row[f"step_mean_{name}"] = float(delta.mean())
            row[f"step_max_{name}"] = float(delta.max())
            if name in thresholds:
                a = thresholds[name]
                row[f"crossed_{name}"] = float(((w.abs() >= a) != (before.abs() >= a)).sum())
        row.update(_accessibility_counts(observed))
        previous.update(current)
        rows.append(row)
        if row["epoch"] >= stop_epoch:
            raise _StopTrace

    with observing(observe):
        try:
            METHODS[method]().run(
                model, data, rate, train_config=train_config, progress=False, **options
            )
        except _StopTrace:
            pass
    return rows


def spike_onsets(
    rows: list[dict[str, float]], floor: float = 0.99, before: int = 10
) -> list[dict[str, Any]]:
    """Where the training accuracy, once at 100%, first fell below ``floor``, epoch by epoch.

    One entry per spike (a spike ends when the accuracy is back at 100%; ``recovered
    epoch`` is None if that is not within the rows): the onset epoch (the first below
    ``floor``), the lowest accuracy and its epoch, the learning rate and the method's logs at
    the onset, the mean ``|delta w|`` (the tensors' means, averaged) and the threshold
    crossings (summed over the tensors) of the step
    before the onset and of the one ``before`` epochs earlier, to show whether a large step
    opened the spike, and the largest mean step from the onset to the recovery (and, for PMP,
    the largest divergence ``alignment`` over the same epochs, and its value ``before``
    epochs before the epoch before the onset).
    """
    spikes: list[dict[str, Any]] = []
    fitted = False
    current: dict[str, Any] | None = None

    def totals(row: dict[str, float]) -> tuple[float, float]:
        steps = [v for k, v in row.items() if k.startswith("step_mean_")]
        crossed = [v for k, v in row.items() if k.startswith("crossed_")]
        return (sum(steps) / len(steps) if steps else math.nan, sum(crossed))

    for i, row in enumerate(rows):
        accuracy = row["train_accuracy"]
        if current is not None:
            if accuracy >= 1.0:
                current["recovered epoch"] = row["epoch"]
                spikes.append(current)
                current = None
                continue
            # The step of row e is taken after its accuracy was measured: steps of the
            # spike are those of the onset epoch up to the epoch before the recovery.
            current["largest mean step in the spike"] = max(
                current["largest mean step in the spike"], totals(row)[0]
            )
            if "alignment" in row:
                current["largest alignment in the spike"] = max(
                    current["largest alignment in the spike"], row["alignment"]
                )
            if accuracy < current["lowest train accuracy"]:
                current["lowest train accuracy"] = accuracy
                current["lowest epoch"] = row["epoch"]
            continue
        if fitted and accuracy < floor:
            prev = rows[i - 1]
            earlier = rows[max(i - 1 - before, 0)]
            step_prev, crossed_prev = totals(prev)
            step_earlier, crossed_earlier = totals(earlier)
            current = {
                "onset epoch": row["epoch"],
                "lr": row["lr"],
                "lowest train accuracy": accuracy,
                "lowest epoch": row["epoch"],
                "recovered epoch": None,
                "mean step before": step_prev,
                f"mean step {before} epochs earlier": step_earlier,
                "crossed before": crossed_prev,
                f"crossed {before} epochs earlier": crossed_earlier,
                "largest mean step in the spike": totals(row)[0],
                **{
                    key: row[key] for key in ("steepness", "alignment", "temperature") if key in row
                },
                **(
                    {
                        "largest alignment in the spike": row["alignment"],
                        f"alignment {before} epochs earlier": earlier["alignment"],
                    }
                    if "alignment" in row and "alignment" in earlier
                    else {}
                ),
            }
        fitted = fitted or accuracy >= 1.0
    if current is not None:
        spikes.append(current)
    return spikes


def trace_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The per-epoch rows of a trace file of ``scripts/trace_run.py`` (errors name the file)."""
    try:
        rows = json.loads(Path(path).read_text(encoding="utf-8"))["rows"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a trace file of scripts/trace_run.py ({err})") from None
    if not isinstance(rows, list):
        raise ValueError(f"{path}: field 'rows': expected a list")
    return rows


def trace_spikes(folder: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per spike of every trace file (``trace_*.json``) in ``folder``.

    Columns: the run (method, rate, seed, the learning-rate cap ``lr_max``, epochs traced),
    then :func:`spike_onsets`'s fields. A trace without a spike gives one row with ``onset
    epoch`` empty, so every traced run shows. An empty frame if the folder has no trace.
    """
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for path in sorted(Path(folder).glob("trace_*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            run = {
                "method": record["method"],
                "rate (%)": 100.0 * float(record["rate"]),
                "seed": int(record["seed"]),
                "lr_max": float(record["train_config"]["lr_max"]),
                "epochs traced": len(record["rows"]),
            }
            spikes = spike_onsets(record["rows"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: not a trace file of scripts/trace_run.py ({err})") from None
        rows += [{**run, **spike} for spike in spikes] or [{**run, "onset epoch": None}]
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Reconnection:
    """Where a TCMP trace's kept A-C weights rose above their plateau (see :func:`reconnection`).

    ``onset`` is the first epoch above the plateau by more than the tolerance, ``start`` the
    first epoch of the rise that led there. ``before``, ``peak`` and ``end`` are trace rows:
    the epoch before ``start``, the epoch with the most kept A-C weights, the last traced
    epoch. ``tensors`` gives, per weight tensor, the kept weights and those on A-C
    connections at these three epochs and the growth of its largest step over the ``lead``
    epochs up to ``before`` (``step_max`` there divided by its value ``lead`` epochs
    earlier).
    """

    onset: int
    start: int
    plateau: int
    before: dict[str, float]
    peak: dict[str, float]
    end: dict[str, float]
    lead: int
    tensors: list[dict[str, Any]]

    @staticmethod
    def kept_ac(row: dict[str, float]) -> int:
        """All tensors' kept weights on A-C connections in a trace row."""
        return int(sum(v for k, v in row.items() if k.startswith("kept_ac_")))

    @staticmethod
    def kept(row: dict[str, float]) -> int:
        """All tensors' kept weights in a trace row."""
        return int(sum(v for k, v in row.items() if k.startswith("kept_") and "_ac_" not in k))


def reconnection(
    rows: list[dict[str, float]], tolerance: float = 0.05, lead: int = 15
) -> Reconnection | None:
    """The first epoch at which a TCMP trace's kept A-C weights rose above their plateau.

    TCMP's budget counts only the kept weights on accessible and co-accessible connections;
    its crisp mask may keep others, on units without a path, that the budget does not see.
    Keeping one more weight can give such units their path at once, and all their kept
    weights join the A-C count together. The plateau is the smallest count of kept A-C
    weights seen so far; the onset is the first epoch whose count exceeds it by more than
    ``tolerance`` (a fraction of the plateau: the count wanders by about 1% while the mask
    settles in the first epochs), and the rise starts after the last epoch at the lowest
    count of the ``lead`` epochs before the onset. ``None`` if the rows have no such epoch or
    no ``kept_ac_*`` fields (traces of other methods).
    """
    if not 0.0 < tolerance < 1.0:
        raise ValueError(f"tolerance: expected a fraction in (0, 1), got {tolerance!r}")
    if not isinstance(lead, int) or lead < 1:
        raise ValueError(f"lead: expected a positive number of epochs, got {lead!r}")
    counted = [row for row in rows if any(k.startswith("kept_ac_") for k in row)]
    if len(counted) < 2:
        return None
    plateau = Reconnection.kept_ac(counted[0])
    at = None
    for i, row in enumerate(counted[1:], start=1):
        count = Reconnection.kept_ac(row)
        if count > plateau * (1.0 + tolerance):
            at = i
            break
        plateau = min(plateau, count)
    if at is None:
        return None
    # The rise starts after the last epoch at the lowest count of the ``lead`` epochs before
    # the onset (the global plateau may lie far back, the count drifting a little above it).
    window = counted[max(at - lead, 0) : at]
    low = min(Reconnection.kept_ac(row) for row in window)
    start = at
    while start > 1 and Reconnection.kept_ac(counted[start - 1]) > low:
        start -= 1
    before, earlier = counted[start - 1], counted[max(start - 1 - lead, 0)]
    peak = max(counted[at:], key=Reconnection.kept_ac)
    end = counted[-1]
    names = [k[len("kept_ac_") :] for k in counted[0] if k.startswith("kept_ac_")]
    tensors = []
    for name in names:
        step, step_earlier = before.get(f"step_max_{name}"), earlier.get(f"step_max_{name}")
        tensors.append(
            {
                "tensor": name,
                **{
                    f"{what} {when}": int(row[f"{key}{name}"])
                    for when, row in (
                        ("before", before),
                        ("at the peak", peak),
                        ("at the end", end),
                    )
                    for what, key in (("kept", "kept_"), ("A-C", "kept_ac_"))
                },
                "step growth": (
                    step / step_earlier
                    if step is not None and step_earlier is not None and step_earlier > 0
                    else math.nan
                ),
            }
        )
    return Reconnection(
        onset=int(counted[at]["epoch"]),
        start=int(counted[start]["epoch"]),
        plateau=plateau,
        before=before,
        peak=peak,
        end=end,
        lead=int(before["epoch"] - earlier["epoch"]),
        tensors=tensors,
    )


def differing_epochs(
    rows: list[dict[str, float]],
    history: list[dict[str, float]],
    keys: tuple[str, ...] = ("loss", "hard_rate", "learned_rate", "test_class_avg_accuracy"),
) -> tuple[int, list[int]]:
    """Whether a trace repeats a result: the epochs compared, and those where a value differs.

    Compares every epoch of a result's ``history`` (its evaluated epochs) that the trace also
    has, on the ``keys`` both rows carry, for exact equality: a trace made with the run's
    code, torch and thread count repeats the run bit for bit.
    """
    traced = {int(row["epoch"]): row for row in rows}
    compared, differing = 0, []
    for row in history:
        other = traced.get(int(row["epoch"]))
        if other is None:
            continue
        shared = [key for key in keys if key in row and key in other]
        if not shared:
            continue
        compared += 1
        if any(row[key] != other[key] for key in shared):
            differing.append(int(row["epoch"]))
    return compared, differing


def consistency_pull(
    weights: dict[str, torch.Tensor], config: GCNConfig, temperature: float, tau: float = 0.5
) -> list[dict[str, Any]]:
    """Which way TCMP's consistency term ``(S - S_ac) / N`` moves each kind of weight.

    Evaluates the accessibility networks of :mod:`tcmplib.pruning.tcmp` on ``weights`` (the
    four tensors of :data:`tcmplib.model.PRUNABLE`) at ``temperature`` and differentiates
    the consistency term. One row per tensor and kind of weight (``kept, A-C``, ``kept, off
    A-C``, ``pruned``): how many, and the mean and largest *pull*, ``-dC/dw * sign(w)``: a
    gradient step grows ``|w|`` where it is positive, shrinks it where negative. The term
    is TCMP's with ``eta = 1``; the weights are copied, not changed.
    """
    from tcmplib.pruning.tcmp import AccessibilityNetworks

    missing = [name for name in PRUNABLE if name not in weights]
    if missing:
        raise ValueError(f"weights: expected the tensors {PRUNABLE}, missing {missing}")
    if not temperature > 0:
        raise ValueError(f"temperature: expected a positive number, got {temperature!r}")
    leaves = {name: weights[name].detach().clone().requires_grad_(True) for name in PRUNABLE}
    networks = AccessibilityNetworks(config, temperature=temperature, tau=tau)
    networks.bind(leaves)
    state = networks.evaluate()
    total = sum(w.numel() for w in leaves.values())
    soft, soft_ac = state.soft_masses()
    ((soft - soft_ac) / total).backward()
    rows: list[dict[str, Any]] = []
    for name, w in leaves.items():
        assert w.grad is not None
        pull = -w.grad * torch.sign(w.detach())
        kept = state.kept[name].detach() > 0.5
        on_ac = kept & (state.gate[name].detach() > 0.5)
        for kind, where in (
            ("kept, A-C", on_ac),
            ("kept, off A-C", kept & ~on_ac),
            ("pruned", ~kept),
        ):
            values = pull[where]
            rows.append(
                {
                    "tensor": name,
                    "kind": kind,
                    "weights": int(where.sum()),
                    "mean pull": float(values.mean()) if values.numel() else math.nan,
                    "largest pull": float(values.abs().max()) if values.numel() else math.nan,
                }
            )
    return rows
