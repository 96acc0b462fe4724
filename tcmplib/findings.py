"""The paper's claims about its Table 1, checked against a table of results.

Section 5 of the paper draws a handful of conclusions from Table 1 (right): magnitude pruning
disconnects the network at high rates, the topologically consistent methods never do, TCMP
beats MP where pruning is extreme and beats its greedy predecessor at 99%, and low rates cost
little accuracy. Each is written here as a test on a table in the layout of
:func:`tcmplib.tables.table1_right`, so that a reproduction states, by code rather than by
eye, which conclusions hold on its numbers.

Every test is also run on the paper's own table, where each must hold: a test that failed on
the table it was read from would misstate the claim.

Verdicts (:data:`VERDICTS`): ``holds``; ``holds within seed spread`` when a difference of
means is positive but not larger than the larger of the two standard deviations over seeds;
``does not hold``; ``incomplete`` when some of the runs a claim needs are missing (any
violation among those present already gives ``does not hold``); ``not run yet`` when none are
present. A verdict resting on single-seed means says so: ``(one seed)`` is appended, since
one run cannot tell a real difference from run-to-run noise.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from tcmplib.pruning.masks import keep_count
from tcmplib.records import RunRecord, read_folder
from tcmplib.tables import INDEX_NAMES, method_label, paper_table1_right

__all__ = [
    "VERDICTS",
    "FINDINGS",
    "Finding",
    "MaskCollapse",
    "check_findings",
    "findings_by_recipe",
    "mask_collapse",
    "AC_BY_TENSOR_COLUMNS",
    "ONESHOT_MP_COLUMNS",
    "ac_by_tensor",
    "oneshot_mp_ac",
    "SPIKE_COLUMNS",
    "training_spikes",
    "OFF_AC_COLUMNS",
    "kept_off_ac",
]

#: Columns of :func:`training_spikes`.
SPIKE_COLUMNS: tuple[str, ...] = (
    "method",
    "rate (%)",
    "seed",
    "spikes",
    "first spike epoch",
    "train CE before",
    "lowest train acc. (%)",
    "lr at the lowest",
    "best test acc. (%)",
    "best epoch",
    "final train acc. (%)",
    "final train CE",
    "final test acc. (%)",
)

#: Columns of :func:`kept_off_ac`.
OFF_AC_COLUMNS: tuple[str, ...] = (
    "rate (%)",
    "seed",
    "budget",
    "most kept off A-C",
    "kept off A-C at the end",
    "largest rise of kept A-C",
    "rise by epoch",
    "learned rate (%)",
    "projected",
    "edges moved by projection",
    "final test acc. (%)",
)

#: Columns of :func:`ac_by_tensor` and :func:`oneshot_mp_ac`.
AC_BY_TENSOR_COLUMNS: tuple[str, ...] = (
    "method",
    "rate (%)",
    "seed",
    "tensor",
    "weights",
    "kept",
    "A-C",
    "% A-C",
)
ONESHOT_MP_COLUMNS: tuple[str, ...] = (
    "rate (%)",
    "seed",
    "dense epochs",
    "one-shot MP % A-C (ours)",
    "MP % A-C (paper)",
)

VERDICTS: tuple[str, ...] = (
    "holds",
    "holds within seed spread",
    "does not hold",
    "incomplete",
    "not run yet",
)

#: Accuracy in points within which a pruned network counts as "costing little".
LOW_RATE_TOLERANCE = 2.0
#: The dense baseline counts as reproduced within this many points of the paper's.
BASELINE_TOLERANCE = 2.0

_ACC, _AC, _STD, _SEEDS = "accuracy (%)", "% A-C", "± std", "seeds"
_LABEL = {"mp": "MP", "greedy-tc": "greedy TC", "tcmp": "TCMP", "baseline": "baseline"}


@dataclass(frozen=True)
class _Cell:
    value: float
    std: float  # NaN when unknown
    seeds: int | None


def _cell(table: pd.DataFrame, rate: float, method: str, column: str) -> _Cell | None:
    """The (rate, method) entry of ``column``, or None when that run is absent."""
    if (rate, method) not in table.index:
        return None
    row = table.loc[(rate, method)]
    value = row[column]
    if pd.isna(value):
        return None
    std = row[_STD] if column == _ACC and _STD in row.index else math.nan
    seeds = row[_SEEDS] if _SEEDS in row.index else None
    return _Cell(
        float(value),
        math.nan if pd.isna(std) else float(std),
        None if seeds is None or pd.isna(seeds) else int(seeds),
    )


def _one_seed(cells: Sequence[_Cell]) -> bool:
    return any(cell.seeds == 1 for cell in cells)


def _with_seed_note(verdict: str, cells: Sequence[_Cell]) -> str:
    if verdict in ("holds", "holds within seed spread", "does not hold") and _one_seed(cells):
        return f"{verdict} (one seed)"
    return verdict


def _missing_verdict(present: int, needed: int) -> str | None:
    if present == 0:
        return "not run yet"
    if present < needed:
        return "incomplete"
    return None


def _ahead(a: _Cell, b: _Cell) -> str:
    """Verdict for "a is more accurate than b"."""
    difference = a.value - b.value
    if difference <= 0:
        return "does not hold"
    spreads = [s for s in (a.std, b.std) if not math.isnan(s)]
    if spreads and difference <= max(spreads):
        return "holds within seed spread"
    return "holds"


def _worst(verdicts: Sequence[str]) -> str:
    return max(verdicts, key=VERDICTS.index)


def _pct(value: float) -> str:
    return f"{value:.2f}%"


# --------------------------------------------------------------------------- the claims
# Each check returns (the numbers it looked at, in words; the verdict).


def _baseline(table: pd.DataFrame, paper: pd.DataFrame) -> tuple[str, str]:
    ours = _cell(table, 0.0, "baseline", _ACC)
    reference = _cell(paper, 0.0, "baseline", _ACC)
    if ours is None or reference is None:
        return "—", "not run yet"
    gap = ours.value - reference.value
    text = f"{_pct(ours.value)} ({gap:+.2f} points)"
    verdict = "holds" if abs(gap) <= BASELINE_TOLERANCE else "does not hold"
    return text, _with_seed_note(verdict, [ours])


def _mp_disconnects(table: pd.DataFrame, paper: pd.DataFrame) -> tuple[str, str]:
    cells = {rate: _cell(table, rate, "mp", _AC) for rate in (0.95, 0.99)}
    present = {rate: cell for rate, cell in cells.items() if cell is not None}
    text = ", ".join(f"{round(r * 100)}%: {_pct(c.value)}" for r, c in present.items()) or "—"
    if any(cell.value >= 100.0 for cell in present.values()):
        return text, "does not hold"
    missing = _missing_verdict(len(present), len(cells))
    if missing:
        return text, missing
    verdict = "holds" if present[0.99].value <= present[0.95].value else "does not hold"
    return text, verdict


def _tc_consistent(table: pd.DataFrame, paper: pd.DataFrame) -> tuple[str, str]:
    rates = (0.5, 0.75, 0.95, 0.99)
    parts, verdicts, present = [], [], 0
    for method in ("greedy-tc", "tcmp"):
        found = [c for c in (_cell(table, r, method, _AC) for r in rates) if c is not None]
        present += len(found)
        if found:
            lowest = min(cell.value for cell in found)
            rates_text = "1 rate" if len(found) == 1 else f"{len(found)} rates"
            parts.append(f"{_LABEL[method]}: lowest {_pct(lowest)} over {rates_text}")
            verdicts.append("holds" if lowest >= 100.0 else "does not hold")
    text = "; ".join(parts) or "—"
    if "does not hold" in verdicts:
        return text, "does not hold"
    return text, _missing_verdict(present, 2 * len(rates)) or "holds"


def _ahead_at(
    winner: str, loser: str, rates: Sequence[float]
) -> Callable[[pd.DataFrame, pd.DataFrame], tuple[str, str]]:
    def check(table: pd.DataFrame, paper: pd.DataFrame) -> tuple[str, str]:
        parts, verdicts, cells = [], [], []
        for rate in rates:
            a, b = _cell(table, rate, winner, _ACC), _cell(table, rate, loser, _ACC)
            if a is None or b is None:
                continue
            cells += [a, b]
            parts.append(
                f"{round(rate * 100)}%: {_pct(a.value)} vs {_pct(b.value)} "
                f"({a.value - b.value:+.2f})"
            )
            verdicts.append(_ahead(a, b))
        text = "; ".join(parts) or "—"
        if "does not hold" in verdicts:
            return text, _with_seed_note("does not hold", cells)
        missing = _missing_verdict(len(verdicts), len(rates))
        if missing:
            return text, missing
        return text, _with_seed_note(_worst(verdicts), cells)

    return check


def _low_rates_cheap(table: pd.DataFrame, paper: pd.DataFrame) -> tuple[str, str]:
    baseline = _cell(table, 0.0, "baseline", _ACC)
    needed = [(rate, m) for rate in (0.5, 0.75) for m in ("mp", "greedy-tc", "tcmp")]
    found = [(r, m, c) for r, m in needed if (c := _cell(table, r, m, _ACC)) is not None]
    if baseline is None or not found:
        return "—", "not run yet"
    rate, method, worst = min(found, key=lambda item: item[2].value)
    drop = baseline.value - worst.value
    text = (
        f"lowest: {_LABEL[method]} at {round(rate * 100)}%, {_pct(worst.value)} vs "
        f"{_pct(baseline.value)} ({-drop:+.2f})"
    )
    if drop > LOW_RATE_TOLERANCE:
        return text, _with_seed_note("does not hold", [baseline, worst])
    verdict = _missing_verdict(len(found), len(needed)) or "holds"
    return text, _with_seed_note(verdict, [baseline, worst])


@dataclass(frozen=True)
class Finding:
    key: str
    claim: str
    check: Callable[[pd.DataFrame, pd.DataFrame], tuple[str, str]]


FINDINGS: tuple[Finding, ...] = (
    Finding(
        "baseline",
        f"The dense baseline reaches the paper's accuracy (within {BASELINE_TOLERANCE:g} points)",
        _baseline,
    ),
    Finding(
        "low-rates",
        f"At 50% and 75%, MP, greedy TC and TCMP stay within {LOW_RATE_TOLERANCE:g} points "
        "of the baseline",
        _low_rates_cheap,
    ),
    Finding(
        "mp-disconnects",
        "MP leaves connections that are not accessible and co-accessible at 95% and 99%, "
        "more at 99%",
        _mp_disconnects,
    ),
    Finding(
        "tc-consistent",
        "Greedy TC and TCMP keep 100% A-C at every rate",
        _tc_consistent,
    ),
    Finding(
        "tcmp-beats-mp",
        "TCMP is more accurate than MP at 95% and at 99%",
        _ahead_at("tcmp", "mp", (0.95, 0.99)),
    ),
    Finding(
        "tcmp-beats-greedy",
        "TCMP is more accurate than greedy TC at 99%",
        _ahead_at("tcmp", "greedy-tc", (0.99,)),
    ),
)


def check_findings(ours: pd.DataFrame, paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per claim of :data:`FINDINGS`: the claim, the paper's numbers, ours, verdicts.

    ``ours`` and ``paper`` are tables in the layout of :func:`tcmplib.tables.table1_right`
    (``paper`` defaults to :func:`tcmplib.tables.paper_table1_right`). The column
    ``paper's verdict`` runs the same test on the paper's table; it reads ``holds`` for every
    claim of the published table.
    """
    if paper is None:
        paper = paper_table1_right()
    for name, table in (("ours", ours), ("paper", paper)):
        if list(table.index.names) != list(INDEX_NAMES):
            raise ValueError(f"{name}: expected a table indexed by {INDEX_NAMES}")
        for column in (_ACC, _AC):
            if column not in table.columns:
                raise ValueError(f"{name}: expected a column {column!r} (see table1_right)")
    rows = []
    for finding in FINDINGS:
        paper_text, paper_verdict = finding.check(paper, paper)
        ours_text, ours_verdict = finding.check(ours, paper)
        rows.append(
            {
                "claim": finding.claim,
                "paper": paper_text,
                "paper's verdict": paper_verdict,
                "ours": ours_text,
                "verdict": ours_verdict,
            }
        )
    return pd.DataFrame(rows, index=pd.Index([f.key for f in FINDINGS], name="finding"))


