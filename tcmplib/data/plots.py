"""Pictures of hands, motions and node signals; every function returns its Figure.

All plots colour the fingers with :data:`~tcmplib.data.skeleton.FINGER_COLORS`, so that a
finger is the same colour in the 3D skeleton, the small multiples and the node-signal plots.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from mpl_toolkits.mplot3d.axes3d import Axes3D

from tcmplib.data.preprocess import centre_on_wrist, chunk_means, resample
from tcmplib.data.skeleton import (
    FINGER_CHAINS,
    FINGER_COLORS,
    JOINT_NAMES,
    NUM_JOINTS,
    WRIST,
    SkeletonSequences,
)

__all__ = [
    "plot_hand",
    "plot_sequence",
    "plot_chunking",
    "plot_node_signal",
    "plot_class_examples",
    "plot_lengths",
]


def _draw_hand(ax: Axes3D, frame: np.ndarray, alpha: float = 1.0, labels: bool = False) -> None:
    """Bones of one (21, 3) frame on a 3D axis, one colour per finger."""
    for finger, chain in FINGER_CHAINS.items():
        points = frame[list(chain)]
        ax.plot(*points.T, color=FINGER_COLORS[finger], lw=2, alpha=alpha, marker="o", ms=3)
    ax.scatter(*frame[WRIST], color="black", s=30, alpha=alpha)
    if labels:
        for index, name in enumerate(JOINT_NAMES):
            ax.text(*frame[index], f" {index}:{name}", fontsize=6)


def _equal_box(ax: Axes3D, points: np.ndarray) -> None:
    """Equal scales on the three axes, so that a hand is not stretched."""
    centre = (points.max(axis=0) + points.min(axis=0)) / 2
    half = (points.max(axis=0) - points.min(axis=0)).max() / 2 + 5.0
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] - half, centre[1] + half)
    ax.set_zlim(centre[2] - half, centre[2] + half)
    ax.set_box_aspect((1, 1, 1))


def plot_hand(frame: np.ndarray, *, title: str = "", labels: bool = True) -> Figure:
    """One hand pose (21, 3) in 3D with its bones, fingers coloured and joints numbered.

    The view looks from the camera's side (FPHA: x right, y down, z depth), so the picture
    matches what the egocentric camera saw.
    """
    fig = plt.figure(figsize=(5, 5))
    ax = fig.add_subplot(projection="3d")
    _draw_hand(ax, frame, labels=labels)
    _equal_box(ax, frame)
    ax.view_init(elev=-70, azim=-90)
    ax.set_xlabel("x (mm)")
    ax.set_ylabel("y (mm)")
    ax.set_zlabel("z (mm)")
    handles = [plt.Line2D([], [], color=c, lw=2, label=f) for f, c in FINGER_COLORS.items()]
    ax.legend(handles=handles, loc="upper left", fontsize=7)
    ax.set_title(title)
    return fig


def plot_sequence(
    frames: np.ndarray, *, panels: int = 6, centred: bool = True, title: str = ""
) -> Figure:
    """Small multiples: ``panels`` evenly spaced frames of a (T, 21, 3) sequence, same axes.

    With ``centred`` the frames are shown wrist-centred, as the model sees them; otherwise
    in camera coordinates, where the hand also wanders through the view.
    """
    shown = centre_on_wrist(frames) if centred else frames
    picks = np.linspace(0, len(frames) - 1, min(panels, len(frames))).round().astype(int)
    fig = plt.figure(figsize=(2.4 * len(picks), 2.8))
    for k, t in enumerate(picks):
        ax = fig.add_subplot(1, len(picks), k + 1, projection="3d")
        _draw_hand(ax, shown[t])
        _equal_box(ax, shown[picks].reshape(-1, 3))
        ax.view_init(elev=-70, azim=-90)
        ax.set_title(f"frame {t}", fontsize=9)
        ax.set_xticklabels([])
        ax.set_yticklabels([])
        ax.set_zticklabels([])
    fig.suptitle(title)
    return fig


def plot_chunking(frames: np.ndarray, chunks: int, *, joint: int = 8) -> Figure:
    """How one joint's trajectory becomes C chunk means: wrist-centred xyz against time,
    chunk boundaries, and each chunk's mean as a flat segment."""
    centred = centre_on_wrist(frames)
    resampled = resample(centred, max(len(centred), chunks))
    means = chunk_means(resampled, chunks)[:, joint]  # (C, 3)
    bounds = np.cumsum([0] + [len(p) for p in np.array_split(np.arange(len(resampled)), chunks)])
    fig, ax = plt.subplots(figsize=(8, 3))
    colours = ("tab:red", "tab:green", "tab:blue")
    for k, (axis, colour) in enumerate(zip("xyz", colours, strict=True)):
        ax.plot(resampled[:, joint, k], color=colour, lw=1, alpha=0.6, label=f"{axis} per frame")
        ax.hlines(means[:, k], bounds[:-1], bounds[1:] - 1, color=colour, lw=2.5)
    for bound in bounds[1:-1]:
        ax.axvline(bound - 0.5, color="grey", lw=0.5, alpha=0.5)
    ax.set_xlabel(f"frame (after resampling to {len(resampled)})")
    ax.set_ylabel("mm from the wrist")
    ax.set_title(f"joint {joint} ({JOINT_NAMES[joint]}): {chunks} chunk means (thick)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def plot_node_signal(signal: np.ndarray, *, title: str = "") -> Figure:
    """A node signal (21, 3C) as an image: one row per joint, columns chunk-major (x, y, z)."""
    fig, ax = plt.subplots(figsize=(8, 3.6))
    limit = float(np.abs(signal).max()) or 1.0
    image = ax.imshow(signal, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit)
    ax.set_yticks(range(NUM_JOINTS), JOINT_NAMES, fontsize=6)
    chunks = signal.shape[1] // 3
    step = max(1, chunks // 7)
    ax.set_xticks(range(0, 3 * chunks, 3 * step), [f"c{c}" for c in range(0, chunks, step)])
    ax.set_xlabel("feature 3c + k: coordinate k (x, y, z) of chunk c")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig


def plot_class_examples(
    sequences: Sequence[np.ndarray], names: Sequence[str], *, joint: int = 8
) -> Figure:
    """Wrist-centred trajectory of one joint (default: thumb tip) for a few sequences, in 3D:
    a compact way to compare how classes move."""
    fig = plt.figure(figsize=(3 * len(sequences), 3.2))
    for k, (frames, name) in enumerate(zip(sequences, names, strict=True)):
        ax = fig.add_subplot(1, len(sequences), k + 1, projection="3d")
        path = centre_on_wrist(frames)[:, joint]
        ax.plot(*path.T, color="tab:gray", lw=1)
        ax.scatter(*path.T, c=np.linspace(0, 1, len(path)), cmap="viridis", s=6)
        _draw_hand(ax, centre_on_wrist(frames)[0], alpha=0.35)
        _equal_box(ax, np.concatenate([path, centre_on_wrist(frames)[0]]))
        ax.view_init(elev=-70, azim=-90)
        ax.set_title(name, fontsize=8)
        ax.set_xticklabels([])
        ax.set_yticklabels([])
        ax.set_zticklabels([])
    fig.suptitle(
        f"path of joint {joint} ({JOINT_NAMES[joint]}) relative to the wrist, dark = start"
    )
    return fig


def plot_lengths(raw: SkeletonSequences, *, chunks: int | None = None) -> Figure:
    """Histogram of sequence lengths per split (log-spaced bins: lengths span two decades),
    with the chunk count marked: sequences left of it get resampled up."""
    lengths = raw.lengths
    bins = np.geomspace(max(1, lengths.min()), lengths.max() + 1, 30)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(
        [lengths[raw.is_train], lengths[~raw.is_train]],
        bins=bins.tolist(),
        label=["train", "test"],
        stacked=True,
    )
    if chunks is not None:
        ax.axvline(chunks, color="black", ls="--", lw=1, label=f"C = {chunks} chunks")
    ax.set_xscale("log")
    ax.set_xlabel("frames per sequence")
    ax.set_ylabel("sequences")
    ax.set_title(f"{raw.name}: {len(lengths)} sequences, median {np.median(lengths):g} frames")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
