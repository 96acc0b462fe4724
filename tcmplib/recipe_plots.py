"""Figures of the recipe chapter: cross-validation curves and the paper-scale learning curves.

Both read committed records only (:mod:`tcmplib.select`'s fold records, the sweep's result
files), so the figures are redrawn from the same numbers the tables print.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tcmplib.recipe import Recipe
from tcmplib.select import recipe_key, records_by_recipe

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The candidate sets of the first two rounds of the search, run on one 3-fold split.
SEARCH_ROUNDS = ("ablation", "combinations", "refinements", "weight-decay")
#: The split those rounds used: their numbers are read from it alone, as they were chosen.
FIRST_SPLIT = (0,)
#: The third round: every set so far, over 3 splits (repeated 3-fold CV).
THIRD_ROUND = (*SEARCH_ROUNDS, "per-head")
#: The fourth round's set: label smoothing on the third round's best and on the selected recipe.
FOURTH_ROUND = "label-smoothing"
#: The fifth round's set: the rate annealed over the last share of the epochs.
FIFTH_ROUND = "anneal"

__all__ = [
    "SEARCH_ROUNDS",
    "FIRST_SPLIT",
    "THIRD_ROUND",
    "FOURTH_ROUND",
    "FIFTH_ROUND",
    "anneal_numbers",
    "repeated_cv_numbers",
    "smoothing_numbers",
    "baseline_records",
    "plot_cv_curves",
    "plot_baseline_curves",
    "recipe_accuracies",
    "recipe_chapter_numbers",
    "reporting_conventions",
]


def baseline_records(results_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The dense baselines' result records in a sweep's results folder, by seed."""
    records = []
    for path in sorted(Path(results_dir).glob("baseline_rate0.0000_seed*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not a readable result file ({err})") from None
        if "history" not in record or "report" not in record:
            raise ValueError(f"{path}: expected a result file with 'history' and 'report'")
        records.append(record)
    return sorted(records, key=lambda r: r["config"]["seed"])


def recipe_accuracies(folders: Mapping[str, str | os.PathLike[str]]) -> Any:
    """Test accuracy of the dense baseline per recipe (label -> results folder): per seed,
    mean and sample std over seeds, in %, with the training accuracy at the end."""
    import pandas as pd

    rows = []
    for label, folder in folders.items():
        records = baseline_records(folder)
        if not records:
            raise ValueError(f"{folder}: no baseline result files for the recipe {label!r}")
        test = np.array([100 * r["report"]["class_avg_accuracy"] for r in records])
        rows.append({
            "recipe": label,
            "seeds": len(records),
            "test accuracy (%)": float(test.mean()),
            "std": float(test.std(ddof=1)) if len(test) > 1 else float("nan"),
            "per seed": " / ".join(f"{value:.2f}" for value in test),
            "weights": records[0]["report"]["total_weights"],
            "training time (min)": float(np.mean([r["report"]["wall_time_s"] for r in records]))
            / 60,
            "device": ", ".join(sorted({r["provenance"]["device"] for r in records})),
        })  # fmt: skip
    return pd.DataFrame(rows).set_index("recipe")


def reporting_conventions(folders: Mapping[str, str | os.PathLike[str]], last: int = 10) -> Any:
    """Test accuracy (%) of the dense baseline per recipe under three ways of reading a run:
    the last epoch (this book's), the mean of the ``last`` evaluations, and the best
    evaluation of the run (which picks an epoch by the test split); mean over seeds."""
    import pandas as pd

    rows = []
    for label, folder in folders.items():
        curves = [
            [100 * row["test_class_avg_accuracy"] for row in record["history"]
             if "test_class_avg_accuracy" in row]
            for record in baseline_records(folder)
        ]  # fmt: skip
        rows.append({
            "recipe": label,
            "last epoch": float(np.mean([c[-1] for c in curves])),
            f"mean of the last {last} evaluations": float(
                np.mean([np.mean(c[-last:]) for c in curves])
            ),
            "best evaluation": float(np.mean([max(c) for c in curves])),
        })  # fmt: skip
    return pd.DataFrame(rows).set_index("recipe")


def plot_cv_curves(
    results_dir: str | os.PathLike[str], candidates: Mapping[str, Recipe], title: str = ""
) -> Figure:
    """Held-out fold accuracy over epochs, mean over folds, one line per candidate."""
    import matplotlib.pyplot as plt

    by_recipe = records_by_recipe(results_dir)
    fig, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
    colors = plt.get_cmap("tab20")(range(20))  # more candidates than the default cycle's 10
    for index, (label, recipe) in enumerate(candidates.items()):
        records = by_recipe.get(recipe_key(recipe), [])
        if not records:
            raise ValueError(f"{results_dir}: no CV record for the candidate {label!r}")
        epochs = [row["epoch"] for row in records[0]["curve"]]
        values = np.array(
            [[100 * row["val_class_avg_accuracy"] for row in r["curve"]] for r in records]
        )
        style = (
            {"color": "black", "lw": 2.5}
            if not recipe.changes()
            else {"lw": 1.3, "color": colors[index % len(colors)]}
        )
        ax.plot(epochs, values.mean(axis=0), label=label, marker=".", **style)
    ax.set_xlabel("epoch")
    ax.set_ylabel("held-out fold accuracy, class-averaged (%)")
    ax.legend(fontsize="x-small", ncol=2)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    return fig


def plot_baseline_curves(folders: Mapping[str, str | os.PathLike[str]]) -> Figure:
    """Paper-scale learning curves of the dense baseline per recipe: test accuracy (left) and
    learning rate (right) at the evaluated epochs, one thin line per seed, the mean bold."""
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_lr) = plt.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    colors = ("tab:grey", "tab:blue", "tab:green", "tab:orange", "tab:red", "tab:purple")
    if len(folders) > len(colors):
        raise ValueError(f"plot_baseline_curves: at most {len(colors)} recipes, got {len(folders)}")
    for (label, folder), color in zip(folders.items(), colors, strict=False):
        records = baseline_records(folder)
        epochs = [row["epoch"] for row in records[0]["history"]]
        test = np.array([[100 * r["test_class_avg_accuracy"] for r in rec["history"]]
                         for rec in records])  # fmt: skip
        train = np.array([[100 * r["train_accuracy"] for r in rec["history"]] for rec in records])
        for row in test:
            ax_acc.plot(epochs, row, color=color, lw=0.6, alpha=0.5)
        ax_acc.plot(epochs, test.mean(axis=0), color=color, lw=2, label=f"{label}: test")
        ax_acc.plot(epochs, train.mean(axis=0), color=color, lw=1, ls="--",
                    label=f"{label}: training batch")  # fmt: skip
        for rec in records:
            ax_lr.plot(epochs, [r["lr"] for r in rec["history"]], color=color, lw=0.8)
        ax_lr.plot([], [], color=color, label=label)
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("class-averaged accuracy (%)")
    ax_acc.set_ylim(50, 101)
    ax_acc.legend(fontsize="x-small", ncol=2, loc="lower right")
    ax_acc.grid(alpha=0.3)
    ax_lr.set_xlabel("epoch")
    ax_lr.set_ylabel("learning rate (at evaluated epochs)")
    ax_lr.set_yscale("log")
    ax_lr.legend(fontsize="small")
    ax_lr.grid(alpha=0.3)
    return fig