def findings_by_recipe(
    tables: Mapping[str, pd.DataFrame], paper: pd.DataFrame | None = None
) -> pd.DataFrame:
    """:func:`check_findings` of several tables side by side (label -> table, e.g. one per
    training recipe): the claim, the paper's numbers, then each label's numbers and verdict
    (columns ``<label>`` and ``<label>: verdict``)."""
    if not tables:
        raise ValueError("tables: expected at least one labelled table")
    columns: dict[str, pd.Series] = {}
    for label, table in tables.items():
        checked = check_findings(table, paper)
        if not columns:
            columns = {"claim": checked["claim"], "paper": checked["paper"]}
        columns[label] = checked["ours"]
        columns[f"{label}: verdict"] = checked["verdict"]
    return pd.DataFrame(columns)


# --------------------------------------------------------------------------- diagnosis


@dataclass(frozen=True)
class MaskCollapse:
    """A learned mask that reached its budget and later lost it (see :func:`mask_collapse`)."""

    epoch: int  # the first evaluated epoch off budget
    last_epoch_on_budget: int
    rate_before: float  # fractions
    rate_after: float
    accuracy_before: float  # class-averaged test accuracy, fractions
    accuracy_after: float
    # Both at ``last_epoch_on_budget``: the state that the disturbance met.
    temperature: float
    lr: float


