"""Hand topology in FPHA's joint order, and the container for raw skeleton sequences.

The FPHA annotations list the 21 joints MCPs-first (wrist, the five MCPs, then PIP, DIP and
TIP of each finger in turn), not finger by finger. Everything in the package (the synthetic
hand, the preprocessing and the plots) uses this one order, so a node index means the same
joint everywhere and a synthetic sequence is a drop-in replacement for a real one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "JOINT_NAMES",
    "NUM_JOINTS",
    "WRIST",
    "FINGERS",
    "FINGER_CHAINS",
    "FINGER_COLORS",
    "BONES",
    "bone_lengths",
    "SkeletonSequences",
]

#: Joint names in FPHA's order (official README): T/I/M/R/P = thumb, index, middle, ring, pinky.
JOINT_NAMES: tuple[str, ...] = (
    "Wrist",
    "TMCP", "IMCP", "MMCP", "RMCP", "PMCP",
    "TPIP", "TDIP", "TTIP",
    "IPIP", "IDIP", "ITIP",
    "MPIP", "MDIP", "MTIP",
    "RPIP", "RDIP", "RTIP",
    "PPIP", "PDIP", "PTIP",
)  # fmt: skip

NUM_JOINTS: int = len(JOINT_NAMES)

#: Index of the wrist, the root of the kinematic tree and the origin of the preprocessing.
WRIST: int = 0

#: Finger names, in the order their MCPs appear (joints 1-5).
FINGERS: tuple[str, ...] = ("thumb", "index", "middle", "ring", "pinky")

#: For each finger, its joints from the wrist to the tip: (wrist, MCP, PIP, DIP, TIP).
FINGER_CHAINS: dict[str, tuple[int, ...]] = {
    finger: (WRIST, 1 + f, 6 + 3 * f, 7 + 3 * f, 8 + 3 * f) for f, finger in enumerate(FINGERS)
}

#: One colour per finger, shared by every plot so a finger is recognisable across figures.
FINGER_COLORS: dict[str, str] = {
    "thumb": "tab:red",
    "index": "tab:orange",
    "middle": "tab:green",
    "ring": "tab:blue",
    "pinky": "tab:purple",
}

#: The 20 bones as (parent, child) joint pairs, finger by finger from the wrist outwards.
BONES: tuple[tuple[int, int], ...] = tuple(
    (chain[k], chain[k + 1]) for chain in FINGER_CHAINS.values() for k in range(len(chain) - 1)
)


def bone_lengths(frames: np.ndarray) -> np.ndarray:
    """Length of every bone of :data:`BONES` in every frame: (..., 21, 3) -> (..., 20)."""
    parents = np.array([p for p, _ in BONES])
    children = np.array([c for _, c in BONES])
    return np.linalg.norm(frames[..., children, :] - frames[..., parents, :], axis=-1)


@dataclass(frozen=True)
class SkeletonSequences:
    """Raw skeleton sequences with their labels and split, before any preprocessing.

    The FPHA loader and the synthetic generator both return this, so the path from frames
    to node signals is one shared piece of code whatever the source.
    """

    name: str
    #: One (T_i, 21, 3) float64 array per sequence, millimetres, camera coordinates.
    sequences: tuple[np.ndarray, ...]
    #: int64 (N,) class index of each sequence.
    labels: np.ndarray
    class_names: tuple[str, ...]
    #: int64 (N,) subject number of each sequence (1-based, as in FPHA's ``Subject_N``).
    subjects: np.ndarray
    #: bool (N,) True for the training split.
    is_train: np.ndarray
    #: A readable id per sequence, e.g. ``Subject_1/open_juice_bottle/2``.
    ids: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.sequences)
        for attr in ("labels", "subjects", "is_train", "ids"):
            if len(getattr(self, attr)) != n:
                raise ValueError(
                    f"SkeletonSequences.{attr}: expected {n} entries (one per sequence), "
                    f"got {len(getattr(self, attr))}"
                )
        for i, seq in enumerate(self.sequences):
            if seq.ndim != 3 or seq.shape[1:] != (NUM_JOINTS, 3) or seq.shape[0] < 1:
                raise ValueError(
                    f"SkeletonSequences.sequences[{i}] ({self.ids[i]}): expected shape "
                    f"(T >= 1, {NUM_JOINTS}, 3), got {seq.shape}"
                )

    @property
    def lengths(self) -> np.ndarray:
        """Number of frames of each sequence, int64 (N,)."""
        return np.array([len(seq) for seq in self.sequences], dtype=np.int64)

    def counts(self) -> dict[str, int | float]:
        """Sequence and frame counts overall and per split: the numbers a loader must reproduce."""
        lengths = self.lengths
        return {
            "sequences": len(self.sequences),
            "frames": int(lengths.sum()),
            "classes": len(self.class_names),
            "subjects": len(np.unique(self.subjects)),
            "train_sequences": int(self.is_train.sum()),
            "test_sequences": int((~self.is_train).sum()),
            "train_frames": int(lengths[self.is_train].sum()),
            "test_frames": int(lengths[~self.is_train].sum()),
            "min_length": int(lengths.min()),
            "median_length": float(np.median(lengths)),
            "max_length": int(lengths.max()),
        }
