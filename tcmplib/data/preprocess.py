"""From skeleton sequences to graph node signals, shared by FPHA and the synthetic data.

A sequence of T frames (T, 21, 3) becomes one node signal X of shape (21, 3C):

1. **Centre each frame on its own wrist** (joint 0). What remains is the hand's shape and
   orientation, not where the hand is in the camera's field of view; centring on the first
   frame's wrist instead keeps the hand's wandering, which measurably hurts on FPHA.
   The wrist node itself is then 0 in every frame.
2. **Resample** linearly in time to ``max(T, C)`` frames, so that a sequence shorter than C
   still has at least one frame per chunk (longer sequences are left as they are).
3. **Chunk**: split the frames into C contiguous chunks (``np.array_split``: the first
   ``T' mod C`` chunks get one frame more) and average xyz per joint within each chunk.
4. **Lay out** the chunk means chunk-major: feature ``3*c + k`` of a node is coordinate
   k (x, y, z) of chunk c. Every node carries its own trajectory, C points long.
5. **Normalize** by dividing by one scalar, the standard deviation of all training
   features. One scalar keeps the geometry (x, y and z stay on the same scale) and is fitted
   on the training split only, so nothing about the test set leaks into the inputs.

Two options of the training recipe (:mod:`tcmplib.recipe`) change steps 1 and 5; both are
off in the recipe as the paper writes it:

- ``frame``: after centring, express each frame in a frame of axes fixed to the palm
  (``"palm"``: every frame in its own palm axes, so the hand's rotation over time is gone as
  well as the viewpoint), or the whole sequence in the palm axes of its first frame
  (``"first-palm"``: the viewpoint is gone, the hand's rotation relative to its start stays).
  The axes (:func:`palm_axes`): x from the wrist to the middle finger's MCP, z the palm's
  normal (index MCP x pinky MCP), y completing a right-handed frame.
- ``hand_size``: divide each sequence by its mean bone length, so that a large and a small
  hand performing the same action give the same signal.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tcmplib.data.skeleton import NUM_JOINTS, WRIST, bone_lengths

# Joints that span the palm (FPHA order, see tcmplib.data.skeleton.JOINT_NAMES).
INDEX_MCP, MIDDLE_MCP, PINKY_MCP = 2, 3, 5

FRAMES: tuple[str, ...] = ("wrist", "palm", "first-palm")

__all__ = [
    "FRAMES",
    "centre_on_wrist",
    "palm_axes",
    "to_frame",
    "mean_bone_length",
    "signal_frames",
    "resample",
    "chunk_means",
    "node_signal",
    "node_signals",
    "fit_scale",
]


def centre_on_wrist(frames: np.ndarray) -> np.ndarray:
    """Subtract each frame's wrist position from all its joints: (T, 21, 3) -> (T, 21, 3)."""
    return frames - frames[:, WRIST : WRIST + 1, :]


def palm_axes(frames: np.ndarray) -> np.ndarray:
    """The palm's axes in every frame, as the rows of a rotation: (T, 21, 3) -> (T, 3, 3).

    Rows are x (wrist -> middle MCP), y = z x x, z (normal of the plane wrist, index MCP,
    pinky MCP, orthogonalized against x). ``axes[t] @ p`` writes a point p of frame t in them.
    """
    wrist = frames[:, WRIST]
    x = frames[:, MIDDLE_MCP] - wrist
    normal = np.cross(frames[:, INDEX_MCP] - wrist, frames[:, PINKY_MCP] - wrist)
    x = x / _norm(x, "wrist -> middle MCP")
    z = normal - np.sum(normal * x, axis=-1, keepdims=True) * x
    z = z / _norm(z, "palm normal")
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def _norm(vectors: np.ndarray, what: str) -> np.ndarray:
    lengths = np.linalg.norm(vectors, axis=-1, keepdims=True)
    if not np.all(lengths > 1e-9):
        raise ValueError(f"palm_axes: the {what} has zero length in some frame")
    return lengths


