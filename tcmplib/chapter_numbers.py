"""The numbers and sentences that the experiment chapters (7, 8 and 9) quote in their prose.

A chapter's prose quotes its results through ``myst_nb.glue``: a cell computes a value, and
the text refers to it by name, so no number is typed by hand. The computations behind those
names live here, one function per section, each returning a ``{name: value}`` mapping that
:func:`glue_numbers` hands to ``glue``; a chapter cell calls one of them. Every value is
computed from the committed records (run records of a results folder, traces, benchmark
files), never typed: a rerun changes the prose with the numbers. Where a record is missing,
the sentence says so (or the value is a dash) instead of failing, as the chapters did.

The same pattern for chapter 2b is :func:`tcmplib.recipe_plots.recipe_chapter_numbers`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from tcmplib.diagnostics import Reconnection, differing_epochs, reconnection, trace_rows
from tcmplib.model import GCNConfig
from tcmplib.pruning import METHODS, PruneReport, method_label
from tcmplib.records import RunRecord, read_folder, read_record
from tcmplib.run import RunConfig
from tcmplib.tables import paper_table1_left, paper_table1_right, table1_right

__all__ = [
    "Numbers",
    "grid_cells",
    "selected_recipe_numbers",
    "glue_numbers",
    "experiments_numbers",
    "low_rate_pmp",
    "tiny_numbers",
    "paper_run",
    "coverage_numbers",
    "seed_coverage",
    "table1_left_with_ours",
    "baseline_numbers",
    "finding_numbers",
    "pmp_revision",
    "pmp_runs",
    "pmp_projection_numbers",
    "RelaxedRun",
    "relaxed_runs",
    "find_relaxed",
    "collapse_events",
    "collapse_numbers",
    "off_ac_numbers",
    "TRACED_TCMP",
    "TracedReconnection",
    "traced_reconnection",
    "reconnection_numbers",
    "spike_numbers",
    "trace_numbers",
    "architecture_numbers",
    "discussion_numbers",
    "stage_numbers",
    "network_numbers",
]

#: What a chapter glues: name -> value (a number, or a string already formatted for the prose).
Numbers = dict[str, Any]

_DASH = "—"  # a number whose run is missing


def glue_numbers(numbers: Mapping[str, Any]) -> None:
    """``glue`` every ``name: value`` of ``numbers`` for the prose, without displaying it.

    Needs ``myst_nb`` (the book extra); it is imported here so that the rest of the module
    works without it.
    """
    from myst_nb import glue

    for name, value in numbers.items():
        glue(name, value, display=False)


def _shown(path: str | os.PathLike[str]) -> str:
    """A results folder as the book names it: relative to the checkout when inside it."""
    from tcmplib.sweep import project_root

    path = Path(path)
    root = project_root(path)
    if not (root / "_toc.yml").is_file():  # not inside a checkout
        return str(path)
    return path.resolve().relative_to(root).as_posix()


# --------------------------------------------------------------------------- chapter 7


def low_rate_pmp(results_dir: str | os.PathLike[str] | None, prefix: str = "") -> Numbers:
    """PMP's accuracy (%) at 50 and 75% in a results folder, as ``<prefix>pmp_50_acc`` and
    ``<prefix>pmp_75_acc``; NaN for a folder that does not exist (e.g. a comparison recipe
    never run under this profile)."""
    from tcmplib.tables import load_results

    keys = [f"{prefix}pmp_{rate}_acc" for rate in (50, 75)]
    if results_dir is None or not Path(results_dir).is_dir():
        return dict.fromkeys(keys, math.nan)
    ours = table1_right(load_results(results_dir))
    return {
        key: float(ours.loc[(rate, "pmp"), "accuracy (%)"])
        for key, rate in zip(keys, (0.5, 0.75), strict=True)
    }


def experiments_numbers(
    results_dir: str | os.PathLike[str], *, dataset: str, profile: str, seeds: int
) -> Numbers:
    """What chapter 7's "What the table says" quotes: our Table 1-right at 95 and 99%,
    the paper's at 99%, the spread at low rates, and the caveat on MP's row at 99%.

    Accuracies and % A-C are floats (the prose formats them); the comparison words
    (``tcmp_vs_mp_95`` ...) say "ahead of", "behind" or "on par with" (within one point).
    Every configuration of the grid must have a result (the chapter runs the sweep first).
    """
    from tcmplib.profiles import get_profile
    from tcmplib.tables import load_results

    results = load_results(results_dir)
    ours, paper = table1_right(results), paper_table1_right()

    def ours_at(rate: float, method: str, column: str) -> float:
        return float(ours.loc[(rate, method), column])

    def paper_at(rate: float, method: str, column: str) -> float:
        return float(paper.loc[(rate, method), column])

    numbers: Numbers = {
        "data_label": "FPHA" if dataset == "fpha" else "the synthetic hand actions",
        "profile": profile,
        "epochs": get_profile(profile).epochs,
        "runs": len(results),
        "seeds": seeds,
        "base_acc": ours_at(0.0, "baseline", "accuracy (%)"),
    }
    for method in ("mp", "greedy-tc", "tcmp", "pmp"):
        for rate in (0.95, 0.99):
            key = f"{method.replace('-', '_')}_{round(rate * 100)}"
            numbers[f"{key}_acc"] = ours_at(rate, method, "accuracy (%)")
            numbers[f"{key}_ac"] = ours_at(rate, method, "% A-C")
            numbers[f"{key}_params"] = int(ours_at(rate, method, "# parameters"))
    for method in ("mp", "greedy-tc", "tcmp"):
        key = f"paper_{method.replace('-', '_')}_99"
        numbers[f"{key}_acc"] = paper_at(0.99, method, "accuracy (%)")
        numbers[f"{key}_ac"] = paper_at(0.99, method, "% A-C")
    numbers["paper_mp_95_ac"] = paper_at(0.95, "mp", "% A-C")
    for rate in (0.95, 0.99):
        pct = round(rate * 100)
        tcmp = ours_at(rate, "tcmp", "accuracy (%)")
        numbers[f"tcmp_vs_mp_{pct}"] = _compare(tcmp, ours_at(rate, "mp", "accuracy (%)"))
        greedy = ours_at(rate, "greedy-tc", "accuracy (%)")
        numbers[f"tcmp_vs_greedy_{pct}"] = _compare(tcmp, greedy)
    # The paper's three methods; PMP's low-rate rows are quoted on their own.
    methods = ("mp", "greedy-tc", "tcmp")
    low = [ours_at(r, m, "accuracy (%)") for r in (0.5, 0.75) for m in methods]
    numbers["low_min"], numbers["low_max"] = min(low), max(low)
    numbers.update(low_rate_pmp(results_dir))
    mp_ac_99 = ours_at(0.99, "mp", "% A-C")
    numbers["mp_ac_99_words"] = "below 100%" if mp_ac_99 < 100 else "still at 100%"
    numbers["mp_99_caveat"] = _mp_99_caveat(_final_mask_rate(results_dir, results, "mp", 0.99))
    return numbers


def _compare(a: float, b: float, margin: float = 1.0) -> str:
    """How accuracy ``a`` stands against ``b``, in words (within ``margin`` points: on par)."""
    if abs(a - b) < margin:
        return "on par with"
    return "ahead of" if a > b else "behind"


def _final_mask_rate(
    results_dir: str | os.PathLike[str], results: pd.DataFrame, method: str, rate: float
) -> float:
    """The relaxed mask at the last epoch (share of weights with psi < 1/2, in %), mean over
    seeds, before the final projection to the exact budget."""
    files = results.loc[(results["method"] == method) & (results["target_rate"] == rate), "file"]
    values = [read_record(Path(results_dir) / name).history[-1]["hard_rate"] for name in files]
    return 100 * sum(values) / len(values)


def _mp_99_caveat(hard_rate: float) -> str:
    if abs(hard_rate - 99.0) <= 0.5:
        return (
            f"Its relaxed mask ended the run with {hard_rate:.2f}% of the weights below "
            "psi = 1/2, on its budget, so the final top-c projection (chapter 3) changed "
            "little and MP's accuracy there measures the mask it learned."
        )
    return (
        f"Its relaxed mask ended the run with only {hard_rate:.2f}% of the weights below "
        "psi = 1/2, far from the target, so the network evaluated is the exact top-c "
        "projection of that mask, made without retraining (chapter 3). MP's accuracy there "
        "measures this projection as well as disconnection; we have not separated the two."
    )


# --------------------------------------------------------------------------- chapter 8


def paper_run(
    results_dir: str | os.PathLike[str], method: str, rate: float = 0.0, seed: int = 0
) -> RunRecord | None:
    """The record of one FPHA paper-scale run (recipe as written) in a folder, or None."""
    from tcmplib.sweep import find_result

    config = RunConfig(dataset="fpha", method=method, rate=rate, seed=seed, profile="paper")
    path = find_result(results_dir, config)
    return None if path is None else read_record(path)


def coverage_numbers(
    results_dir: str | os.PathLike[str], seeds: int, *, grid: str = "table1"
) -> Numbers:
    """How much of the FPHA paper-scale grid has a record (a dry run of the sweep: nothing
    is trained): ``done`` and ``total`` runs under the current code, the ``hours`` of
    training the folder's records took, and a ``coverage_sentence`` on what our rows
    average. A run the sweep would make again although the folder holds a record of the same
    method, rate and seed was computed by an older revision of its method (its identity
    differs from the current one): the sentence counts those, by method."""
    from tcmplib.sweep import sweep
    from tcmplib.tables import load_results

    status = sweep(grid, profile="paper", dataset="fpha", seeds=seeds, results_dir=results_dir,
                   dry_run=True)  # fmt: skip
    results = load_results(results_dir)
    present = set(zip(results["method"], results["target_rate"], results["seed"], strict=True))
    older: dict[str, int] = {}
    for config in status.pending:
        if (config.method, config.rate, config.seed) in present:
            older[config.method] = older.get(config.method, 0) + 1
    done = len(status.reused)
    missing = len(status.pending) - sum(older.values())
    if not status.pending:
        sentence = (
            f"every configuration has its {seeds} seeds, so each of our rows is a mean over "
            f"{seeds} runs, with their sample standard deviation"
        )
    elif missing:
        sentence = (
            "where a configuration has fewer seeds, our rows average fewer runs (the "
            "`seeds` column says how many), and the spread stays empty where only one run exists"
        )
    else:
        sentence = f"every configuration has its {seeds} seeds in the folder"
    if older:
        counts = ", ".join(f"{n} of {method_label(m)}" for m, n in older.items())
        sentence += (
            f"; {sum(older.values())} of the records ({counts}) were computed by an earlier "
            "revision of their method, which the rows show as they are and which the sweep "
            "would run again under the current one"
        )
    return {
        "done": done,
        "total": done + len(status.pending),
        "hours": float(results["wall_time_s"].sum() / 3600),
        "coverage_sentence": sentence,
    }


def seed_coverage(results: pd.DataFrame) -> pd.DataFrame:
    """Runs per (method, rate) of :func:`tcmplib.tables.load_results`: one row per method,
    one column per rate (as "95%")."""
    labelled = results.assign(method=results["method"].map(method_label))
    coverage = labelled.pivot_table(index="method", columns="target_rate", values="seed",
                                    aggfunc="count", fill_value=0, sort=False)  # fmt: skip
    return coverage.rename(columns=lambda rate: f"{rate:.0%}")


def table1_left_with_ours(
    ours: pd.DataFrame, results_dir: str | os.PathLike[str], paper: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The paper's Table 1-left (published numbers) with our dense baseline as a last row.

    ``ours`` is :func:`tcmplib.tables.table1_right` of our runs; without a baseline there the
    table is the paper's alone. Booleans are shown as check marks, the accuracy as text
    (ours with its spread over seeds).
    """
    published = paper_table1_left() if paper is None else paper.copy()
    published["source"] = "paper (published)"
    published["accuracy_percent"] = published["accuracy_percent"].map("{:.2f}".format)
    if (0.0, "baseline") in ours.index:
        base = ours.loc[(0.0, "baseline")]
        spread = "" if pd.isna(base["± std"]) else f" ± {base['± std']:.2f}"
        ours_row = {"method": f"our reconstruction ({base['seeds']} seed(s))", "ref": "",
                    "color": False, "depth": False, "pose": True,
                    "accuracy_percent": f"{base['accuracy (%)']:.2f}{spread}",
                    "source": _shown(results_dir)}  # fmt: skip
        published = pd.concat([published, pd.DataFrame([ours_row])], ignore_index=True)
    return (
        published.replace({True: "✓", False: "✗"})
        .fillna("")
        .rename(columns={"accuracy_percent": "accuracy (%)"})
    )


