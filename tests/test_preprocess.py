"""Frames to node signals: shapes, hand-checked chunk means, short sequences, train-only
normalization, and the dataset entry point."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tcmplib.data import SkeletonSequences, build_dataset, load_dataset
from tcmplib.data.preprocess import (
    centre_on_wrist,
    chunk_means,
    node_signal,
    node_signals,
    resample,
)


def ramp_sequence(frames: int, offset: float = 0.0) -> np.ndarray:
    """Joint j, coordinate k at frame t = 100 j + 10 k + t + offset (wrist: joint 0)."""
    t = np.arange(frames)[:, None, None]
    j = np.arange(21)[None, :, None]
    k = np.arange(3)[None, None, :]
    return (100.0 * j + 10.0 * k + t + offset).astype(np.float64)


def test_centring_puts_every_wrist_at_the_origin() -> None:
    frames = np.random.default_rng(0).normal(size=(9, 21, 3))
    centred = centre_on_wrist(frames)
    assert np.all(centred[:, 0] == 0.0)
    np.testing.assert_allclose(centred[:, 5] - centred[:, 3], frames[:, 5] - frames[:, 3])


def test_chunk_means_by_hand() -> None:
    # 7 frames into 3 chunks: np.array_split sizes 3, 2, 2 -> frames {0,1,2}, {3,4}, {5,6}.
    frames = np.arange(7.0)[:, None]
    np.testing.assert_allclose(chunk_means(frames, 3)[:, 0], [1.0, 3.5, 5.5])


def test_node_signal_layout_is_chunk_major_by_hand() -> None:
    # After wrist centring joint j coordinate k is 100 j (the t and k terms cancel), so use
    # a sequence whose wrist stays put to see the time axis: 5 frames, 2 chunks {0,1,2} {3,4}.
    frames = ramp_sequence(5)
    frames[:, 0] = 0.0
    signal = node_signal(frames, chunks=2)
    assert signal.shape == (21, 6)
    joint = 4
    expected = [
        400 + 0 + 1,
        400 + 10 + 1,
        400 + 20 + 1,
        400 + 0 + 3.5,
        400 + 10 + 3.5,
        400 + 20 + 3.5,
    ]
    np.testing.assert_allclose(signal[joint], expected)
    np.testing.assert_allclose(signal[0], 0.0)


def test_short_sequences_are_resampled_to_the_chunk_count() -> None:
    frames = ramp_sequence(3)
    frames[:, 0] = 0.0
    up = resample(frames, 5)
    np.testing.assert_allclose(up[:, 7, 1], 700 + 10 + np.array([0.0, 0.5, 1.0, 1.5, 2.0]))
    signal = node_signal(frames, chunks=5)  # 3 frames -> 5 -> one frame per chunk
    np.testing.assert_allclose(signal[7, 1::3], up[:, 7, 1])
    assert node_signal(ramp_sequence(1), chunks=4).shape == (21, 12)


def test_long_sequences_are_not_resampled() -> None:
    frames = np.random.default_rng(1).normal(size=(40, 21, 3))
    assert resample(frames, 40) is frames


def raw_set(train: list[np.ndarray], test: list[np.ndarray]) -> SkeletonSequences:
    n = len(train) + len(test)
    return SkeletonSequences(
        name="toy",
        sequences=tuple(train + test),
        labels=np.arange(n, dtype=np.int64) % 2,
        class_names=("a", "b"),
        subjects=np.ones(n, dtype=np.int64),
        is_train=np.array([True] * len(train) + [False] * len(test)),
        ids=tuple(f"s{i}" for i in range(n)),
    )


def test_normalization_uses_training_data_only() -> None:
    rng = np.random.default_rng(2)
    train = [rng.normal(scale=30.0, size=(int(rng.integers(5, 60)), 21, 3)) for _ in range(6)]
    test_a = [rng.normal(scale=30.0, size=(20, 21, 3)) for _ in range(3)]
    test_b = [1000.0 * rng.normal(size=(50, 21, 3)) for _ in range(5)]
    a, b = (
        build_dataset(raw_set(train, test_a), chunks=4),
        build_dataset(raw_set(train, test_b), chunks=4),
    )
    assert torch.equal(a.x_train, b.x_train)
    assert a.meta["scale_mm"] == b.meta["scale_mm"]
    scale = np.std(node_signals(train, 4))
    np.testing.assert_allclose(
        a.x_test.numpy(), node_signals(test_a, 4) / scale, rtol=1e-5, atol=1e-6
    )
    assert abs(float(a.x_train.std()) - 1.0) < 1e-3


def test_dataset_shapes_and_types() -> None:
    data = load_dataset("synthetic", chunks=4)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.x_train.shape == (600, 21, 12) and data.x_test.shape == (575, 21, 12)
    assert (data.num_nodes, data.d_in, data.num_classes) == (21, 12, 45)
    assert data.meta["seed"] == 0 and data.meta["chunks"] == 4


def test_unknown_dataset_and_bad_chunks_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown data set 'ntu'.*synthetic, fpha"):
        load_dataset("ntu")
    with pytest.raises(ValueError, match="chunks"):
        load_dataset("synthetic", chunks=0)


def test_synthetic_cache_round_trips_and_is_keyed_by_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TCMP_CACHE", str(tmp_path))
    first = load_dataset("synthetic", chunks=4, seed=3)
    assert first.meta["cache"]["hit"] is False
    again = load_dataset("synthetic", chunks=4, seed=3)
    assert again.meta["cache"]["hit"] is True
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(first, name), getattr(again, name))
    assert again.class_names == first.class_names
    other = load_dataset("synthetic", chunks=4, seed=4)
    assert other.meta["cache"]["hit"] is False
    assert not torch.equal(other.x_train, first.x_train)
    assert len(list(tmp_path.glob("synthetic-*.npz"))) == 2
    uncached = load_dataset("synthetic", chunks=4, seed=3, cache=False)
    assert "cache" not in uncached.meta and torch.equal(uncached.x_train, first.x_train)
