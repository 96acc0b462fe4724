"""The training recipe's options: each checked on hand-worked values, each in the run's hash."""

from __future__ import annotations

import math
import re
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import tcmplib.train
from tcmplib import recipe as recipe_module
from tcmplib.compact import compact_model
from tcmplib.data import build_dataset, generate_synthetic
from tcmplib.data.preprocess import node_signal, palm_axes, to_frame
from tcmplib.model import AttentionGCN, GCNConfig, neighbourhood_mask
from tcmplib.recipe import (
    AS_WRITTEN,
    Augmentation,
    Recipe,
    featurize,
    load_recipe_data,
    prepare,
    random_rotations,
    rotation_matrices,
)
from tcmplib.select import FoldConfig
from tcmplib.sweep import RunConfig
from tcmplib.train import TrainConfig, build_model, train

# One value per option that differs from the paper's text as written.
SWITCHED = {
    "chunks": 32,
    "frame": "palm",
    "hand_size": True,
    "velocity": True,
    "rotate_deg": 30.0,
    "scale": 0.1,
    "time_crop": 0.2,
    "dropout": 0.5,
    "neighbourhood": 2,
    "weight_decay": 1e-3,
    "values": "per-head",
    "attention": "bilinear",
    "label_smoothing": 0.1,
    "precision": "bf16",
    "anneal": 0.1,
}


def test_every_option_has_a_switched_value_in_this_test() -> None:
    assert set(SWITCHED) == {f.name for f in fields(Recipe)}


@pytest.mark.parametrize("option", sorted(SWITCHED))
def test_each_option_changes_the_run_hash(option: str, monkeypatch: pytest.MonkeyPatch) -> None:
    switched = Recipe(**{option: SWITCHED[option]})
    monkeypatch.setitem(recipe_module.RECIPES, "test", switched)
    plain = RunConfig(dataset="fpha", method="tcmp", rate=0.99, seed=0, profile="paper")
    changed = replace(plain, recipe="test")
    assert changed.hash != plain.hash
    assert FoldConfig(switched, 0).hash != FoldConfig(AS_WRITTEN, 0).hash


def test_as_written_names_the_run_recorded_before_recipes() -> None:
    # results/fpha-paper holds this run, recorded before the recipe existed (its record
    # renamed to the hash of its full identity by scripts/migrate_results.py).
    config = RunConfig(dataset="fpha", method="baseline", seed=0, profile="paper")
    root = Path(__file__).resolve().parents[1]
    assert (root / "results" / "fpha-paper" / f"{config.name}.json").is_file()


def test_values_at_its_default_leaves_identities_as_recorded() -> None:
    # Recipe.values came after the records: shared filters add nothing to an identity.
    identity = RunConfig(dataset="fpha", method="mp", rate=0.99, profile="paper").identity()
    assert "values" not in identity["recipe"] and "values" not in identity["model"]
    per_head = RunConfig(recipe="selected-per-head").identity()
    assert per_head["recipe"]["values"] == "per-head"
    assert per_head["model"]["values"] == "per-head" and "channels" not in per_head["model"]
    assert "values" not in FoldConfig(AS_WRITTEN, 0).identity()["recipe"]


def test_attention_at_its_default_leaves_identities_as_recorded() -> None:
    identity = RunConfig(dataset="fpha", method="mp", rate=0.99, profile="paper").identity()
    assert "attention" not in identity["recipe"] and "attention" not in identity["model"]
    bilinear = RunConfig(recipe="selected-per-head-bilinear").identity()
    assert bilinear["recipe"]["attention"] == "bilinear"
    assert bilinear["model"]["attention"] == "bilinear" and "channels" not in bilinear["model"]
    with pytest.raises(ValueError, match="recipe option attention: expected one of softmax"):
        Recipe(attention="linear")