def baseline_numbers(baseline: RunRecord | None) -> Numbers:
    """``fit_epoch``: the first evaluated epoch at which the dense baseline fits its training
    split (100% training accuracy), "never", or a dash without a baseline."""
    if baseline is None:
        return {"fit_epoch": _DASH}
    fitted = [row["epoch"] for row in baseline.history if row["train_accuracy"] == 1.0]
    return {"fit_epoch": f"{fitted[0]:,}" if fitted else "never"}


def finding_numbers(findings: pd.DataFrame) -> Numbers:
    """``finding_<key>`` (the verdict) and ``numbers_<key>`` (our numbers behind it) for each
    row of :func:`tcmplib.findings.check_findings`, dashes in keys turned to underscores."""
    numbers: Numbers = {}
    for key, verdict in findings["verdict"].items():
        name = str(key).replace("-", "_")
        numbers[f"finding_{name}"] = verdict
        numbers[f"numbers_{name}"] = findings.loc[key, "ours"]
    return numbers


def _holding(verdicts: pd.Series) -> str:
    """How many claims hold, and how many more hold only within the spread over seeds."""
    holds = int((verdicts == "holds").sum())
    within = int((verdicts == "holds within seed spread").sum())
    return f"{holds}" + (f" (and {within} more within the spread over seeds)" if within else "")


def _cell_text(table: pd.DataFrame, rate: float, method: str, column: str) -> str:
    """One cell of a Table 1-right as text: accuracy with its std (none for one seed), or
    % A-C; a dash if absent."""
    if (rate, method) not in table.index:
        return "—"
    row = table.loc[(rate, method)]
    if column == "% A-C":
        return f"{row['% A-C']:.2f}%"
    if pd.isna(row["± std"]):
        return f"{row['accuracy (%)']:.2f}% (one seed)"
    return f"{row['accuracy (%)']:.2f} ± {row['± std']:.2f}%"