def mask_collapse(
    history: Sequence[dict[str, float]],
    target_rate: float,
    *,
    tolerance: float = 0.005,
    key: str = "hard_rate",
) -> MaskCollapse | None:
    """The first time a relaxed method's mask falls off its budget after having met it.

    ``history`` holds a run's evaluated epochs (a sweep result's ``history``); ``key`` is
    the history's rate of the crisp mask during training (``hard_rate``: the share of weights
    with psi < 1/2). The mask is on budget while that rate is within ``tolerance`` of
    ``target_rate``, and falls off it when the rate drops below ``target_rate - tolerance``:
    the mask keeps more than its budget. A rate above the band is not a collapse: the crisp
    mask may prune a little more than the soft mass that the budget term holds on target
    (relaxed MP at 50% settles near 51%). Returns None when the rate never reached the budget
    or never fell below it afterwards.
    """
    rows = [row for row in history if key in row and "test_class_avg_accuracy" in row]
    before: dict[str, float] | None = None
    for row in rows:
        if abs(row[key] - target_rate) <= tolerance:
            before = row
        elif before is not None and row[key] < target_rate - tolerance:
            return MaskCollapse(
                epoch=int(row["epoch"]),
                last_epoch_on_budget=int(before["epoch"]),
                rate_before=before[key],
                rate_after=row[key],
                accuracy_before=before["test_class_avg_accuracy"],
                accuracy_after=row["test_class_avg_accuracy"],
                temperature=before.get("temperature", math.nan),
                lr=before.get("lr", math.nan),
            )
    return None


