"""The model-ready data set: node signals and labels as tensors, for either source.

:func:`load_dataset` is the one entry point the rest of the package uses. It turns raw
sequences (synthetic, or FPHA read from the user's copy) into normalized node signals with
the shared preprocessing of :mod:`tcmplib.data.preprocess`.

Preprocessed FPHA is cached outside the repository (``$TCMP_CACHE``, else
``$XDG_CACHE_HOME/tcmplib``, else ``~/.cache/tcmplib``), because parsing the archive takes
seconds and FPHA must never end up inside the project. The cache key is the sha256 of the
source content (see :func:`~tcmplib.data.fpha.fpha_fingerprint`) together with the
preprocessing settings, so a changed file or setting can never be served a stale array.
The synthetic data is regenerated on every call instead (a few seconds): it needs no
files and can never be stale.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tcmplib.data.fpha import fpha_fingerprint, load_fpha, resolve_fpha_root
from tcmplib.data.preprocess import FRAMES, fit_scale, node_signals
from tcmplib.data.skeleton import SkeletonSequences
from tcmplib.data.synthetic import generate_synthetic

__all__ = ["SkeletonDataset", "DATASET_NAMES", "load_dataset", "build_dataset", "cache_dir"]

DATASET_NAMES: tuple[str, ...] = ("synthetic", "fpha")

#: Bumped whenever the preprocessing changes what it computes, so old caches are not reused.
PREPROCESSING_VERSION = 1


@dataclass(frozen=True)
class SkeletonDataset:
    """Node signals (N, 21, 3C) and labels of both splits, normalized with train statistics."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: tuple[str, ...]
    meta: dict[str, Any]
    #: A fresh random draw of the training inputs, on a device, for every epoch (the recipe's
    #: augmentation, :class:`tcmplib.recipe.Augmentation`); None: ``x_train`` as it is.
    draw_train: Callable[[torch.device], torch.Tensor] | None = field(
        default=None, compare=False, repr=False
    )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def num_nodes(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def d_in(self) -> int:
        return int(self.x_train.shape[2])


def build_dataset(
    raw: SkeletonSequences, chunks: int, *, frame: str = "wrist", hand_size: bool = False
) -> SkeletonDataset:
    """Preprocess raw sequences into a :class:`SkeletonDataset` (see :mod:`.preprocess`).

    The scale is fitted on the training sequences alone; the test signals are divided by it
    afterwards, so the training tensors do not depend on the test set at all. ``frame`` and
    ``hand_size`` are options of the training recipe (the defaults: the paper's signal).
    """
    if chunks < 1:
        raise ValueError(f"chunks: expected a positive number of temporal chunks, got {chunks}")
    if frame not in FRAMES:
        raise ValueError(f"frame: expected one of {', '.join(FRAMES)}, got {frame!r}")
    train_idx = np.flatnonzero(raw.is_train)
    test_idx = np.flatnonzero(~raw.is_train)
    x_train = node_signals(
        [raw.sequences[i] for i in train_idx], chunks, frame=frame, hand_size=hand_size
    )
    x_test = node_signals(
        [raw.sequences[i] for i in test_idx], chunks, frame=frame, hand_size=hand_size
    )
    scale = fit_scale(x_train)
    meta = {
        **raw.meta,
        "chunks": chunks,
        "d_in": 3 * chunks,
        "scale_mm": scale,
        "preprocessing": {
            "version": PREPROCESSING_VERSION,
            "centre": "each frame on its own wrist (joint 0)",
            "frame": frame,
            "hand_size": hand_size,
            "resample": "linear, to max(T, chunks) frames",
            "chunking": "np.array_split into chunks contiguous parts, mean xyz per joint",
            "feature_order": "chunk-major: feature 3*c + k = coordinate k (x, y, z) of chunk c",
            "normalization": "divide by the std of all training features (scale_mm)",
        },
    }
    return SkeletonDataset(
        name=raw.name,
        x_train=torch.from_numpy((x_train / scale).astype(np.float32)),
        y_train=torch.from_numpy(raw.labels[train_idx].astype(np.int64)),
        x_test=torch.from_numpy((x_test / scale).astype(np.float32)),
        y_test=torch.from_numpy(raw.labels[test_idx].astype(np.int64)),
        class_names=raw.class_names,
        meta=meta,
    )


def cache_dir() -> Path:
    """Folder for preprocessed data sets: ``$TCMP_CACHE``, else the user cache folder."""
    explicit = os.environ.get("TCMP_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tcmplib"


def _save(path: Path, dataset: SkeletonDataset) -> None:
    """Write atomically (temp file in the same folder, then ``os.replace``): a reader never
    sees a half-written cache, and two processes filling it at once cannot corrupt it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp.npz")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(
                handle,
                x_train=dataset.x_train.numpy(),
                y_train=dataset.y_train.numpy(),
                x_test=dataset.x_test.numpy(),
                y_test=dataset.y_test.numpy(),
                class_names=np.array(dataset.class_names),
                meta=np.array(json.dumps(dataset.meta)),
            )
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load(path: Path, name: str) -> SkeletonDataset:
    with np.load(path, allow_pickle=False) as arrays:
        return SkeletonDataset(
            name=name,
            x_train=torch.from_numpy(arrays["x_train"]),
            y_train=torch.from_numpy(arrays["y_train"]),
            x_test=torch.from_numpy(arrays["x_test"]),
            y_test=torch.from_numpy(arrays["y_test"]),
            class_names=tuple(str(c) for c in arrays["class_names"]),
            meta=json.loads(str(arrays["meta"])),
        )


def _load_fpha_dataset(
    chunks: int, root: str | Path | None, cache: bool, options: dict[str, Any]
) -> SkeletonDataset:
    source = resolve_fpha_root(root)
    fingerprint = fpha_fingerprint(source)
    settings = json.dumps(
        {"chunks": chunks, "version": PREPROCESSING_VERSION, **_non_default(options)},
        sort_keys=True,
    )
    key = hashlib.sha256(f"{fingerprint}|{settings}".encode()).hexdigest()[:24]
    path = cache_dir() / f"fpha-{key}.npz"
    if cache and path.is_file():
        dataset = _load(path, "fpha")
        dataset.meta["cache"] = {"path": str(path), "hit": True}
        return dataset
    raw = load_fpha(root)
    raw.meta["source_sha256"] = fingerprint
    dataset = build_dataset(raw, chunks, **options)
    if cache:
        _save(path, dataset)
        dataset.meta["cache"] = {"path": str(path), "hit": False}
    return dataset


def load_dataset(
    name: str = "synthetic",
    *,
    chunks: int = 28,
    seed: int = 0,
    root: str | Path | None = None,
    cache: bool = True,
    frame: str = "wrist",
    hand_size: bool = False,
) -> SkeletonDataset:
    """The data set ``name`` as normalized node signals (N, 21, 3 * chunks).

    - ``"synthetic"``: generated from ``seed`` (see :mod:`.synthetic`); ``root`` is not
      used. With ``cache`` the arrays are kept in :func:`cache_dir`, keyed by the seed, the
      chunk count and the source code of :mod:`tcmplib.data`.
    - ``"fpha"``: read from ``root`` or ``$FPHA_ROOT`` (a folder holding
      ``Hand_pose_annotation_v1/`` or its ``.tar.xz``/``.tar.gz``, plus
      ``data_split_action_recognition.txt``; or the archive itself). The official split is
      fixed, so ``seed`` has no effect. With ``cache`` the preprocessed arrays are read from
      or written to :func:`cache_dir`.

    ``frame`` and ``hand_size`` are the node-signal options of the training recipe
    (:mod:`.preprocess`); the defaults give the paper's signal.
    """
    if name not in DATASET_NAMES:
        raise ValueError(
            f"load_dataset: unknown data set {name!r}, expected one of {', '.join(DATASET_NAMES)}"
        )
    if not isinstance(chunks, int) or chunks < 1:
        raise ValueError(f"load_dataset: chunks must be a positive integer, got {chunks!r}")
    if frame not in FRAMES:
        raise ValueError(f"load_dataset: frame must be one of {', '.join(FRAMES)}, got {frame!r}")
    options: dict[str, Any] = {"frame": frame, "hand_size": bool(hand_size)}
    if name == "fpha":
        dataset = _load_fpha_dataset(chunks, root, cache, options)
    else:
        dataset = _load_synthetic_dataset(seed, chunks, cache, options)
    return dataset


def _non_default(options: dict[str, Any]) -> dict[str, Any]:
    """The node-signal options that differ from the paper's signal: what a cache key needs
    (the paper's signal keeps the key it had before the options existed)."""
    defaults = {"frame": "wrist", "hand_size": False}
    return {key: value for key, value in options.items() if value != defaults[key]}


def _load_synthetic_dataset(
    seed: int, chunks: int, cache: bool, options: dict[str, Any]
) -> SkeletonDataset:
    # Generating the set takes seconds, and every run of a sweep is a fresh process. The key
    # covers the source of the generator and of the preprocessing, so an edit to either can
    # never serve stale arrays.
    sources = sorted(Path(__file__).parent.glob("*.py"))
    code = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()
    settings = json.dumps(
        {"seed": seed, "chunks": chunks, "code": code, **_non_default(options)}, sort_keys=True
    )
    key = hashlib.sha256(settings.encode()).hexdigest()[:24]
    path = cache_dir() / f"synthetic-{key}.npz"
    if cache and path.is_file():
        dataset = _load(path, "synthetic")
        dataset.meta["cache"] = {"path": str(path), "hit": True}
        return dataset
    dataset = build_dataset(generate_synthetic(seed), chunks, **options)
    if cache:
        _save(path, dataset)
        dataset.meta["cache"] = {"path": str(path), "hit": False}
    return dataset