def test_label_smoothing_at_its_default_leaves_identities_as_recorded() -> None:
    # Recipe.label_smoothing and TrainConfig.label_smoothing came after the records.
    plain = RunConfig(dataset="fpha", method="mp", rate=0.99, profile="paper")
    identity = plain.identity()
    assert "label_smoothing" not in identity["recipe"]
    assert "label_smoothing" not in identity["train"]
    assert tcmplib.train.config_hash(TrainConfig()) == tcmplib.train.config_hash(
        TrainConfig(label_smoothing=0.0)
    )
    smoothed = Recipe(label_smoothing=0.1)
    assert smoothed.train_overrides()["label_smoothing"] == 0.1
    fold = FoldConfig(smoothed, 0)
    assert fold.identity()["train"]["label_smoothing"] == 0.1
    assert tcmplib.train.config_hash(fold.train_config()) != tcmplib.train.config_hash(
        FoldConfig(AS_WRITTEN, 0).train_config()
    )


def test_precision_at_its_default_leaves_identities_as_recorded() -> None:
    plain = RunConfig(dataset="fpha", method="mp", rate=0.99, profile="paper").identity()
    assert "precision" not in plain["recipe"] and "precision" not in plain["train"]
    low = Recipe(precision="bf16")
    assert low.train_overrides()["precision"] == "bf16"
    assert FoldConfig(low, 0).identity()["train"]["precision"] == "bf16"
    with pytest.raises(ValueError, match="recipe option precision: expected one of fp32, bf16"):
        Recipe(precision="fp16")


def test_anneal_at_its_default_leaves_identities_as_recorded() -> None:
    plain = RunConfig(dataset="fpha", method="mp", rate=0.99, profile="paper").identity()
    assert "anneal" not in plain["recipe"] and "anneal" not in plain["train"]
    annealed = Recipe(anneal=0.1)
    assert annealed.train_overrides()["anneal"] == 0.1
    assert FoldConfig(annealed, 0).identity()["train"]["anneal"] == 0.1
    assert Recipe().with_options(["anneal=0.3"]).anneal == 0.3
    with pytest.raises(ValueError, match=r"recipe option anneal: expected a share of the epochs"):
        Recipe(anneal=-0.1)


def test_per_head_recipe_builds_the_network_nearest_the_papers_weight_count() -> None:
    data = load_recipe_data(Recipe(chunks=32, values="per-head"), "synthetic")
    gcn = Recipe(chunks=32, values="per-head").gcn_config(data)
    assert (gcn.values, gcn.channels, gcn.d_in) == ("per-head", 117, 96)
    assert AttentionGCN(gcn).num_weights() == 1_973_328
    with pytest.raises(ValueError, match="recipe option values: expected one of shared"):
        Recipe(values="per-channel")


def test_a_recipe_name_is_not_its_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(recipe_module.RECIPES, "alias", Recipe())
    assert RunConfig(recipe="alias").hash == RunConfig().hash


def test_equal_numbers_are_one_recipe() -> None:
    assert Recipe(rotate_deg=30).changes() == Recipe(rotate_deg=30.0).changes()


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("colour=red", "recipe option 'colour': unknown"),
        ("dropout=1.5", "recipe option dropout: expected a number in [0, 1)"),
        ("label_smoothing=1", "recipe option label_smoothing: expected a number in [0, 1)"),
        ("label_smoothing=-0.1", "recipe option label_smoothing: expected a number in [0, 1)"),
        ("frame=head", "recipe option frame: expected one of wrist, palm, first-palm"),
        ("velocity=maybe", "recipe option velocity: expected true or false"),
        ("chunks=many", "recipe option chunks: expected a number"),
        ("scale", "recipe option 'scale': expected key=value"),
    ],
)
def test_bad_options_are_one_line_errors(assignment: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message)):
        Recipe().with_options([assignment])


def test_options_parse_from_text() -> None:
    parsed = Recipe().with_options(["velocity=true", "rotate_deg=45", "neighbourhood=none"])
    assert parsed == Recipe(velocity=True, rotate_deg=45.0)


def test_unknown_recipe_name() -> None:
    with pytest.raises(ValueError, match="recipe: expected one of"):
        RunConfig(recipe="best")


# ----------------------------------------------------------------------------- rotations