def to_frame(centred: np.ndarray, frame: str) -> np.ndarray:
    """Wrist-centred frames (T, 21, 3) in the coordinate frame ``frame`` (see the module doc)."""
    if frame == "wrist":
        return centred
    if frame == "palm":
        return np.einsum("tij,tnj->tni", palm_axes(centred), centred)
    if frame == "first-palm":
        return np.einsum("ij,tnj->tni", palm_axes(centred[:1])[0], centred)
    raise ValueError(f"frame: expected one of {', '.join(FRAMES)}, got {frame!r}")


def mean_bone_length(frames: np.ndarray) -> float:
    """The mean length of the hand's 20 bones over all frames of a sequence (millimetres)."""
    length = float(bone_lengths(frames).mean())
    if not np.isfinite(length) or length <= 0.0:
        raise ValueError(f"hand_size: mean bone length {length}, expected a positive number")
    return length


def resample(frames: np.ndarray, length: int) -> np.ndarray:
    """Linear interpolation in time to ``length`` frames; the first and last frames are kept."""
    if length < 1:
        raise ValueError(f"resample: length must be >= 1, got {length}")
    count = len(frames)
    if count == length:
        return frames
    if count == 1:
        return np.repeat(frames, length, axis=0)
    position = np.linspace(0.0, count - 1, length)
    lower = np.minimum(np.floor(position).astype(np.int64), count - 2)
    weight = (position - lower)[:, None, None]
    return (1.0 - weight) * frames[lower] + weight * frames[lower + 1]


def chunk_means(frames: np.ndarray, chunks: int) -> np.ndarray:
    """Mean of each of ``chunks`` contiguous chunks of frames: (T, ...) -> (C, ...).

    Chunk sizes are those of ``np.array_split``: the first ``T mod C`` chunks get one more.

    Needs T >= chunks (use :func:`resample` first), so that no chunk is empty.
    """
    if chunks < 1 or len(frames) < chunks:
        raise ValueError(
            f"chunk_means: need 1 <= chunks <= number of frames, got chunks={chunks} "
            f"for {len(frames)} frames"
        )
    sizes = np.array([len(part) for part in np.array_split(np.arange(len(frames)), chunks)])
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    sums = np.add.reduceat(frames, starts, axis=0)
    return sums / sizes.reshape((-1,) + (1,) * (frames.ndim - 1))


def signal_frames(
    frames: np.ndarray, *, frame: str = "wrist", hand_size: bool = False
) -> np.ndarray:
    """Steps 1 (with the recipe's ``frame`` and ``hand_size``) before any chunking: the
    frames whose chunk means are the node signal, (T, 21, 3) -> (T, 21, 3)."""
    if frames.ndim != 3 or frames.shape[1:] != (NUM_JOINTS, 3):
        raise ValueError(
            f"node_signal: expected frames of shape (T, {NUM_JOINTS}, 3), got {frames.shape}"
        )
    centred = to_frame(centre_on_wrist(frames), frame)
    if hand_size:
        centred = centred / mean_bone_length(frames)
    return centred


def node_signal(
    frames: np.ndarray, chunks: int, *, frame: str = "wrist", hand_size: bool = False
) -> np.ndarray:
    """One sequence (T, 21, 3) -> its unnormalized node signal (21, 3 * chunks), chunk-major.

    ``frame`` and ``hand_size`` are the recipe's options (module doc); the defaults are the
    paper's signal.
    """
    centred = signal_frames(frames, frame=frame, hand_size=hand_size)
    means = chunk_means(resample(centred, max(len(centred), chunks)), chunks)  # (C, 21, 3)
    return means.transpose(1, 0, 2).reshape(NUM_JOINTS, 3 * chunks)


def node_signals(
    sequences: Sequence[np.ndarray], chunks: int, *, frame: str = "wrist", hand_size: bool = False
) -> np.ndarray:
    """Stack :func:`node_signal` over sequences: (N, 21, 3 * chunks) float64, unnormalized."""
    if not sequences:
        return np.zeros((0, NUM_JOINTS, 3 * chunks))
    return np.stack(
        [node_signal(frames, chunks, frame=frame, hand_size=hand_size) for frames in sequences]
    )


def fit_scale(train_signals: np.ndarray) -> float:
    """The normalization constant: standard deviation of every training feature value."""
    scale = float(np.std(train_signals))
    if not np.isfinite(scale) or scale <= 0.0:
        raise ValueError(
            f"fit_scale: training features have std {scale}, expected a positive number"
        )
    return scale