def recipe_chapter_numbers(
    cv_dir: str | os.PathLike[str],
    candidates: Mapping[str, Mapping[str, Recipe]],
    paper_scale: Mapping[str, str | os.PathLike[str]],
) -> dict[str, float | str]:
    """The numbers the recipe chapter's prose quotes, each computed from the records.

    Gains are in points of held-out accuracy against "as written" (``<option>_gain``);
    ``<recipe>_test``/``_std``/``_lr`` are the paper-scale test accuracy, its sample std over
    seeds and the median learning rate of the last evaluated epoch. The first two rounds
    (:data:`SEARCH_ROUNDS`) are read as they were run, on split 0 alone; ``r3_*`` are the
    third round's, every candidate over all its splits (:func:`repeated_cv_numbers`).
    """
    from tcmplib.select import best_candidate, cv_table

    table = cv_table(cv_dir, candidates["ablation"], FIRST_SPLIT)
    ablation = table["cv accuracy (%)"]
    base = float(ablation["as written"])
    keys = {"M = 32 chunks": "m32", "palm frame (every frame)": "palm",
            "palm frame (first frame)": "first_palm", "hand-size normalization": "hand",
            "chunk velocities": "velocity", "rotation +-30 deg": "rotation",
            "scaling +-15%": "scale", "time crop (>= 80% kept)": "crop", "dropout 0.5": "dropout",
            "weight decay 1e-3": "wd", "attention within 1 bone": "nb1",
            "attention within 2 bones": "nb2"}  # fmt: skip
    numbers: dict[str, float | str] = {"as_written_cv": base}
    for label, key in keys.items():
        numbers[f"{key}_gain"] = float(ablation[label]) - base
        numbers[f"{key}_std"] = float(table.loc[label, "std"])
    numbers["as_written_cv_std"] = float(table.loc["as written", "std"])
    everything = {name: r for key in SEARCH_ROUNDS for name, r in candidates[key].items()}
    label, best = best_candidate(cv_dir, everything, FIRST_SPLIT)
    best_row = cv_table(cv_dir, {label: best}, FIRST_SPLIT).iloc[0]
    numbers.update(selected_label=label, selected_options=best.describe(),
                   selected_cv=float(best_row["cv accuracy (%)"]),
                   selected_cv_std=float(best_row["std"]),
                   selected_weights=int(best_row["weights"]))  # fmt: skip
    from tcmplib.tables import paper_table1_right

    paper = float(paper_table1_right().loc[(0.0, "baseline"), "accuracy (%)"])
    numbers["paper_baseline"] = paper
    numbers["paper_weights"] = int(paper_table1_right().loc[(0.0, "baseline"), "# parameters"])
    numbers["selected_extra_weights"] = int(numbers["selected_weights"]) - int(
        numbers["paper_weights"]
    )
    accuracy = recipe_accuracies(paper_scale)
    for name, folder in paper_scale.items():
        key = re.sub(r"[^a-z0-9]+", "_", name.lower())
        numbers[f"{key}_test"] = float(accuracy.loc[name, "test accuracy (%)"])
        numbers[f"{key}_test_std"] = float(accuracy.loc[name, "std"])
        last_lr = [r["history"][-1]["lr"] for r in baseline_records(folder)]
        numbers[f"{key}_lr"] = float(np.median(last_lr))
        numbers[f"{key}_gap"] = paper - float(numbers[f"{key}_test"])
        numbers[f"{key}_test_min"] = min(
            100 * r["report"]["class_avg_accuracy"] for r in baseline_records(folder)
        )
        numbers[f"{key}_minutes"] = float(accuracy.loc[name, "training time (min)"])
        numbers[f"{key}_train"] = float(
            np.mean([100 * r["history"][-1]["train_accuracy"] for r in baseline_records(folder)])
        )
    readings = reporting_conventions(paper_scale)
    for name in paper_scale:
        key = re.sub(r"[^a-z0-9]+", "_", name.lower())
        numbers[f"{key}_best"] = float(readings.loc[name, "best evaluation"])
        numbers[f"{key}_last_mean"] = float(readings.loc[name].iloc[1])
    from tcmplib.recipe import RECIPES

    first = cv_table(cv_dir, {"round 1": RECIPES["round-1"]}, FIRST_SPLIT).iloc[0]
    numbers["round_1_cv"] = float(first["cv accuracy (%)"])
    numbers["round_1_cv_std"] = float(first["std"])
    numbers["round_2_cv_gain"] = float(numbers["selected_cv"]) - float(numbers["round_1_cv"])
    if "selected" in paper_scale and "round 1" in paper_scale:
        numbers["round_2_test_gain"] = float(numbers["selected_test"]) - float(
            numbers["round_1_test"]
        )
    if "selected" in paper_scale and "as written" in paper_scale:
        numbers["test_gain"] = float(numbers["selected_test"]) - float(numbers["as_written_test"])
        numbers["gap_closed"] = 100 * float(numbers["test_gain"]) / float(numbers["as_written_gap"])
        numbers["cv_gain"] = float(numbers["selected_cv"]) - base
    if "per-head, smoothed" in paper_scale and "per-head filters" in paper_scale:
        numbers["r4_test_gain"] = float(numbers["per_head_smoothed_test"]) - float(
            numbers["per_head_filters_test"]
        )
        # the target: within 2 points of the paper's baseline
        numbers["per_head_smoothed_shortfall"] = (
            paper - 2.0 - float(numbers["per_head_smoothed_test"])
        )
    if "per-head, smoothed, bf16" in paper_scale and "per-head, smoothed" in paper_scale:
        numbers["bf16_test_change"] = float(numbers["per_head_smoothed_bf16_test"]) - float(
            numbers["per_head_smoothed_test"]
        )
    if "annealed, bf16" in paper_scale and "per-head, smoothed, bf16" in paper_scale:
        numbers["anneal_test_change"] = float(numbers["annealed_bf16_test"]) - float(
            numbers["per_head_smoothed_bf16_test"]
        )
        numbers["annealed_shortfall"] = paper - 2.0 - float(numbers["annealed_bf16_test"])
    numbers.update(repeated_cv_numbers(cv_dir, candidates))
    if FOURTH_ROUND in candidates:
        numbers.update(smoothing_numbers(cv_dir, candidates))
    if FIFTH_ROUND in candidates:
        numbers.update(anneal_numbers(cv_dir, candidates))
    return numbers