def _records(results_dir: str | os.PathLike[str]) -> list[RunRecord]:
    """The run record of every file of a folder, in name order (each checked; a bad file is
    an error naming it)."""
    return [record for _, record in read_folder(results_dir)]


def ac_by_tensor(
    results_dir: str | os.PathLike[str], methods: Sequence[str] = ("mp",)
) -> pd.DataFrame:
    """Where the kept weights of ``methods``' runs sit, and which are A-C, tensor by tensor.

    One row per (run, tensor) from the ``tensors`` breakdown that result files carry (runs
    made before it was recorded have none and give no rows): method, rate (%), seed, tensor,
    its size, kept weights, A-C weights and the tensor's own % A-C.
    """
    rows = []
    for record in _records(results_dir):
        config = record.config
        if config.method not in methods:
            continue
        for entry in record.tensors or ():
            kept, effective = entry.kept, entry.effective
            rows.append(
                {
                    "method": method_label(config.method),
                    "rate (%)": 100.0 * config.rate,
                    "seed": config.seed,
                    "tensor": entry.tensor,
                    "weights": entry.weights,
                    "kept": kept,
                    "A-C": effective,
                    "% A-C": 100.0 * effective / kept if kept else math.nan,
                }
            )
    return pd.DataFrame(rows, columns=AC_BY_TENSOR_COLUMNS)