def selected_recipe_numbers(selected: pd.DataFrame, both: pd.DataFrame) -> Numbers:
    """Chapter 8's opening section: the verdicts under the selected recipe (``sel_``) and as
    written (``aw_``) from :func:`tcmplib.findings.findings_by_recipe` (columns "selected"
    and "as written"), and the cells of the selected Table 1-right that the prose quotes."""
    spread = {
        "holds within seed spread": "TCMP is ahead at both rates, by less than the spread "
        "over seeds",
        "holds": "TCMP is ahead at both rates, beyond the spread over seeds",
    }
    verdict = str(both.loc["tcmp-beats-mp", "selected: verdict"])
    return {
        "sel_holding": _holding(both["selected: verdict"]),
        "aw_holding": _holding(both["as written: verdict"]),
        "sel_baseline": _cell_text(selected, 0.0, "baseline", "accuracy"),
        "sel_low_rates": str(both.loc["low-rates", "selected"]),
        "sel_mp_99": _cell_text(selected, 0.99, "mp", "% A-C"),
        "sel_mp_95": _cell_text(selected, 0.95, "mp", "% A-C"),
        "aw_mp_99": str(both.loc["mp-disconnects", "as written"]).split("99%: ")[-1],
        "sel_tcmp_vs_mp": f"{both.loc['tcmp-beats-mp', 'selected']}. "
        + spread.get(verdict, f"The claim's verdict: {verdict}"),
        "sel_tcmp_vs_greedy": str(both.loc["tcmp-beats-greedy", "selected"]),
        "sel_pmp_high": f"{_cell_text(selected, 0.95, 'pmp', 'accuracy')} at 95% and "
        f"{_cell_text(selected, 0.99, 'pmp', 'accuracy')} at 99% (MP: "
        f"{_cell_text(selected, 0.95, 'mp', 'accuracy')} and "
        f"{_cell_text(selected, 0.99, 'mp', 'accuracy')})",
    }


def mp_revision(record: RunRecord) -> int:
    """4 for a relaxed MP run whose budget term counts the kept weights (``budget="kept"``);
    of the soft budget's runs (their identities predate the option), 3 for one whose masked
    weights were exempt from the recipe's weight decay, 2 for any other."""
    options = record.identity["options"]
    if options.get("budget", "soft") == "kept":
        return 4
    return 3 if options.get("masked_decay", True) is False else 2


def _mp_runs(records: Iterable[RunRecord], rate: float, revision: int) -> list[RunRecord]:
    found = (
        record
        for record in records
        if record.config.method == "mp"
        and record.config.rate == rate
        and mp_revision(record) == revision
    )
    return sorted(found, key=lambda record: record.config.seed)


def _soft_rates(runs: Sequence[RunRecord]) -> str:
    """The soft rate at the last evaluation, run by run, or "no run yet"."""
    if not runs:
        return "no run yet"
    return ", ".join(f"{r.history[-1]['soft_rate']:.3f} (seed {r.config.seed})" for r in runs)


def mp_soft_rate_numbers(records: Iterable[RunRecord], prefix: str, revision: int = 2) -> Numbers:
    """``<prefix>mp_soft``: relaxed MP's soft rate at the last evaluation (lowest-highest over
    the seeds) at each rate with a run, against its budget, for the runs of ``revision``
    (:func:`mp_revision`) among ``records``; "no run of revision N" if there is none."""
    found = list(records)
    parts = []
    for rate in sorted({r.config.rate for r in found if r.config.method == "mp"}):
        runs = _mp_runs(found, rate, revision=revision)
        if runs:
            soft = [r.history[-1]["soft_rate"] for r in runs]
            parts.append(f"{_span(soft, 3)} against {rate:.2f}")
    return {f"{prefix}mp_soft": "; ".join(parts) if parts else f"no run of revision {revision}"}


def latest_recipe_numbers(
    latest: pd.DataFrame,
    selected: pd.DataFrame,
    records: Sequence[RunRecord],
    superseded: Sequence[RunRecord] = (),
) -> Numbers:
    """Chapter 8's section on the grid under way under the fourth round's recipe: how many of
    its runs (``records``) are in; MP's % A-C and accuracy at 95 and 99% there (with their
    seeds), under the selected recipe and in the paper, a dash where a table has no such row;
    the rate its crisp mask (psi < 1/2) prunes at the last evaluation, run by run, for MP of
    revision 4 (``latest_mp_hard``); and, from the ``superseded`` runs of revision 2
    (:func:`mp_revision`), the soft rate at the last evaluation at 95% (``rev2_mp95_soft``)
    and, at 99%, each run's accuracy with its soft rate and training accuracy at the first
    evaluation (``rev2_mp99_sentence``)."""
    numbers: Numbers = {"latest_runs": len(records)}
    paper = paper_table1_right()
    for rate in (0.95, 0.99):
        key = f"{round(100 * rate)}"
        seeds = latest.loc[(rate, "mp"), "seeds"] if (rate, "mp") in latest.index else 0
        numbers |= {
            f"latest_mp{key}_ac": _cell_text(latest, rate, "mp", "% A-C"),
            f"latest_mp{key}_acc": _cell_text(latest, rate, "mp", "accuracy"),
            f"latest_tcmp{key}_acc": _cell_text(latest, rate, "tcmp", "accuracy"),
            f"latest_mp{key}_seeds": 0 if pd.isna(seeds) else int(seeds),
            f"sel_mp{key}_ac": _cell_text(selected, rate, "mp", "% A-C"),
            f"paper_mp{key}_ac": f"{paper.loc[(rate, 'mp'), '% A-C']:.2f}%",
        }
    current = [run for rate in (0.95, 0.99) for run in _mp_runs(records, rate, revision=4)]
    numbers["latest_mp_hard"] = (
        ", ".join(
            f"{r.history[-1]['hard_rate']:.4f} ({100 * r.config.rate:.0f}%, seed {r.config.seed})"
            for r in current
        )
        if current
        else "no run yet"
    )
    numbers["rev2_mp95_soft"] = _soft_rates(_mp_runs(superseded, 0.95, revision=2))
    described = []
    for record in _mp_runs(superseded, 0.99, revision=2):
        first = record.history[0]
        described.append(
            f"seed {record.config.seed} ends at {100 * record.report.class_avg_accuracy:.2f}% "
            f"(at epoch {first['epoch']}: soft rate {first['soft_rate']:.3f}, training "
            f"accuracy {100 * first['train_accuracy']:.1f}%)"
        )
    numbers["rev2_mp99_sentence"] = "; ".join(described) if described else "no run"
    return numbers


def grid_cells(table: pd.DataFrame, runs: int, prefix: str) -> Numbers:
    """A grid under way, as its section quotes it: how many ``runs`` are in, and the
    baseline's, MP's and TCMP's cells at 95 and 99% (accuracy, and % A-C for MP), each a dash
    while the grid has no such row."""
    numbers: Numbers = {f"{prefix}runs": runs}
    numbers[f"{prefix}baseline"] = _cell_text(table, 0.0, "baseline", "accuracy")
    for rate in (0.95, 0.99):
        key = f"{round(100 * rate)}"
        for method in ("mp", "tcmp"):
            numbers[f"{prefix}{method}{key}_acc"] = _cell_text(table, rate, method, "accuracy")
        numbers[f"{prefix}mp{key}_ac"] = _cell_text(table, rate, "mp", "% A-C")
    return numbers


def pmp_revision(record: RunRecord) -> int:
    """1 for a PMP run whose band stayed at the prior's quantile (its identity predates the
    option ``threshold``, or sets it to "prior"), 2 for one whose band followed the ranks."""
    return 2 if record.identity["options"].get("threshold", "prior") == "rank" else 1


def pmp_runs(
    results_dir: str | os.PathLike[str], rates: Sequence[float] = (0.95, 0.99)
) -> list[RunRecord]:
    """The PMP runs at ``rates`` in ``<results_dir>-superseded`` and ``results_dir``, every
    revision (:func:`pmp_revision`), in that order and by file name within each."""
    folder = Path(results_dir)
    return [
        record
        for where in (folder.parent / f"{folder.name}-superseded", folder)
        if where.is_dir()
        for _, record in read_folder(where)
        if record.config.method == "pmp" and record.config.rate in rates
    ]