def repeated_cv_numbers(
    cv_dir: str | os.PathLike[str], candidates: Mapping[str, Mapping[str, Recipe]]
) -> dict[str, float | str]:
    """The third round's numbers: every candidate of its sets (:data:`THIRD_ROUND`) over all
    its splits (repeated k-fold), the best of them, the best of the first two rounds'
    candidates, and the per-head filters against the selected recipe, fold by fold
    (:func:`~tcmplib.select.paired_difference`)."""
    from tcmplib.recipe import RECIPES
    from tcmplib.select import cv_table, paired_difference, unique_candidates

    table = cv_table(cv_dir, unique_candidates(candidates[key] for key in THIRD_ROUND))
    earlier = cv_table(cv_dir, unique_candidates(candidates[key] for key in SEARCH_ROUNDS))
    best, best_earlier = table["cv accuracy (%)"].idxmax(), earlier["cv accuracy (%)"].idxmax()
    selected = cv_table(cv_dir, {"selected": RECIPES["selected"]}).iloc[0]
    ahead_of_selected = earlier["cv accuracy (%)"] > selected["cv accuracy (%)"]
    pair = paired_difference(cv_dir, RECIPES["selected-per-head"], RECIPES["selected"])
    return {"r3_folds": int(table["folds"].min()), "r3_best_label": str(best),
            "r3_best_cv": float(table.loc[best, "cv accuracy (%)"]),
            "r3_best_std": float(table.loc[best, "std"]),
            "r3_earlier_label": str(best_earlier),
            "r3_earlier_cv": float(earlier.loc[best_earlier, "cv accuracy (%)"]),
            "r3_selected_cv": float(selected["cv accuracy (%)"]),
            "r3_selected_std": float(selected["std"]),
            "r3_selected_rank": int(ahead_of_selected.sum()) + 1,
            "r3_earlier_count": len(earlier),
            "r3_per_head_gain": pair["mean"], "r3_per_head_gain_std": pair["std"],
            "r3_per_head_ahead": pair["ahead"], "r3_pairs": pair["folds"]}  # fmt: skip


