"""Synthetic hand actions: determinism, sizes, split structure, lengths and hand geometry."""

from __future__ import annotations

import numpy as np
import pytest

from tcmplib.data import (
    BONES,
    JOINT_NAMES,
    SkeletonSequences,
    SyntheticConfig,
    describe_classes,
    generate_synthetic,
)
from tcmplib.data.skeleton import FINGER_CHAINS, bone_lengths
from tcmplib.data.synthetic import hand_pose

SMALL = SyntheticConfig(n_train=90, n_test=90)


@pytest.fixture(scope="module")
def full() -> SkeletonSequences:
    return generate_synthetic(seed=0)


def test_same_seed_gives_identical_arrays() -> None:
    a, b = generate_synthetic(3, SMALL), generate_synthetic(3, SMALL)
    assert a.ids == b.ids
    np.testing.assert_array_equal(a.labels, b.labels)
    for x, y in zip(a.sequences, b.sequences, strict=True):
        np.testing.assert_array_equal(x, y)


def test_different_seeds_differ() -> None:
    a, b = generate_synthetic(0, SMALL), generate_synthetic(1, SMALL)
    assert a.class_names == b.class_names  # classes are fixed, the draws are not
    assert not np.array_equal(a.lengths, b.lengths) or not np.array_equal(
        a.sequences[0], b.sequences[0]
    )


def test_sizes_and_classes_match_fpha(full: SkeletonSequences) -> None:
    counts = full.counts()
    assert (counts["sequences"], counts["classes"], counts["subjects"]) == (1175, 45, 6)
    assert (counts["train_sequences"], counts["test_sequences"]) == (600, 575)
    per_class_train = np.bincount(full.labels[full.is_train], minlength=45)
    per_class_test = np.bincount(full.labels[~full.is_train], minlength=45)
    assert set(per_class_train) <= {13, 14} and set(per_class_test) <= {12, 13}
    assert len(set(full.class_names)) == 45 == len(describe_classes())
    assert len(set(full.ids)) == 1175


def test_every_subject_in_both_halves_of_every_class(full: SkeletonSequences) -> None:
    for label in range(45):
        for half in (full.is_train, ~full.is_train):
            assert set(full.subjects[half & (full.labels == label)]) == set(range(1, 7))


def test_lengths_in_fpha_range(full: SkeletonSequences) -> None:
    lengths = full.lengths
    assert lengths.min() >= 7 and lengths.max() <= 1150
    assert 60 <= np.median(lengths) <= 100
    assert (lengths < 28).any()  # some sequences are shorter than the default chunk count


def test_sequences_are_finite_millimetre_hands(full: SkeletonSequences) -> None:
    frames = np.concatenate(full.sequences[::25])
    assert frames.shape[1:] == (len(JOINT_NAMES), 3) and np.isfinite(frames).all()
    lengths = bone_lengths(frames)
    assert lengths.shape[1] == len(BONES) == 20
    assert 12 < np.median(lengths) < 60
    assert (np.median(lengths, axis=0) > 10).all() and (np.median(lengths, axis=0) < 90).all()
    assert 250 < np.median(frames[..., 2]) < 600  # depth in front of an egocentric camera


def test_hand_pose_bones_keep_their_length_when_curling() -> None:
    curls = np.linspace(0.0, 1.0, 11)[:, None].repeat(5, axis=1)
    lengths = bone_lengths(hand_pose(curls))
    np.testing.assert_allclose(lengths, lengths[:1].repeat(11, axis=0), rtol=1e-9)
    fist = hand_pose(np.ones((1, 5)))[0]
    flat = hand_pose(np.zeros((1, 5)))[0]
    tip = FINGER_CHAINS["index"][-1]
    assert np.linalg.norm(fist[tip]) < np.linalg.norm(flat[tip])  # curling brings the tip back


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="n_train"):
        SyntheticConfig(n_train=0)
    with pytest.raises(ValueError, match="min_length"):
        SyntheticConfig(min_length=50, max_length=10)