def oneshot_mp_ac(results_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """% A-C of plain one-shot MP on trained dense weights, next to the paper's MP column.

    Greedy TC trains the dense network first and, before its own selection, measures the
    % A-C that the global top-k of ``|W|`` (MP without any retraining) would have on exactly
    those weights (``details["mp_percent_ac"]``). This is MP's connectivity on our network
    with nothing learned about the mask: one row per greedy TC run, with the paper's MP
    value at the same rate.
    """
    paper = paper_table1_right()
    rows = []
    for record in _records(results_dir):
        config, details = record.config, record.report.details
        if config.method != "greedy-tc" or "mp_percent_ac" not in details:
            continue
        rate = config.rate
        key = (rate, "mp")
        rows.append(
            {
                "rate (%)": 100.0 * rate,
                "seed": config.seed,
                "dense epochs": int(details.get("dense_epochs", 0)),
                "one-shot MP % A-C (ours)": float(details["mp_percent_ac"]),
                "MP % A-C (paper)": float(paper.loc[key, "% A-C"])
                if key in paper.index
                else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=ONESHOT_MP_COLUMNS)


def _cross_entropy(row: dict[str, float]) -> float:
    """A history row's training cross entropy, apart from any extra loss where it is recorded."""
    return float(row.get("ce", row["loss"]))


def training_spikes(results_dir: str | os.PathLike[str], floor: float = 0.99) -> pd.DataFrame:
    """Evaluated epochs at which a run that had fitted its training split lost it again.

    A *spike* is an evaluated epoch whose training accuracy is below ``floor`` after an
    earlier evaluated epoch reached 100% (the split is fitted early at paper scale, so a drop
    means the optimisation itself was thrown off, not that it had not converged yet); the
    phases of a two-phase method count separately. One row
    per run of the folder, spikes or not: how many evaluated epochs were spikes, the first,
    the training cross entropy at the evaluation before it (how close to zero the fitted loss
    had come), the lowest training accuracy with the learning rate there, the best evaluated test
    accuracy of the last phase and its epoch (to size what a spike cost, not a result: Table 1
    reports the final epoch), and the final training accuracy, training cross entropy and test
    accuracy.
    """
    rows = []
    for record in _records(results_dir):
        config, history = record.config, record.history
        spikes: list[dict[str, float]] = []
        before_first: dict[str, float] | None = None
        # Phase by phase: a two-phase method's accuracy drop at its mask selection is the
        # pruning itself, and its retraining fits the split anew.
        for phase in dict.fromkeys(row.get("phase", 0.0) for row in history):
            in_phase = [row for row in history if row.get("phase", 0.0) == phase]
            fitted = next(
                (i for i, row in enumerate(in_phase) if row["train_accuracy"] >= 1.0), None
            )
            if fitted is None:
                continue
            after = in_phase[fitted + 1 :]
            dropped = [i for i, row in enumerate(after) if row["train_accuracy"] < floor]
            if dropped and not spikes:
                before_first = in_phase[fitted + dropped[0]]  # the evaluation before it
            spikes += [after[i] for i in dropped]
        lowest = min(spikes, key=lambda row: row["train_accuracy"]) if spikes else None
        last_phase = history[-1].get("phase", 0.0) if history else 0.0
        evaluated = [  # of the network Table 1 reports: the last phase's
            row
            for row in history
            if "test_class_avg_accuracy" in row and row.get("phase", 0.0) == last_phase
        ]
        best = max(evaluated, key=lambda row: row["test_class_avg_accuracy"], default=None)
        report = record.report
        rows.append(
            {
                "method": method_label(config.method),
                "rate (%)": 100.0 * config.rate,
                "seed": config.seed,
                "spikes": len(spikes),
                "first spike epoch": int(spikes[0]["epoch"]) if spikes else None,
                "train CE before": _cross_entropy(before_first) if before_first else math.nan,
                "lowest train acc. (%)": 100.0 * lowest["train_accuracy"] if lowest else math.nan,
                "lr at the lowest": lowest["lr"] if lowest else math.nan,
                "best test acc. (%)": 100.0 * best["test_class_avg_accuracy"] if best else math.nan,
                "best epoch": int(best["epoch"]) if best else None,
                "final train acc. (%)": 100.0 * history[-1]["train_accuracy"]
                if history
                else math.nan,
                "final train CE": _cross_entropy(history[-1]) if history else math.nan,
                "final test acc. (%)": 100.0 * report.class_avg_accuracy,
            }
        )
    return pd.DataFrame(rows, columns=SPIKE_COLUMNS)


def kept_off_ac(results_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """TCMP's crisp mask during training: the kept weights that are not on A-C connections.

    TCMP's budget counts the kept weights on accessible and co-accessible connections
    (``learned_rate``); its crisp mask may keep more (``hard_rate``): weights large enough to
    be kept whose units have no path from the input or to the output. The network does not
    compute with them (their gate is 0), so neither the cross entropy nor the budget sees
    them. One row per TCMP run of the folder, from its evaluated epochs: the budget (kept
    weights at the target rate), the most and the final number of such weights, the largest
    rise of the kept A-C weights between two evaluations and the epoch it was seen at (a
    rise means units were reconnected), and the end: the learned rate, whether the mask had
    to be projected onto the budget and how many connections that changed, the final test
    accuracy.
    """
    rows = []
    for record in _records(results_dir):
        config, report = record.config, record.report
        if config.method != "tcmp":
            continue
        total = report.total_weights
        evaluated = [row for row in record.history if "hard_rate" in row and "learned_rate" in row]
        kept = [round((1.0 - row["hard_rate"]) * total) for row in evaluated]
        kept_ac = [round((1.0 - row["learned_rate"]) * total) for row in evaluated]
        off = [k - a for k, a in zip(kept, kept_ac, strict=True)]
        rises = [(kept_ac[i] - kept_ac[i - 1], i) for i in range(1, len(kept_ac))]
        rise, at = max(rises, default=(0, None))
        details = report.details
        rows.append(
            {
                "rate (%)": 100.0 * config.rate,
                "seed": config.seed,
                "budget": keep_count(total, config.rate),
                "most kept off A-C": max(off, default=0),
                "kept off A-C at the end": off[-1] if off else 0,
                "largest rise of kept A-C": rise,
                "rise by epoch": int(evaluated[at]["epoch"]) if at is not None else None,
                "learned rate (%)": 100.0 * float(details.get("learned_rate", math.nan)),
                "projected": bool(details.get("projected", 0.0)),
                "edges moved by projection": int(details.get("projection_changed_edges", 0)),
                "final test acc. (%)": 100.0 * report.class_avg_accuracy,
            }
        )
    return pd.DataFrame(rows, columns=OFF_AC_COLUMNS)