def smoothing_numbers(
    cv_dir: str | os.PathLike[str], candidates: Mapping[str, Mapping[str, Recipe]]
) -> dict[str, float | str]:
    """The fourth round's numbers (``r4_*``): the best of every candidate run so far, the
    label-smoothing set's best against the same recipe without smoothing, fold by fold, and
    the training accuracy that smoothing leaves."""
    from tcmplib.select import cv_table, paired_difference, unique_candidates

    # The best of the four rounds, as it stood when the fourth ended.
    rounds = [v for k, v in candidates.items() if k != FIFTH_ROUND]
    everything = cv_table(cv_dir, unique_candidates(rounds))
    best = str(everything["cv accuracy (%)"].idxmax())
    smoothing = cv_table(cv_dir, candidates[FOURTH_ROUND])
    smoothed = smoothing[[candidates[FOURTH_ROUND][label].label_smoothing > 0
                          for label in smoothing.index]]  # fmt: skip
    top = str(smoothed["cv accuracy (%)"].idxmax())
    recipe = candidates[FOURTH_ROUND][top]
    pair = paired_difference(cv_dir, recipe, replace(recipe, label_smoothing=0.0))
    plain = cv_table(cv_dir, {"plain": replace(recipe, label_smoothing=0.0)}).iloc[0]
    return {"r4_best_label": best, "r4_best_cv": float(everything.loc[best, "cv accuracy (%)"]),
            "r4_best_std": float(everything.loc[best, "std"]),
            "r4_smoothed_label": top, "r4_smoothed_cv": float(smoothed.loc[top, "cv accuracy (%)"]),
            "r4_smoothed_train": float(smoothed.loc[top, "train accuracy (%)"]),
            "r4_plain_train": float(plain["train accuracy (%)"]),
            "r4_gain": pair["mean"], "r4_gain_std": pair["std"], "r4_ahead": pair["ahead"],
            "r4_pairs": pair["folds"], "r4_count": len(everything)}  # fmt: skip