def _span(values: Sequence[float], digits: int = 1) -> str:
    low, high = (f"{value:.{digits}f}" for value in (min(values), max(values)))
    return low if low == high else f"{low}-{high}"


def pmp_projection_numbers(
    results_dir: str | os.PathLike[str], prefix: str = "", rates: Sequence[float] = (0.95, 0.99)
) -> Numbers:
    """``<prefix>pmp_projection``: a sentence per PMP revision on its runs at ``rates`` in
    ``results_dir`` and ``<results_dir>-superseded``: the soft network's accuracy at its
    last evaluation, the share of latent weights below the prior's ``a(r)`` then, and the
    accuracy after the projection onto the budget (what the run reports)."""
    folder = Path(results_dir)
    found = pmp_runs(folder, rates)
    band = {1: "its band at the prior's quantile a(r)", 2: "its band at the budget's ranks"}
    sentences = []
    for revision in (1, 2):
        runs = [record for record in found if pmp_revision(record) == revision]
        if not runs:
            sentences.append(f"PMP revision {revision} ({band[revision]}) has no run here yet.")
            continue
        last = [record.history[-1] for record in runs]
        rate_list = " and ".join(f"{100 * r:g}%" for r in sorted({x.config.rate for x in runs}))
        sentences.append(
            f"PMP revision {revision} ({band[revision]}; {_count(len(runs), 'run')} at "
            f"{rate_list}): "
            f"at the last evaluation the soft networks tested at "
            f"{_span([100 * row['test_class_avg_accuracy'] for row in last])}% with "
            f"{_span([100 * row['threshold_rate'] for row in last])}% of the latent weights "
            f"below a(r), and after the projection onto the budget at "
            f"{_span([100 * x.report.class_avg_accuracy for x in runs])}%."
        )
    in_table: dict[tuple[int, float], int] = {}
    for _, record in read_folder(folder) if folder.is_dir() else []:
        if record.config.method == "pmp":
            key = (pmp_revision(record), record.config.rate)
            in_table[key] = in_table.get(key, 0) + 1
    table = "; ".join(
        f"revision {revision} at {100 * rate:g}% ({_count(count, 'seed')})"
        for (revision, rate), count in sorted(in_table.items(), key=lambda kv: kv[0][::-1])
    )
    return {
        f"{prefix}pmp_projection": " ".join(sentences),
        f"{prefix}pmp_in_table": table or "no PMP run",
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


@dataclass(frozen=True)
class RelaxedRun:
    """An MP or TCMP run of the collapse scan, current or superseded (revision 1)."""

    results: str  # "current" or "revision 1 (superseded)"
    config: RunConfig
    report: PruneReport

    @property
    def current(self) -> bool:
        return self.results == "current"


def relaxed_runs(results_dir: str | os.PathLike[str]) -> list[RelaxedRun]:
    """Every MP and TCMP run of ``<results>-superseded`` (revision 1, if that folder exists)
    and of ``results_dir`` (current), in that order and by file name within each."""
    folder = Path(results_dir)
    runs = []
    for where, label in ((folder.parent / f"{folder.name}-superseded",
                          "revision 1 (superseded)"), (folder, "current")):  # fmt: skip
        for _, record in read_folder(where) if where.is_dir() else []:
            if record.config.method in ("mp", "tcmp"):
                runs.append(RelaxedRun(label, record.config, record.report))
    return runs


def find_relaxed(
    runs: Iterable[RelaxedRun], *, current: bool, method: str = "tcmp", rate: float = 0.99,
    seed: int = 0,
) -> PruneReport | None:  # fmt: skip
    """The report of one run among ``runs`` (current or superseded), or None."""
    return next((run.report for run in runs if run.current == current
                 and run.config.method == method and run.config.rate == rate
                 and run.config.seed == seed), None)  # fmt: skip


def _collapse_rows(runs: Iterable[RelaxedRun]) -> list[dict[str, Any]]:
    from tcmplib.findings import mask_collapse

    rows = []
    for run in runs:
        config, report = run.config, run.report
        found = mask_collapse(report.history, config.rate)
        if found:
            rows.append({
                "results": run.results, "method": method_label(config.method),
                "rate (%)": 100 * config.rate, "seed": config.seed,
                "last epoch on budget": found.last_epoch_on_budget, "epoch off": found.epoch,
                "mask rate before (%)": round(100 * found.rate_before, 2),
                "mask rate after (%)": round(100 * found.rate_after, 2),
                "accuracy before (%)": round(100 * found.accuracy_before, 2),
                "accuracy after (%)": round(100 * found.accuracy_after, 2),
                "final accuracy (%)": round(100 * report.class_avg_accuracy, 2),
                "band sqrt(T ln 3)": round(math.sqrt(found.temperature * math.log(3)), 4),
                "learning rate": round(found.lr, 4),
            })  # fmt: skip
    return rows


def collapse_events(runs: Iterable[RelaxedRun]) -> pd.DataFrame:
    """One row per run whose mask met its budget and later fell off it
    (:func:`tcmplib.findings.mask_collapse`), with the state at the last epoch on budget."""
    return pd.DataFrame(_collapse_rows(runs))


def collapse_numbers(runs: Sequence[RelaxedRun]) -> Numbers:
    """The collapse section's numbers: events found (``collapses``), current runs scanned
    and how many of them collapsed, which, the first event in words (``collapse_sentence``),
    and the rerun of TCMP at 99%, seed 0, under revision 2 (``rerun_sentence``)."""
    events = _collapse_rows(runs)
    current = [event for event in events if event["results"] == "current"]
    return {
        "collapses": len(events),
        "current_relaxed_runs": sum(run.current for run in runs),
        "current_collapses": len(current),
        "current_collapse_runs": "; ".join(
            f"{event['method']} at {event['rate (%)']:.0f}%, seed {event['seed']} (off its "
            f"budget by epoch {event['epoch off']:,})" for event in current
        ) or "none",
        "collapse_sentence": _collapse_sentence(events[0]) if events
        else "No run lost its budget after reaching it.",
        "rerun_sentence": _rerun_sentence(find_relaxed(runs, current=False),
                                          find_relaxed(runs, current=True)),
    }  # fmt: skip


def _collapse_sentence(event: Mapping[str, Any]) -> str:
    return (
        f"In {event['method']} at {event['rate (%)']:.0f}% (seed {event['seed']}, "
        f"{event['results']}), the mask held {event['mask rate before (%)']:.2f}% of the weights "
        f"pruned until epoch {event['last epoch on budget']:,}, with "
        f"{event['accuracy before (%)']:.2f}% test accuracy; by epoch {event['epoch off']:,} "
        f"only {event['mask rate after (%)']:.2f}% were pruned. At epoch "
        f"{event['last epoch on budget']:,} the band half-width was "
        f"{event['band sqrt(T ln 3)']:.4f} and the learning rate {event['learning rate']:.4f}. "
        f"The run ended at {event['final accuracy (%)']:.2f}%."
    )


def _rerun_sentence(old: PruneReport | None, new: PruneReport | None) -> str:
    """TCMP at 99%, seed 0, rerun under revision 2 (``new``) against revision 1 (``old``)."""
    if new is None:
        return "The rerun of TCMP at 99% with revision 2 is not in the results yet."
    before = "" if old is None else f" against {100 * old.class_avg_accuracy:.2f}% for revision 1"
    late = [row for row in new.history if "hard_rate" in row and row["epoch"] >= 500]
    worst = max(abs(row["hard_rate"] - 0.99) for row in late)
    if worst > 0.005:
        return (
            f"The rerun of TCMP at 99%, seed 0, with revision 2 still left its budget: from epoch "
            f"500 on the share of weights with psi < 1/2 moved up to {100 * worst:.2f} points from "
            f"the target; it ends at {100 * new.class_avg_accuracy:.2f}%{before}."
        )
    details = new.details
    how = "projected onto the budget" if details["projected"] else "used as learned, no projection"
    return (
        f"The rerun of TCMP at 99%, seed 0, with revision 2 kept its mask on budget to the end: "
        f"from epoch 500 on, the share of weights with psi < 1/2 stayed within "
        f"{100 * worst:.2f} points of the target, the learned mask ended at "
        f"{100 * details['learned_rate']:.2f}% ({how}), "
        f"and the network classifies at {100 * new.class_avg_accuracy:.2f}%{before}."
    )


#: The TCMP run traced epoch by epoch for the reconnection section: (rate, seed).
TRACED_TCMP: tuple[float, int] = (0.99, 2)


def off_ac_numbers(off_ac: pd.DataFrame) -> Numbers:
    """The reconnection section's counts from :func:`tcmplib.findings.kept_off_ac`: the most
    kept weights off A-C per rate (``off_ac_95``, ``off_ac_99``, ``off_ac_low``) and runs,
    the rises of kept A-C weights in the runs at 99% other than the traced one, the number
    of TCMP runs, and the final accuracies at 99% by seed (``tcmp_99_seeds``)."""
    numbers: Numbers = {}
    for rate in (95.0, 99.0):
        most = off_ac.loc[off_ac["rate (%)"] == rate, "most kept off A-C"]
        numbers[f"off_ac_{rate:.0f}"] = f"{most.min():,} to {most.max():,}" if len(most) else _DASH
        numbers[f"off_ac_{rate:.0f}_runs"] = f"{len(most)}"
    low = off_ac.loc[off_ac["rate (%)"] <= 75.0, "most kept off A-C"]
    numbers["off_ac_low"] = f"{low.max():,}" if len(low) else _DASH
    rate, seed = TRACED_TCMP
    others = off_ac[(off_ac["rate (%)"] == 100 * rate) & (off_ac["seed"] != seed)]
    numbers["off_ac_other_rises"] = "; ".join(
        f"seed {row['seed']}: {row['largest rise of kept A-C']:,} by epoch {row['rise by epoch']:,}"
        for row in others.to_dict("records")) or _DASH  # fmt: skip
    numbers["tcmp_runs"] = f"{len(off_ac)}"
    at_99 = off_ac[off_ac["rate (%)"] == 99.0].sort_values("seed")
    numbers["tcmp_99_seeds"] = (
        ", ".join(
            f"{acc:.2f}% (seed {seed})"
            for seed, acc in zip(at_99["seed"], at_99["final test acc. (%)"], strict=True)
        )
        or _DASH
    )
    return numbers


@dataclass(frozen=True)
class TracedReconnection:
    """A TCMP trace (``scripts/trace_run.py``) with the reconnection found in it and the
    sweep's record of the same run."""

    rows: list[dict[str, Any]]
    found: Reconnection
    record: RunRecord

    def tensors(self) -> pd.DataFrame:
        """Per weight tensor: kept and A-C weights before, at the peak, at the end; step growth."""
        return pd.DataFrame(self.found.tensors)


def traced_reconnection(
    results_dir: str | os.PathLike[str], lr_max: float = 0.01
) -> TracedReconnection | None:
    """The trace of :data:`TRACED_TCMP` in ``<results>/diagnostics/tcmp`` and its
    reconnection; None without the trace, the run's record, or a reconnection in it."""
    rate, seed = TRACED_TCMP
    name = f"trace_tcmp_rate{rate:.4f}_seed{seed}_lrmax{lr_max:g}.json"
    trace_file = Path(results_dir) / "diagnostics" / "tcmp" / name
    record = paper_run(results_dir, "tcmp", rate, seed)
    if not trace_file.is_file() or record is None:
        return None
    rows = trace_rows(trace_file)
    found = reconnection(rows)
    return None if found is None else TracedReconnection(rows, found, record)


_RECONNECTION_KEYS: tuple[str, ...] = (
    "rec_match", "rec_start", "rec_onset", "rec_before", "rec_reservoir",
    "rec_reservoir_tensors", "rec_consistency", "rec_reservoir_share", "rec_ac_before",
    "rec_budget_term_before", "rec_peak", "rec_ac_peak", "rec_end", "rec_ac_end",
    "rec_budget_term_end", "rec_grown", "rec_grown_before", "rec_grown_peak",
    "rec_grown_end", "rec_growth", "rec_lead", "rec_other_growth", "rec_lr",
    "rec_cap", "rec_final", "rec_off_at_peak", "rec_ce_before",
)  # fmt: skip


def reconnection_numbers(traced: TracedReconnection | None) -> Numbers:
    """The traced reconnection in numbers (``rec_*``): whether the trace repeats the run,
    the epochs of the rise, the reservoir of kept weights off A-C and where it sat, the
    tensor whose kept weights grew most, the budget and consistency terms, the learning
    rate against the band cap, and how the run ended. Dashes without a trace."""
    if traced is None:
        return dict.fromkeys(_RECONNECTION_KEYS, _DASH)
    rows, found, record = traced.rows, traced.found, traced.record
    compared, differing = differing_epochs(rows, record.history)
    before, peak, end = found.before, found.peak, found.end
    tensors = traced.tensors().set_index("tensor")
    reservoir = tensors["kept before"] - tensors["A-C before"]
    grown = (tensors["kept at the peak"] - tensors["kept before"]).idxmax()
    growth = tensors["step growth"]
    others = growth.drop(grown)
    numbers: Numbers = {
        "rec_match": (f"at all {compared} evaluated epochs it traced, the trace has the loss, "
                      f"mask rates and test accuracy of the result file, bit for bit")
        if not differing else
        f"it differs from the result file at {len(differing)} of {compared} evaluated epochs",
        "rec_start": f"{found.start:,}",
        "rec_onset": f"{found.onset:,}",
        "rec_before": f"{int(before['epoch']):,}",
        "rec_reservoir": f"{int(reservoir.sum()):,}",
        "rec_reservoir_tensors": ", ".join(f"{int(n):,} in `{t}`" for t, n in reservoir.items()
                                           if n > 0),
        "rec_consistency": f"{before['consistency']:.6f}",
        "rec_reservoir_share": f"{reservoir.sum() / GCNConfig().num_weights():.6f}",
        "rec_ac_before": f"{Reconnection.kept_ac(before):,}",
        "rec_budget_term_before": f"{before['budget']:.1e}",
        "rec_ce_before": f"{before['ce']:.1e}",
        "rec_peak": f"{int(peak['epoch']):,}",
        "rec_ac_peak": f"{Reconnection.kept_ac(peak):,}",
        "rec_off_at_peak": f"{Reconnection.kept(peak) - Reconnection.kept_ac(peak):,}",
        "rec_end": f"{int(end['epoch']):,}",
        "rec_ac_end": f"{Reconnection.kept_ac(end):,}",
        "rec_budget_term_end": f"{end['budget']:.1f}",
        "rec_grown": f"`{grown}`",
        "rec_growth": f"{growth[grown]:.0f}",
        "rec_lead": f"{found.lead}",
        "rec_other_growth": f"{others.min():.1f} to {others.max():.1f}",
        "rec_lr": f"{before['lr']:.5f}",
        "rec_cap": f"{math.sqrt(before['temperature'] * math.log(3)) / 2:.5f}",
        "rec_final": _reconnection_end(record),
    }  # fmt: skip
    for when in ("before", "peak", "end"):
        column = "kept before" if when == "before" else f"kept at the {when}"
        numbers[f"rec_grown_{when}"] = f"{int(tensors.loc[grown, column]):,}"
    return numbers


def _reconnection_end(record: RunRecord) -> str:
    details = record.report.details
    best = max((row for row in record.history if "test_class_avg_accuracy" in row),
               key=lambda row: row["test_class_avg_accuracy"])  # fmt: skip
    return (
        f"The run went on to epoch 2,700 with a learned mask at "
        f"{100 * details['learned_rate']:.2f}% pruned; the projection onto the budget at the end "
        f"changed {int(details.get('projection_changed_edges', 0)):,} connections without "
        f"retraining, and the network ended at "
        f"{100 * record.report.class_avg_accuracy:.2f}% (its best evaluated epoch: "
        f"{100 * best['test_class_avg_accuracy']:.2f}% at epoch {int(best['epoch']):,})"
    )


def spike_numbers(results_dir: str | os.PathLike[str], spikes: pd.DataFrame) -> Numbers:
    """The spike section's numbers, from :func:`tcmplib.findings.training_spikes` of
    ``results_dir`` (``spikes``) and the records themselves: which runs spiked and how
    (``spike_sentence``), spikes of methods without PMP's alignment term, what greedy TC's
    selection cost the runs that spiked, PMP's bands against the learning-rate cap, at how
    many PMP spike epochs the alignment had doubled, and the runs that end inside a spike."""
    from tcmplib.train import TrainConfig

    spiky = spikes[spikes["spikes"] > 0]
    plain = spiky[spiky["method"] != method_label("pmp")]
    records = [record for _, record in read_folder(results_dir)]
    pmp_runs = [record for record in records if record.config.method == "pmp"]
    lr_max = TrainConfig().lr_max
    return {
        "spiky_methods": ", ".join(sorted(set(spiky["method"]))) or "none",
        "spike_runs": f"{len(spiky)} of {len(spikes)}",
        "plain_spike_sentence": _plain_spike_sentence(spikes),
        "greedy_spike_sentence": _greedy_spike_sentence(records, plain),
        "spike_sentence": "; ".join(
            f"{row['method']} at {row['rate (%)']:.0f}% (seed {row['seed']}): {row['spikes']} "
            f"spike epoch(s) from epoch {int(row['first spike epoch']):,}, training accuracy "
            f"down to {row['lowest train acc. (%)']:.2f}% at learning rate "
            f"{row['lr at the lowest']:.4f}, final test accuracy {row['final test acc. (%)']:.2f}% "
            f"(best evaluated {row['best test acc. (%)']:.2f}% at epoch {int(row['best epoch']):,})"
            for _, row in spiky.iterrows()) or "no run spiked",
        "pmp_bands": _pmp_bands(pmp_runs, lr_max),
        "lr_max": f"{lr_max:g}",
        "alignment_rose": _alignment_rose(pmp_runs),
        "spike_end_sentence": _spike_end_sentence(spiky),
    }  # fmt: skip


def _plain_spike_sentence(spikes: pd.DataFrame) -> str:
    """Spikes of the methods without an extra loss term: their training minimizes the cross
    entropy alone, so PMP's alignment cannot be what throws them off."""
    spiky = spikes[spikes["spikes"] > 0]
    pmp = method_label("pmp")
    plain, calm = spiky[spiky["method"] != pmp], spikes[spikes["spikes"] == 0]
    if plain.empty:
        return "No run of a method without PMP's alignment term spiked."
    pmp_ce = spiky.loc[spiky["method"] == pmp, "train CE before"]
    pmp_range = f"{pmp_ce.min():.1e} to {pmp_ce.max():.1e}" if len(pmp_ce) else "no PMP spike yet"
    runs = "; ".join(
        f"{row['method']} at {row['rate (%)']:.0f}% (seed {row['seed']}) spiked at epoch "
        f"{int(row['first spike epoch']):,}, down to {row['lowest train acc. (%)']:.2f}% "
        f"training accuracy, after its training cross entropy had fallen to "
        f"{row['train CE before']:.1e}, and ended at {row['final test acc. (%)']:.2f}% test "
        f"accuracy (best evaluated: {row['best test acc. (%)']:.2f}%)"
        for _, row in plain.iterrows()
    )
    return (
        f"Not PMP's alone: {runs}. "
        f"{'This training minimizes' if len(plain) == 1 else 'These trainings minimize'} "
        "the cross entropy alone: a spike needs no alignment term. For comparison, the runs "
        f"without a spike end at a training cross entropy of {calm['final train CE'].min():.1e} "
        f"to {calm['final train CE'].max():.1e}, and PMP's first spikes came at {pmp_range}."
    )


def _greedy_spike_sentence(records: Sequence[RunRecord], plain: pd.DataFrame) -> str:
    """Greedy TC: what its selection cost each run (dense accuracy minus accuracy right after
    the selection, in points), for the runs that spiked in their retraining and the others."""
    greedy = plain[plain["method"] == method_label("greedy-tc")]
    spiked_keys = {(row["rate (%)"], row["seed"]) for _, row in greedy.iterrows()}
    cost: dict[str, list[tuple[tuple[float, int], float]]] = {"spiked": [], "calm": []}
    for record in records:
        if record.config.method != "greedy-tc":
            continue
        details, config = record.report.details, record.config
        key = (100.0 * config.rate, config.seed)
        drop = 100 * (details["dense_class_avg_accuracy"] - details["pruned_class_avg_accuracy"])
        cost["spiked" if key in spiked_keys else "calm"].append((key, drop))
    if not cost["spiked"]:
        return "No greedy TC run spiked."
    spiked_rates = {rate for (rate, _), _ in cost["spiked"]}
    same = [(key, drop) for key, drop in cost["calm"] if key[0] in spiked_rates]
    other = [drop for (rate, _), drop in cost["calm"] if rate not in spiked_rates]

    def listed(runs: list[tuple[tuple[float, int], float]]) -> str:
        return ", ".join(f"{rate:.0f}% seed {seed}: {drop:.2f}" for (rate, seed), drop in runs)

    return (
        f"Greedy TC spiked in {len(cost['spiked'])} of its "
        f"{len(cost['spiked']) + len(cost['calm'])} runs, and its selection had cost those runs "
        f"little test accuracy ({listed(cost['spiked'])} points, dense minus right after the "
        "selection"
        + (f"; {min(other):.2f} to {max(other):.2f} points at the other rates" if other else "")
        + "). Its retraining starts a new Adam optimiser, which then begins on a loss already "
        "near zero: a candidate cause, not tested here"
        + (f", and not a sufficient one: {listed(same)} points, without a spike." if same else ".")
    )


def _pmp_bands(pmp_runs: Sequence[RunRecord], lr_max: float) -> str:
    """PMP's band ``|w| < a(r)`` per run: the half-width a ceiling on the rate would use, as
    revision 2 of MP and TCMP uses theirs, against the cap ``lr_max``."""
    bands = [(record.config.rate, record.config.seed, record.report.details["threshold_pooled"])
             for record in pmp_runs if "threshold_pooled" in record.report.details]  # fmt: skip
    return "; ".join(
        f"a = {a:.4f} at {rate:.0%} (seed {seed}), a/2 {'below' if a / 2 < lr_max else 'above'} "
        f"the cap" for rate, seed, a in bands) or "no PMP run yet"  # fmt: skip


def _alignment_rose(pmp_runs: Sequence[RunRecord]) -> str:
    """At how many of PMP's spike epochs (evaluated epochs below 99% training accuracy after
    the split was fitted) the alignment had at least doubled since the evaluation before."""
    rose = total = 0
    for record in pmp_runs:
        history = record.history
        for i, (before, row) in enumerate(zip(history, history[1:], strict=False), start=1):
            fitted = any(r["train_accuracy"] >= 1.0 for r in history[:i])
            if fitted and row["train_accuracy"] < 0.99:
                total += 1
                rose += row["alignment"] >= 2 * before["alignment"]
    return f"{rose} of {total}"


def _spike_end_sentence(spiky: pd.DataFrame) -> str:
    """Runs whose last epoch falls inside a spike: Table 1 reports them as they ended."""
    ended = spiky[spiky["final train acc. (%)"] < 99.0]
    return (
        "; ".join(
            f"{row['method']} at {row['rate (%)']:.0f}% (seed {row['seed']}) ends inside a "
            f"spike, at {row['final train acc. (%)']:.2f}% training and "
            f"{row['final test acc. (%)']:.2f}% test accuracy (best evaluated: "
            f"{row['best test acc. (%)']:.2f}%), and pays for it"
            for _, row in ended.iterrows()
        )
        or "no run ends inside a spike"
    )


_TRACE_KEYS: tuple[str, ...] = (
    "trace_sentence", "trace_lr_sentence", "trace_step_ratio", "trace_crossed",
    "trace_steepness", "trace_growth", "trace_divergence_fell", "trace_spikes",
    "trace_divergence_rise",
)  # fmt: skip


def trace_numbers(traces: pd.DataFrame) -> Numbers:
    """The traced spikes (:func:`tcmplib.diagnostics.trace_spikes`) in numbers: the first
    spike of each (rate, cap) in words, the effect of a lower cap at 99%, and over all
    spikes the step before the onset against ten epochs earlier, the weights it moved
    across the threshold, the mask's steepness, the growth of the step in the spike and how
    the divergence moved. Dashes without a traced spike."""
    onsets = traces.dropna(subset=["onset epoch"]) if not traces.empty else traces
    if onsets.empty:
        return dict.fromkeys(_TRACE_KEYS, _DASH)
    # The first spike of each (rate, cap), by rate and cap (not in the traces' file order).
    first = onsets.groupby(["rate (%)", "lr_max"]).head(1).sort_values(["rate (%)", "lr_max"])
    at_99 = first[first["rate (%)"] == 99.0].set_index("lr_max")  # the lowest cap first
    ratio = onsets["mean step before"] / onsets["mean step 10 epochs earlier"]
    growth = onsets["largest mean step in the spike"] / onsets["mean step before"]
    fell = onsets["alignment"] < onsets["alignment 10 epochs earlier"]
    rise = onsets["largest alignment in the spike"] / onsets["alignment"]
    crossed = onsets["crossed before"].max()
    return {
        "trace_sentence": "; ".join(_first_spike(row) for _, row in first.iterrows()) + ".",
        "trace_lr_sentence": (
            f"With the cap at {at_99.index.min():g} instead of {at_99.index.max():g}, the first "
            f"spike at 99% came at epoch {int(at_99['onset epoch'].iloc[0])} instead of "
            f"{int(at_99['onset epoch'].iloc[-1])}."
        ) if len(at_99) >= 2 else "",
        "trace_spikes": f"{len(onsets)}",
        "trace_step_ratio": f"{ratio.min():.1f} to {ratio.max():.1f}",
        "trace_crossed": f"{crossed:,.0f} ({100 * crossed / GCNConfig().num_weights():.2f}%)",
        "trace_steepness": f"{onsets['steepness'].max():.1f}",
        "trace_growth": f"{growth.min():.0f} to {growth.max():.0f}",
        "trace_divergence_fell": f"{int(fell.sum())} of {len(onsets)}",
        "trace_divergence_rise": f"{rise.min():.0f} to {rise.max():.0f}",
    }  # fmt: skip


def _first_spike(row: pd.Series) -> str:
    return (
        f"PMP at {row['rate (%)']:.0f}% (cap {row['lr_max']:g}) first spiked at epoch "
        f"{int(row['onset epoch'])}, with the learning rate at {row['lr']:.4f}; the step "
        f"before moved the weights by {row['mean step before']:.1e} on average "
        f"({row['mean step 10 epochs earlier']:.1e} ten epochs earlier), and during the "
        f"spike, down to {100 * row['lowest train accuracy']:.1f}% training accuracy, by "
        f"up to {row['largest mean step in the spike']:.1e}"
    )


def architecture_numbers(oneshot: pd.DataFrame, gcn: GCNConfig | None = None) -> Numbers:
    """Why MP stays connected: the architecture's counts (dense-layer and value weights per
    convolution channel, channels, the weights kept at 99%) and one-shot MP's % A-C on
    greedy TC's dense weights (:func:`tcmplib.findings.oneshot_mp_ac`) in words."""
    gcn = gcn or GCNConfig()
    return {
        "fc_edges_per_channel": f"{gcn.nodes * gcn.heads * gcn.classes:,}",
        "wv_edges_per_channel": f"{gcn.d_in}",
        "channels": f"{gcn.channels}",
        "budget_99": f"{round(0.01 * gcn.num_weights()):,}",
        "oneshot_sentence": "; ".join(
            f"at {row['rate (%)']:.0f}% (seed {int(row['seed'])}), one-shot MP on the dense "
            f"weights of epoch {int(row['dense epochs']):,} keeps "
            f"{row['one-shot MP % A-C (ours)']:.2f}% A-C where the paper's MP has "
            f"{row['MP % A-C (paper)']:.2f}%"
            for _, row in oneshot.iterrows()
        )
        or "no greedy TC run has measured it yet",
    }


def discussion_numbers(
    results_dir: str | os.PathLike[str], ours: pd.DataFrame, spikes: pd.DataFrame
) -> Numbers:
    """The discussion's numbers: our accuracies and % A-C at 95 and 99% (a dash where a run
    is missing), greedy TC's two phases at 95 and 99% (seed 0), the paper's greedy TC and
    MP at 95%, and the runs at 50 and 75% that spiked (``spikes``:
    :func:`tcmplib.findings.training_spikes`)."""

    def value(rate: float, method: str, column: str) -> str:
        if (rate, method) not in ours.index or pd.isna(ours.loc[(rate, method), column]):
            return _DASH
        return f"{ours.loc[(rate, method), column]:.2f}"

    paper_acc = paper_table1_right()["accuracy (%)"]
    numbers: Numbers = {
        "base_acc": value(0.0, "baseline", "accuracy (%)"),
        "mp_99_ac": value(0.99, "mp", "% A-C"),
        "pmp_99_ac": value(0.99, "pmp", "% A-C"),
        "paper_greedy_95_acc": f"{paper_acc.loc[(0.95, 'greedy-tc')]:.2f}",
        "paper_mp_95_acc": f"{paper_acc.loc[(0.95, 'mp')]:.2f}",
    }
    accuracies = (("tcmp_99", 0.99, "tcmp"), ("mp_99", 0.99, "mp"),
                  ("greedy_99", 0.99, "greedy-tc"), ("pmp_99", 0.99, "pmp"),
                  ("greedy_95", 0.95, "greedy-tc"), ("mp_95", 0.95, "mp"))  # fmt: skip
    for name, rate, method in accuracies:
        numbers[f"{name}_acc"] = value(rate, method, "accuracy (%)")
    phases = []
    for rate in (0.95, 0.99):
        record = paper_run(results_dir, "greedy-tc", rate, seed=0)
        if record is not None:
            details, final = record.report.details, record.report.class_avg_accuracy
            phases.append(
                f"at {rate:.0%} it selects on a dense network at "
                f"{100 * details['dense_class_avg_accuracy']:.2f}% (epoch "
                f"{int(details['dense_epochs']):,}), falls to "
                f"{100 * details['pruned_class_avg_accuracy']:.2f}% right after the selection and "
                f"retrains to {100 * final:.2f}%"
            )
    numbers["greedy_phases"] = "; ".join(phases) or "no greedy TC run is in yet"
    low = spikes[(spikes["rate (%)"] <= 75.0) & (spikes["spikes"] > 0)]
    numbers["low_rate_spikes"] = (
        "Runs at these rates that spiked (section on spikes): " + "; ".join(
            f"{row['method']} at {row['rate (%)']:.0f}% (seed {row['seed']}) ended at "
            f"{row['final test acc. (%)']:.2f}% (best evaluated: {row['best test acc. (%)']:.2f}%)"
            for _, row in low.iterrows()) + "."
    ) if not low.empty else "No run at 50 or 75% spiked."  # fmt: skip
    return numbers


# --------------------------------------------------------------------------- chapter 9


_STAGE_KEYS: tuple[str, ...] = (
    "stage_batch", "convolution_share", "attention_share", "values_share", "dense_share",
    "full_grid_sentence", "attention_floor",
)  # fmt: skip


def stage_numbers(
    stages: pd.DataFrame, networks: pd.DataFrame, structures: pd.DataFrame,
    gcn: GCNConfig | None = None,
) -> Numbers:  # fmt: skip
    """Where the time goes (chapter 9): at the largest batch timed, each stage's share of a
    network's staged time (``<stage>_share``, min to max over networks), and the compact
    networks that kept every head and channel with their speed-up (``full_grid_sentence``).

    ``stages``, ``networks`` and ``structures`` are :func:`tcmplib.inference.load_stages`,
    ``load_inference`` and ``load_structures``; dashes when the benchmark has no stages.
    """
    from tcmplib.compact import STAGES

    if stages.empty:
        return dict.fromkeys(_STAGE_KEYS, _DASH)
    gcn = gcn or GCNConfig()
    batch = int(stages["batch"].max())
    at = stages[stages["batch"] == batch]
    share = at[[f"{stage} ms" for stage in STAGES]].div(at["sum ms"], axis=0) * 100
    numbers: Numbers = {"stage_batch": f"{batch}"}
    for stage in STAGES:
        column = share[f"{stage} ms"]
        numbers[f"{stage}_share"] = f"{column.min():.0f} to {column.max():.0f}%"
    # Compact networks that kept every head and every channel compute the dense network's
    # whole convolution; only the dense layer and the gather of its inputs differ.
    units = structures.set_index("network") if not structures.empty else structures
    compact = at[at["rate (%)"] > 0]["network"]  # pruned networks, not the dense ones
    whole = (gcn.heads, gcn.channels)
    full = [name for name in compact if name in units.index
            and (units.loc[name, "heads"], units.loc[name, "channels"]) == whole]  # fmt: skip
    # The attention of a network that keeps every head costs what the dense network's does:
    # at that batch, the dense forward pass over it bounds any such network's speed-up.
    dense_ms = float(networks.iloc[0][f"b={batch} ms"])
    live = at[at["network"].isin([n for n in compact if n in units.index
                                  and units.loc[n, "heads"] == gcn.heads])]  # fmt: skip
    numbers["attention_floor"] = (
        f"{live['attention ms'].median():.1f} ms, so that no network that keeps all "
        f"{gcn.heads} heads can run more than {dense_ms / live['attention ms'].median():.1f}x "
        "as fast as the dense network there"
    ) if not live.empty else "—"  # fmt: skip
    speedup = networks.set_index("network")[f"b={batch} speed-up"]
    numbers["full_grid_sentence"] = (
        f"{len(full)} of the {len(compact)} compact networks timed keep all {gcn.heads} heads "
        f"and all {gcn.channels} channels; at batch {batch} they run {speedup[full].min():.2f}x "
        f"to {speedup[full].max():.2f}x as fast as the dense network"
    ) if full else "every compact network timed removed heads or channels"  # fmt: skip
    return numbers


def tiny_numbers(networks: pd.DataFrame, gcn: GCNConfig | None = None) -> Numbers:
    """Chapter 9's summary: medians over the topologically consistent networks (TCMP and
    greedy TC) at 99% and 95% of :func:`tcmplib.inference.by_rate`, and the multiply-add
    counts of the dense network."""
    from tcmplib.compact import multiply_adds
    from tcmplib.inference import by_rate

    gcn = gcn or GCNConfig()
    tc = tuple(m.label for m in METHODS.values() if m.tc_by_design)
    table = by_rate(networks, tc).set_index("rate (%)")
    numbers: Numbers = {"dense_macs": f"{sum(multiply_adds(gcn).values()) / 1e6:.2f}"}
    for rate in (95, 99):
        row = table.loc[float(rate)] if float(rate) in table.index else None
        for column, key in (
            ("file: dense / sparse", "file"),
            ("MACs: dense / ours", "macs"),
            ("b=1 speed-up", "b1"),
            ("b=575 speed-up", "b575"),
            ("b=1 ORT speed-up", "ort_b1"),
            ("b=575 ORT speed-up", "ort_b575"),
        ):
            value = None if row is None or column not in row else row[column]
            numbers[f"tc{rate}_{key}"] = _DASH if value is None or pd.isna(value) else (
                f"{value:.1f}x")  # fmt: skip
    return numbers


def network_numbers(networks: pd.DataFrame) -> Numbers:
    """What chapter 9's measurements quote from :func:`tcmplib.inference.load_inference`:
    the dense reference (first row) at batch 1 and 575 and its file size, the other dense
    baselines timed against it (the noise floor), every pruned network in words, and the
    range of speed-ups of the pruned networks at both batch sizes."""
    dense = networks.iloc[0]
    pruned = networks[networks["rate (%)"] > 0]
    rest = networks.iloc[1:]
    other_dense = rest[rest["rate (%)"] == 0]
    lines = [
        f"{row['method']} at {row['rate (%)']:.0f}% (seed {row['seed']}): {row['kept weights']:,} "
        f"weights in {row['stored values']:,} stored values, {row['file KiB']:,.0f} KiB, "
        f"{row['b=1 speed-up']:.2f}x at batch 1 and {row['b=575 speed-up']:.2f}x at batch 575"
        for _, row in pruned.iterrows()
    ]
    return {
        "dense_b1": f"{dense['b=1 ms']:.2f}",
        "dense_b575": f"{dense['b=575 ms']:.0f}",
        "dense_kib": f"{dense['file KiB']:,.0f}",
        "dense_repeat_sentence": "; ".join(
            f"the dense baseline of seed {row['seed']}, the same function in compact form, ran at "
            f"{row['b=1 speed-up']:.2f}x and {row['b=575 speed-up']:.2f}x the reference"
            for _, row in other_dense.iterrows()
        ) or "no second dense network was timed",
        "network_summary": "; ".join(lines) if lines else "no pruned network timed yet",
        "b1_range": f"{pruned['b=1 speed-up'].min():.2f}x to {pruned['b=1 speed-up'].max():.2f}x",
        "b575_range": (f"{pruned['b=575 speed-up'].min():.2f}x to "
                       f"{pruned['b=575 speed-up'].max():.2f}x"),
    }  # fmt: skip
