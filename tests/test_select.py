"""Cross-validation on the training split: folds, fold runs, resumption, the ablation table."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tcmplib import cli
from tcmplib.recipe import AS_WRITTEN, Recipe
from tcmplib.select import (
    CANDIDATES,
    FoldConfig,
    best_candidate,
    cross_validate,
    cv_records,
    cv_table,
    fold_dataset,
    paired_difference,
    record_split,
    stratified_folds,
    unique_candidates,
)


def test_stratified_folds_spread_every_class_evenly() -> None:
    labels = np.repeat(np.arange(4), [9, 10, 11, 3])
    folds = stratified_folds(labels, 3, seed=0)
    for label in range(4):
        counts = np.bincount(folds[labels == label], minlength=3)
        assert counts.max() - counts.min() <= 1
    sizes = np.bincount(folds, minlength=3)
    assert sizes.max() - sizes.min() <= 1
    assert np.array_equal(folds, stratified_folds(labels, 3, seed=0))
    assert not np.array_equal(folds, stratified_folds(labels, 3, seed=1))


def test_fold_data_never_holds_the_test_split() -> None:
    config = FoldConfig(AS_WRITTEN, fold=1, folds=3, epochs=1, dataset="synthetic")
    data = fold_dataset(config)
    assert len(data.y_train) + len(data.y_test) == 600  # the training split only
    assert abs(len(data.y_test) - 200) <= 1
    assert set(data.y_test.tolist()) == set(range(45))  # stratified: every class held out


def test_fold_config_validates() -> None:
    with pytest.raises(ValueError, match="fold: expected an integer in \\[0, 3\\)"):
        FoldConfig(AS_WRITTEN, fold=3, folds=3)
    with pytest.raises(ValueError, match="folds: expected an integer >= 2"):
        FoldConfig(AS_WRITTEN, fold=0, folds=1)


def test_cross_validate_runs_resumes_and_tabulates(tmp_path: Path) -> None:
    candidates = {"as written": AS_WRITTEN, "velocity": Recipe(velocity=True, rotate_deg=10.0)}
    kwargs = {"folds": 2, "epochs": 2, "dataset": "synthetic", "device": "cpu", "progress": False}
    planned = cross_validate(candidates, tmp_path, dry_run=True, **kwargs)  # type: ignore[arg-type]
    assert len(planned["missing"]) == 4 and not planned["found"]
    done = cross_validate(candidates, tmp_path, **kwargs)  # type: ignore[arg-type]
    assert not done["failed"]
    again = cross_validate(candidates, tmp_path, dry_run=True, **kwargs)  # type: ignore[arg-type]
    assert len(again["found"]) == 4 and not again["missing"]

    table = cv_table(tmp_path, candidates)
    assert list(table.index) == ["as written", "velocity"]
    assert list(table["folds"]) == [2, 2]
    records = cv_records(tmp_path)
    plain = [r for r in records if r["recipe"] == json.loads(json.dumps(vars(AS_WRITTEN)))]
    expected = 100 * np.mean([r["val_class_avg_accuracy"] for r in plain])
    assert table.loc["as written", "cv accuracy (%)"] == pytest.approx(expected)
    # velocity doubles d_in: 2 x (3 x 84 x 128) more attention and convolution weights
    assert table.loc["velocity", "weights"] - table.loc["as written", "weights"] == 32_256
    label, recipe = best_candidate(tmp_path, candidates)
    assert table.loc[label, "cv accuracy (%)"] == table["cv accuracy (%)"].max()
    assert recipe == candidates[label]


def test_cv_table_reads_chosen_splits(tmp_path: Path) -> None:
    candidates = {"as written": AS_WRITTEN}
    kwargs = {"folds": 2, "epochs": 2, "dataset": "synthetic", "device": "cpu", "progress": False}
    done = cross_validate(candidates, tmp_path, splits=2, **kwargs)  # type: ignore[arg-type]
    assert not done["failed"] and len(done["missing"]) == 4
    by_split = {0: [], 1: []}  # type: dict[int, list[float]]
    for record in cv_records(tmp_path):
        by_split[record_split(record)].append(100 * record["val_class_avg_accuracy"])
    assert [len(v) for v in by_split.values()] == [2, 2]
    assert cv_table(tmp_path, candidates).loc["as written", "folds"] == 4
    first = cv_table(tmp_path, candidates, splits=(0,)).loc["as written"]
    assert first["folds"] == 2
    assert first["cv accuracy (%)"] == pytest.approx(np.mean(by_split[0]))
    second = cv_table(tmp_path, candidates, splits=[1]).loc["as written"]
    assert second["cv accuracy (%)"] == pytest.approx(np.mean(by_split[1]))
    same = paired_difference(tmp_path, AS_WRITTEN, AS_WRITTEN)
    assert same == {"mean": 0.0, "std": 0.0, "folds": 4, "ahead": 0}
    with pytest.raises(ValueError, match="fewer than 2 folds run by both recipes"):
        paired_difference(tmp_path, Recipe(velocity=True), AS_WRITTEN)


def test_unique_candidates_keep_the_first_label() -> None:
    groups = [{"a": AS_WRITTEN, "b": Recipe(chunks=32)}, {"c": Recipe(chunks=32), "d": Recipe()}]
    assert unique_candidates(groups) == {"a": AS_WRITTEN, "b": Recipe(chunks=32)}


def test_an_old_or_foreign_record_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "fold0of3_e300_s0_abc.json").write_text(json.dumps({"kind": "other"}))
    with pytest.raises(ValueError, match="fold0of3_e300_s0_abc.json: not a CV fold record"):
        cv_records(tmp_path)


def test_a_candidate_without_records_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no CV record for the candidate 'as written'"):
        cv_table(tmp_path, {"as written": AS_WRITTEN})


def test_cli_cv_dry_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = cli.main(
        ["cv", "ablation", "--dataset", "synthetic", "--results", str(tmp_path), "--dry-run"]
    )
    out = capsys.readouterr().out
    assert status == 0
    runs = 3 * len(CANDIDATES["ablation"])
    assert f"0 done, {runs} to run" in out


def test_recipe_accuracies_read_the_committed_as_written_baselines() -> None:
    from tcmplib.recipe_plots import recipe_accuracies

    root = Path(__file__).resolve().parents[1]
    table = recipe_accuracies({"as written": root / "results" / "fpha-paper"})
    row = table.loc["as written"]
    assert row["seeds"] == 3 and row["weights"] == 1_967_616
    per_seed = [float(v) for v in row["per seed"].split(" / ")]
    assert row["test accuracy (%)"] == pytest.approx(np.mean(per_seed), abs=0.01)


def test_recipe_accuracies_of_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    from tcmplib.recipe_plots import recipe_accuracies

    with pytest.raises(ValueError, match="no baseline result files for the recipe 'x'"):
        recipe_accuracies({"x": tmp_path})


def test_a_fold_runs_identity_holds_the_whole_recipe() -> None:
    from dataclasses import asdict

    identity = FoldConfig(AS_WRITTEN, 0).identity()
    # Defaults included, except options added after the records that stay out at their
    # default (Recipe.values, Recipe.attention, Recipe.label_smoothing).
    later = ("values", "attention", "label_smoothing", "precision", "anneal")
    whole = {k: v for k, v in asdict(AS_WRITTEN).items() if k not in later}
    assert identity["recipe"] == whole


def test_repeated_splits_draw_other_folds_and_leave_split_0_named_as_before() -> None:
    labels = np.repeat(np.arange(45), 13)
    assert not np.array_equal(
        stratified_folds(labels, 3, seed=0), stratified_folds(labels, 3, seed=1)
    )
    # Every committed fold record was made on split 0: rebuilt from its identity, its
    # config still has the record's name, so repeated CV reuses it.
    path = sorted((Path(__file__).parent.parent / "results" / "fpha-cv").glob("fold*.json"))[0]
    identity = json.loads(path.read_text())["identity"]
    config = FoldConfig(
        Recipe(**identity["recipe"]), identity["fold"], identity["folds"],
        identity["train"]["epochs"], identity["seed"], identity["dataset"],
    )  # fmt: skip
    assert config.name == path.stem and "split" not in config.identity()
    other = replace(config, split=1)
    assert other.identity()["split"] == 1 and other.hash != config.hash
    assert "_split1_" in other.name
    with pytest.raises(ValueError, match="split: expected an integer >= 0"):
        replace(config, split=-1)


def test_candidate_runs_cover_every_split_and_fold() -> None:
    from tcmplib.select import candidate_runs

    runs = candidate_runs({"a": AS_WRITTEN}, folds=3, splits=2, dataset="synthetic")
    assert [(c.split, c.fold) for _, c in runs] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]


def test_anneal_numbers_pair_each_length_with_the_same_recipe_unannealed(tmp_path: Path) -> None:
    from tcmplib.recipe_plots import anneal_numbers

    candidates = {"plain": AS_WRITTEN, "anneal 50%": Recipe(anneal=0.5)}
    kwargs = {"folds": 2, "epochs": 4, "dataset": "synthetic", "device": "cpu", "progress": False}
    assert not cross_validate(candidates, tmp_path, **kwargs)["failed"]  # type: ignore[arg-type]
    by_fold: dict[str, dict[int, float]] = {"plain": {}, "annealed": {}}
    for record in cv_records(tmp_path):
        kind = "annealed" if record["recipe"]["anneal"] else "plain"
        by_fold[kind][record["identity"]["fold"]] = 100 * record["val_class_avg_accuracy"]
    diffs = [by_fold["annealed"][k] - by_fold["plain"][k] for k in (0, 1)]
    numbers = anneal_numbers(tmp_path, {"anneal": candidates})
    assert numbers["r5_annealed_label"] == "anneal 50%" and numbers["r5_annealed_share"] == 50
    assert numbers["r5_gain_50"] == pytest.approx(np.mean(diffs))
    assert numbers["r5_gain_50_ahead"] == sum(d > 0 for d in diffs) and numbers["r5_pairs"] == 2
    assert numbers["r5_count"] == 2