def anneal_numbers(
    cv_dir: str | os.PathLike[str], candidates: Mapping[str, Mapping[str, Recipe]]
) -> dict[str, float | str]:
    """The fifth round's numbers (``r5_*``): the annealed candidates' best against the same
    recipe without annealing, fold by fold, each length's paired gain, and the best of every
    candidate run so far."""
    from tcmplib.select import cv_table, paired_difference, unique_candidates

    everything = cv_table(cv_dir, unique_candidates(candidates.values()))
    best = str(everything["cv accuracy (%)"].idxmax())
    rounds = candidates[FIFTH_ROUND]
    table = cv_table(cv_dir, rounds)
    annealed = table[[rounds[label].anneal > 0 for label in table.index]]
    top = str(annealed["cv accuracy (%)"].idxmax())
    numbers: dict[str, float | str] = {
        "r5_best_label": best, "r5_best_cv": float(everything.loc[best, "cv accuracy (%)"]),
        "r5_best_std": float(everything.loc[best, "std"]), "r5_count": len(everything),
        "r5_annealed_label": top, "r5_annealed_cv": float(annealed.loc[top, "cv accuracy (%)"]),
        "r5_annealed_std": float(annealed.loc[top, "std"]),
        "r5_annealed_share": 100 * rounds[top].anneal,
    }  # fmt: skip
    for label in annealed.index:
        recipe = rounds[label]
        pair = paired_difference(cv_dir, recipe, replace(recipe, anneal=0.0))
        key = f"r5_gain_{round(100 * recipe.anneal)}"
        numbers.update({key: pair["mean"], f"{key}_std": pair["std"],
                        f"{key}_ahead": pair["ahead"], "r5_pairs": pair["folds"]})  # fmt: skip
    return numbers