def test_rotation_about_z_by_90_degrees_maps_x_to_y() -> None:
    axis = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    rotation = rotation_matrices(axis, torch.tensor([math.pi / 2], dtype=torch.float64))[0]
    expected = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(rotation.float(), expected, atol=1e-12, rtol=0)
    torch.testing.assert_close(
        rotation.float() @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0])
    )


def test_random_rotations_are_rotations_within_the_bound() -> None:
    torch.manual_seed(0)
    rotations = random_rotations(500, 30.0)
    eye = torch.eye(3, dtype=torch.float64).expand(500, 3, 3)
    torch.testing.assert_close(rotations @ rotations.transpose(1, 2), eye)
    torch.testing.assert_close(torch.linalg.det(rotations), torch.ones(500, dtype=torch.float64))
    # trace = 1 + 2 cos(angle)
    angles = torch.rad2deg(torch.arccos(((rotations.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2)))
    assert float(angles.max()) <= 30.0 + 1e-9
    assert float(angles.max()) > 25.0  # the draw reaches near the bound


def test_augmenting_the_signal_equals_augmenting_the_frames() -> None:
    """Rotation and scaling commute with wrist centring and chunk means (module doc)."""
    rng = np.random.default_rng(0)
    frames = rng.normal(size=(37, 21, 3)) * 40.0
    rotation = random_rotations(1, 90.0)[0].numpy() * 1.1
    on_frames = node_signal(frames @ rotation.T, 28)
    signal = node_signal(frames, 28).reshape(21, 28, 3)
    on_signal = (signal @ rotation.T).reshape(21, 84)
    np.testing.assert_allclose(on_frames, on_signal, atol=1e-9)


def test_augmentation_draws_anew_each_call_and_only_rotates_and_scales() -> None:
    positions = torch.randn(5, 21, 12)
    draw = Augmentation(positions, Recipe(rotate_deg=180.0, scale=0.2))
    torch.manual_seed(0)
    first, second = draw(), draw()
    assert not torch.equal(first, second)
    # Per sequence, one rotation times one scale: norms of every point scale alike.
    ratio = first.reshape(5, 21, 4, 3).norm(dim=-1) / positions.reshape(5, 21, 4, 3).norm(dim=-1)
    assert torch.allclose(ratio, ratio[:, :1, :1].expand_as(ratio), atol=1e-5)
    assert float(ratio.min()) >= 0.8 - 1e-6 and float(ratio.max()) <= 1.2 + 1e-6


def _frames_counting_time(length: int) -> np.ndarray:
    """Frames whose every coordinate is the frame's index (the wrist at 0)."""
    frames = np.repeat(np.arange(length, dtype=np.float64)[:, None, None], 21, axis=1)
    frames = np.repeat(frames, 3, axis=2)
    frames[:, 0] = 0.0
    return frames


def test_time_crop_of_the_whole_sequence_is_the_papers_chunking() -> None:
    sequences = [_frames_counting_time(8), _frames_counting_time(12)]
    positions = torch.from_numpy(np.stack([node_signal(f, 4) for f in sequences])).float()
    draw = Augmentation(
        positions,
        Recipe(time_crop=1e-12),  # a window of the whole sequence
        *_padded(sequences),
    )
    # Chunks of 8 frames: (0+1)/2, (2+3)/2, ... = 0.5, 2.5, 4.5, 6.5
    torch.testing.assert_close(draw(), positions, atol=1e-5, rtol=0)
    assert float(draw()[0, 1, 3]) == pytest.approx(2.5)


def test_time_crop_takes_a_window_of_the_sequence() -> None:
    sequences = [_frames_counting_time(100)]
    positions = torch.from_numpy(np.stack([node_signal(f, 4) for f in sequences])).float()
    draw = Augmentation(positions, Recipe(time_crop=0.5), *_padded(sequences))
    torch.manual_seed(0)
    for _ in range(20):
        chunks = draw()[0, 1].reshape(4, 3)[:, 0]
        steps = torch.diff(chunks)
        # Equal spans of a window of 50 to 100 frames: steps of 12.5 to 25 frames (equal up
        # to where a span's ends cut a frame: frames are steps in time, not a ramp).
        torch.testing.assert_close(steps, steps[:1].expand(3), atol=0.05, rtol=0)
        assert 12.5 - 0.05 <= float(steps[0]) <= 25.0 + 0.05
        assert float(chunks[0]) >= 0.0 and float(chunks[-1]) <= 99.0


def _padded(sequences: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    from tcmplib.recipe import _padded_frames

    return _padded_frames(sequences, Recipe(), 1.0)


# ----------------------------------------------------------------------------- node signal


def test_velocity_appends_chunk_differences() -> None:
    positions = torch.tensor([[[0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 3.0, 2.0, 1.0]]])  # 3 chunks
    expected = torch.tensor(
        [[[0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 3.0, 2.0, 1.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 2.0, 0.0,
           -2.0]]]
    )  # fmt: skip
    torch.testing.assert_close(featurize(positions, velocity=True), expected)
    assert featurize(positions, velocity=False) is positions


def _hand(rotation: np.ndarray | None = None) -> np.ndarray:
    """Two frames of a hand with its palm in the x-y plane, middle MCP along +x."""
    rng = np.random.default_rng(1)
    joints = rng.normal(size=(21, 3)) * 10.0
    joints[0] = 0.0
    joints[3] = [50.0, 0.0, 0.0]  # middle MCP
    joints[2] = [45.0, 15.0, 0.0]  # index MCP
    joints[5] = [40.0, -20.0, 0.0]  # pinky MCP
    frames = np.stack([joints, joints * 1.0])
    return frames if rotation is None else frames @ rotation.T


def test_palm_axes_of_a_hand_built_in_them() -> None:
    axes = palm_axes(_hand())
    # x toward the middle MCP; normal = index x pinky along -z here, so z = (0, 0, -1)
    np.testing.assert_allclose(axes[0], [[1, 0, 0], [0, -1, 0], [0, 0, -1]], atol=1e-12)


@pytest.mark.parametrize("frame", ["palm", "first-palm"])
def test_palm_frames_remove_the_viewpoint(frame: str) -> None:
    rotation = random_rotations(1, 180.0)[0].numpy()
    np.testing.assert_allclose(
        to_frame(_hand(rotation), frame), to_frame(_hand(), frame), atol=1e-9
    )


def test_first_palm_keeps_the_hands_own_rotation_and_palm_removes_it() -> None:
    frames = _hand()
    turn = rotation_matrices(
        torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64), torch.tensor([0.5], dtype=torch.float64)
    )[0].numpy()
    frames[1] = frames[1] @ turn.T  # the hand turns between the two frames
    palm, first = to_frame(frames, "palm"), to_frame(frames, "first-palm")
    np.testing.assert_allclose(palm[1], palm[0], atol=1e-9)
    assert not np.allclose(first[1], first[0])


def test_hand_size_normalization_removes_the_hands_scale() -> None:
    frames = _hand()
    np.testing.assert_allclose(
        node_signal(frames * 1.7, 2, hand_size=True), node_signal(frames, 2, hand_size=True)
    )


# ----------------------------------------------------------------------------- network


def test_neighbourhood_mask_by_hand() -> None:
    one = neighbourhood_mask(1)
    # The wrist touches the five MCPs; the thumb's tip (8) only its DIP (7).
    assert sorted(torch.nonzero(one[0]).flatten().tolist()) == [0, 1, 2, 3, 4, 5]
    assert sorted(torch.nonzero(one[8]).flatten().tolist()) == [7, 8]
    two = neighbourhood_mask(2)
    assert sorted(torch.nonzero(two[8]).flatten().tolist()) == [6, 7, 8]
    assert torch.equal(one, one.T) and torch.equal(two, two.T)


def test_attention_is_zero_outside_the_neighbourhood() -> None:
    model = build_model(GCNConfig(neighbourhood=1), seed=0)
    with torch.no_grad():
        attention = model.attention(torch.randn(2, 21, 84))
    outside = ~neighbourhood_mask(1)
    assert float(attention[..., outside].abs().max()) == 0.0
    torch.testing.assert_close(attention.sum(-1), torch.ones(2, 16, 21))


def test_compact_network_keeps_the_neighbourhood() -> None:
    model = build_model(GCNConfig(neighbourhood=2), seed=0).eval()
    x = torch.randn(3, 21, 84)
    torch.testing.assert_close(compact_model(model)(x), model(x), atol=1e-5, rtol=1e-5)


def test_dropout_acts_in_training_only() -> None:
    plain = build_model(GCNConfig(), seed=0)
    dropped = build_model(GCNConfig(dropout=0.5), seed=0)
    x = torch.randn(4, 21, 84)
    dropped.eval()
    torch.testing.assert_close(dropped(x), plain(x))
    dropped.train()
    torch.manual_seed(0)
    with torch.no_grad():
        features, live = dropped.features(x), plain.features(x)
    kept = features != 0
    # Half of the live features are dropped, the rest scaled by 1 / (1 - 0.5).
    assert abs(float(kept.sum()) / float((live != 0).sum()) - 0.5) < 0.02
    torch.testing.assert_close(features[kept], 2.0 * live[kept])


def test_model_config_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="GCNConfig.dropout"):
        AttentionGCN(GCNConfig(dropout=1.0))
    with pytest.raises(ValueError, match="GCNConfig.neighbourhood: needs the hand's 21"):
        GCNConfig(nodes=6, neighbourhood=1)


