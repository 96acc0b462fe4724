"""Skeleton data: FPHA reader, synthetic hand actions, preprocessing to node signals, plots.

The rest of the package needs only::

    from tcmplib.data import SkeletonDataset, load_dataset, JOINT_NAMES, BONES

``load_dataset("synthetic")`` works everywhere; ``load_dataset("fpha")`` needs the user's own
copy of FPHA (``root=`` or ``$FPHA_ROOT``), which may not be redistributed.
"""

from __future__ import annotations

from tcmplib.data.dataset import (
    DATASET_NAMES,
    SkeletonDataset,
    build_dataset,
    cache_dir,
    load_dataset,
)
from tcmplib.data.fpha import FPHAFormatError, load_fpha
from tcmplib.data.preprocess import node_signal, node_signals
from tcmplib.data.skeleton import BONES, FINGER_CHAINS, JOINT_NAMES, NUM_JOINTS, SkeletonSequences
from tcmplib.data.synthetic import SyntheticConfig, describe_classes, generate_synthetic

__all__ = [
    "BONES",
    "DATASET_NAMES",
    "FINGER_CHAINS",
    "FPHAFormatError",
    "JOINT_NAMES",
    "NUM_JOINTS",
    "SkeletonDataset",
    "SkeletonSequences",
    "SyntheticConfig",
    "build_dataset",
    "cache_dir",
    "describe_classes",
    "generate_synthetic",
    "load_dataset",
    "load_fpha",
    "node_signal",
    "node_signals",
]