# ----------------------------------------------------------------------------- training


def _small_recipe_data(recipe: Recipe):
    raw = generate_synthetic(0)
    keep = np.r_[np.flatnonzero(raw.is_train)[:60], np.flatnonzero(~raw.is_train)[:30]]
    from tcmplib.data.skeleton import SkeletonSequences

    subset = SkeletonSequences(
        name="tiny",
        sequences=tuple(raw.sequences[i] for i in keep),
        labels=raw.labels[keep],
        class_names=raw.class_names,
        subjects=raw.subjects[keep],
        is_train=raw.is_train[keep],
        ids=tuple(raw.ids[i] for i in keep),
    )
    positions = build_dataset(subset, 4, frame=recipe.frame, hand_size=recipe.hand_size)
    train_frames = [subset.sequences[i] for i in np.flatnonzero(subset.is_train)]
    return prepare(positions, recipe, train_frames)


def test_augmented_training_resumes_bit_for_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = Recipe(rotate_deg=30.0, scale=0.1, time_crop=0.2, dropout=0.3, velocity=True)
    data = _small_recipe_data(recipe)
    config = TrainConfig(epochs=6, eval_every=3, checkpoint_every=3, device="cpu")
    gcn = replace(recipe.gcn_config(data), heads=2, channels=8)
    whole = train(build_model(gcn, seed=0), data, config, progress=False)

    original = tcmplib.train._save_checkpoint

    def save_then_stop(*args: Any) -> None:
        original(*args)
        raise KeyboardInterrupt

    folder = tmp_path / "ckpt"
    monkeypatch.setattr(tcmplib.train, "_save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train(build_model(gcn, seed=0), data, config, progress=False, checkpoint_dir=folder)
    monkeypatch.setattr(tcmplib.train, "_save_checkpoint", original)
    resumed = train(build_model(gcn, seed=0), data, config, progress=False, checkpoint_dir=folder)
    assert resumed.resumed_from_epoch == 3
    assert [row["loss"] for row in resumed.history] == [row["loss"] for row in whole.history]
    assert resumed.test == whole.test
    assert data.d_in == 2 * 3 * 4  # velocity doubles the chunk positions


def test_recipe_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from tcmplib.recipe import RECIPES, recipe_from_env

    monkeypatch.delenv("TCMP_RECIPE", raising=False)
    assert recipe_from_env() == ("selected", RECIPES["selected"])
    monkeypatch.setenv("TCMP_RECIPE", "as-written")
    assert recipe_from_env() == ("as-written", AS_WRITTEN)
    monkeypatch.setenv("TCMP_RECIPE", "best")
    with pytest.raises(ValueError, match="^TCMP_RECIPE: recipe: expected one of"):
        recipe_from_env()
