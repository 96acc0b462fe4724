"""The training recipe: what the paper leaves unsaid between the skeletons and a trained GCN.

The paper states the network, the optimizer, the schedule and the data split; it does not say
how its baseline generalizes to 86% on FPHA, where the network as written reaches about 70%
(chapter 8). A :class:`Recipe` names every choice we found the text silent or ambiguous on,
each as one switch that is *off* in :data:`AS_WRITTEN` (the paper's text read literally):

node signal (:mod:`tcmplib.data.preprocess`)
    ``chunks`` (the paper states M = 32; we use 28 to hit its weight count), ``frame``
    (coordinates in a frame fixed to the palm), ``hand_size`` (divide by the hand's mean
    bone length), ``velocity`` (each chunk's displacement from the previous chunk appended
    to the node signal; doubles ``d_in``, so it changes the weight count);
augmentation, drawn anew at every epoch from torch's global RNG (seeded and checkpointed by
the trainer, so a resumed run repeats an uninterrupted one)
    ``rotate_deg`` (a random 3-D rotation about a uniformly drawn axis, by an angle uniform
    in +-rotate_deg), ``scale`` (a factor uniform in 1 +- scale), ``time_crop`` (the
    sequence cut to a random window of at least 1 - time_crop of its duration before
    chunking, which also stretches it in time), per sequence;
network (:class:`tcmplib.model.GCNConfig`)
    ``dropout`` on the dense layer's inputs, ``neighbourhood`` (attention within k bones),
    ``values`` (``"per-head"``: every head owns its convolution filters, Section 2's ``W^k``;
    an architecture variant of the disconnection study, chapter 4b, rather than a way to
    generalize);
optimizer and loss
    ``weight_decay`` (Adam's L2 term), ``label_smoothing`` (the cross-entropy's targets put
    1 - label_smoothing on the true class and spread the rest evenly over all classes, as
    ``torch.nn.functional.cross_entropy`` does; the paper's loss is plain cross-entropy),
    ``anneal`` (the share of the final epochs over which the rate falls along a half cosine
    toward zero, :func:`tcmplib.train.anneal_factor`; the paper's adaptive rule alone never
    lowers the rate for good), ``precision`` (``"bf16"``: the forward pass's products in bf16
    under ``torch.autocast``, weights and optimizer in fp32; a question of speed, which has
    to leave the accuracy unchanged to be used).

Rotation and scaling act on every frame of a sequence alike; chunk means, wrist centring
and chunk differences are linear maps that commute with them, so the augmentation is
applied to the node signal's chunk positions: the same numbers as augmenting the frames
before chunking, at a fraction of the cost (a test checks the commutation). A time crop
does need the frames: the window is cut into C equal spans of continuous time, each frame
standing for one unit of time, and a chunk is the time-weighted mean of the frames its span
covers, read off cumulative sums of the frames in one gather for the whole split.

Which options the *selected* recipe switches on is chosen by cross-validation on the training
split (:mod:`tcmplib.select`); chapter 2 shows the ablation and the choice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tcmplib.data import SkeletonDataset, generate_synthetic, load_dataset, load_fpha
from tcmplib.data.preprocess import FRAMES, signal_frames
from tcmplib.model import ATTENTIONS, VALUES, GCNConfig, per_head_channels
from tcmplib.train import PRECISIONS

__all__ = [
    "Recipe",
    "AS_WRITTEN",
    "RECIPES",
    "get_recipe",
    "recipe_from_env",
    "RECIPE_ENV",
    "Augmentation",
    "featurize",
    "rotation_matrices",
    "random_rotations",
    "prepare",
    "load_recipe_data",
]


@dataclass(frozen=True)
class Recipe:
    """Every choice between the raw skeletons and the trained network that the paper leaves
    open. The defaults are the paper's text read literally (see the module doc)."""

    chunks: int = 28
    frame: str = "wrist"
    hand_size: bool = False
    velocity: bool = False
    rotate_deg: float = 0.0
    scale: float = 0.0
    time_crop: float = 0.0
    dropout: float = 0.0
    neighbourhood: int | None = None
    weight_decay: float = 0.0
    # Came after runs were recorded: at its default it stays out of run identities.
    values: str = field(default="shared", metadata={"identity": "unless-default"})
    # How a head's attention is formed; "bilinear" lets pruning silence a head (model doc).
    attention: str = field(default="softmax", metadata={"identity": "unless-default"})
    label_smoothing: float = field(default=0.0, metadata={"identity": "unless-default"})
    precision: str = field(default="fp32", metadata={"identity": "unless-default"})
    anneal: float = field(default=0.0, metadata={"identity": "unless-default"})

    def __post_init__(self) -> None:
        def fail(name: str, expected: str) -> None:
            raise ValueError(
                f"recipe option {name}: expected {expected}, got {getattr(self, name)!r}"
            )

        if not _is_int(self.chunks) or self.chunks < 1:
            fail("chunks", "a positive integer")
        if self.frame not in FRAMES:
            fail("frame", f"one of {', '.join(FRAMES)}")
        for name in ("hand_size", "velocity"):
            if not isinstance(getattr(self, name), bool):
                fail(name, "true or false")
        if not _is_number(self.rotate_deg) or not 0.0 <= self.rotate_deg <= 180.0:
            fail("rotate_deg", "a number of degrees in [0, 180]")
        if not _is_number(self.scale) or not 0.0 <= self.scale < 1.0:
            fail("scale", "a number in [0, 1)")
        if not _is_number(self.time_crop) or not 0.0 <= self.time_crop < 1.0:
            fail("time_crop", "a number in [0, 1)")
        if not _is_number(self.dropout) or not 0.0 <= self.dropout < 1.0:
            fail("dropout", "a number in [0, 1)")
        if self.neighbourhood is not None and (
            not _is_int(self.neighbourhood) or self.neighbourhood < 1
        ):
            fail("neighbourhood", "none or a positive number of bones")
        if not _is_number(self.weight_decay) or self.weight_decay < 0.0:
            fail("weight_decay", "a number >= 0")
        if not _is_number(self.label_smoothing) or not 0.0 <= self.label_smoothing < 1.0:
            fail("label_smoothing", "a number in [0, 1)")
        if not _is_number(self.anneal) or not 0.0 <= self.anneal <= 1.0:
            fail("anneal", "a share of the epochs in [0, 1]")
        if self.values not in VALUES:
            fail("values", f"one of {', '.join(VALUES)}")
        if self.attention not in ATTENTIONS:
            fail("attention", f"one of {', '.join(ATTENTIONS)}")
        if self.precision not in PRECISIONS:
            fail("precision", f"one of {', '.join(PRECISIONS)}")
        # 30 and 30.0 are one recipe: store floats, so that its identity (and hash) is one too.
        for name in _FLOAT_OPTIONS:
            object.__setattr__(self, name, float(getattr(self, name)))

    # -- identity ---------------------------------------------------------------------------

    def changes(self) -> dict[str, Any]:
        """The options that differ from :data:`AS_WRITTEN`: what a run's identity records.

        An option added later with an "off" default changes nothing a run computes, so it
        leaves the identity (and hash) of every earlier run as it was.
        """
        off = Recipe()
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)
                != getattr(off, f.name)}

    def describe(self) -> str:
        """``key=value`` of every option switched on, or ``as written``."""
        changes = self.changes()
        return ", ".join(f"{k}={v}" for k, v in changes.items()) if changes else "as written"

    def with_options(self, assignments: Iterable[str] | Mapping[str, Any]) -> Recipe:
        """This recipe with options replaced, from ``{"key": value}`` or ``["key=value"]``.

        Strings are parsed by the option's type (``true``/``false``, numbers, ``none``); an
        unknown key or a bad value is a one-line error naming it.
        """
        if isinstance(assignments, Mapping):
            return replace(self, **_checked_keys(dict(assignments)))
        values: dict[str, Any] = {}
        for text in assignments:
            key, sep, raw = text.partition("=")
            if not sep:
                raise ValueError(f"recipe option {text!r}: expected key=value")
            key = key.strip()
            _checked_keys({key: None})
            values[key] = _parse(key, raw.strip())
        return replace(self, **values)

    # -- what the options configure ---------------------------------------------------------

    def gcn_config(self, data: SkeletonDataset) -> GCNConfig:
        """The network for ``data`` under this recipe (sizes from the data, options from here)."""
        # Per-head filters: as many per head as keep the network nearest the paper's weight
        # count (shared filters: the paper's 128, GCNConfig's default).
        per_head = (
            {"channels": per_head_channels(data.num_nodes, data.d_in, data.num_classes)}
            if self.values == "per-head"
            else {}
        )
        return GCNConfig(
            nodes=data.num_nodes,
            d_in=data.d_in,
            classes=data.num_classes,
            dropout=self.dropout,
            neighbourhood=self.neighbourhood,
            values=self.values,
            attention=self.attention,
            **per_head,
        )

    def train_overrides(self) -> dict[str, Any]:
        """The fields of :class:`tcmplib.train.TrainConfig` this recipe sets."""
        return {"weight_decay": self.weight_decay, "label_smoothing": self.label_smoothing,
                "precision": self.precision, "anneal": self.anneal}  # fmt: skip

    @property
    def augments(self) -> bool:
        return self.rotate_deg > 0.0 or self.scale > 0.0 or self.time_crop > 0.0


_FLOAT_OPTIONS = ("rotate_deg", "scale", "time_crop", "dropout", "weight_decay",
                  "label_smoothing", "anneal")  # fmt: skip


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    )


_TYPES = {"chunks": int, "frame": str, "hand_size": bool, "velocity": bool,
          "rotate_deg": float, "scale": float, "time_crop": float, "dropout": float,
          "neighbourhood": int,
          "weight_decay": float, "values": str, "attention": str,
          "label_smoothing": float, "precision": str, "anneal": float}  # fmt: skip


def _checked_keys(values: dict[str, Any]) -> dict[str, Any]:
    valid = [f.name for f in fields(Recipe)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ValueError(
            f"recipe option {unknown[0]!r}: unknown; expected one of {', '.join(valid)}"
        )
    return values


def _parse(key: str, raw: str) -> Any:
    kind = _TYPES[key]
    lowered = raw.lower()
    if key == "neighbourhood" and lowered in ("none", "null", ""):
        return None
    if kind is bool:
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"recipe option {key}: expected true or false, got {raw!r}")
    if kind is str:
        return raw
    try:
        return int(raw) if kind is int else float(raw)
    except ValueError:
        raise ValueError(f"recipe option {key}: expected a number, got {raw!r}") from None


#: The paper's text read literally: every option off.
AS_WRITTEN = Recipe()

#: Named recipes. ``selected`` is the recipe chosen by cross-validation on the training split
#: (chapter 2 shows the ablation behind it).
RECIPES: dict[str, Recipe] = {
    "as-written": AS_WRITTEN,
    # The best of the first round of cross-validation (the ablation and its combinations);
    # the second round's steps around it found a better one.
    "round-1": Recipe(chunks=32, rotate_deg=30.0, neighbourhood=2, weight_decay=1e-3),
    # The best mean over 3 folds of the training split, over every candidate set
    # (results/fpha-cv, chapter 02b_training_recipe; a hidden check there fails the book if
    # this stops being so).
    "selected": Recipe(chunks=32, rotate_deg=30.0, neighbourhood=2, weight_decay=1e-2),
}
# The disconnection study's variant (chapter 4b): the selected recipe with per-head filters.
RECIPES["selected-per-head"] = replace(RECIPES["selected"], values="per-head")
# Its attention that pruning can silence (bilinear), with shared and with per-head filters.
RECIPES["selected-bilinear"] = replace(RECIPES["selected"], attention="bilinear")
RECIPES["selected-per-head-bilinear"] = replace(RECIPES["selected-per-head"], attention="bilinear")
# The best of every candidate over 3 splits (the fourth round, chapter 2b): per-head filters
# with label smoothing 0.1.
RECIPES["selected-per-head-smoothed"] = replace(RECIPES["selected-per-head"], label_smoothing=0.1)
# The same trained with bf16 products (speed, benchmarks/README.md): used only once its
# paper-scale baselines match the fp32 ones.
RECIPES["selected-per-head-smoothed-bf16"] = replace(
    RECIPES["selected-per-head-smoothed"], precision="bf16"
)
# The best of every candidate over 3 splits after the fifth round (chapter 2b): the rate
# annealed over the last half of the epochs; its paper-scale runs train in bf16.
RECIPES["selected-annealed"] = replace(RECIPES["selected-per-head-smoothed"], anneal=0.5)
RECIPES["selected-annealed-bf16"] = replace(RECIPES["selected-annealed"], precision="bf16")


#: The environment variable the chapters read their recipe's name from.
RECIPE_ENV = "TCMP_RECIPE"


def recipe_from_env(default: str = "selected") -> tuple[str, Recipe]:
    """The recipe named by ``$TCMP_RECIPE`` (``default`` when unset or empty), with its name."""
    import os

    name = os.environ.get(RECIPE_ENV, "").strip() or default
    try:
        return name, get_recipe(name)
    except ValueError as err:
        raise ValueError(f"{RECIPE_ENV}: {err}") from None


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``; a clear error lists the valid names."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(
            f"recipe: expected one of {', '.join(RECIPES)}, got {name!r}"
        ) from None


# -------------------------------------------------------------------------------------------
# Features and augmentation
# -------------------------------------------------------------------------------------------


def featurize(positions: Tensor, velocity: bool) -> Tensor:
    """Node signals from chunk positions (N, 21, 3C): as they are, or with the chunk
    velocities appended (N, 21, 6C; the first chunk's velocity is 0)."""
    if not velocity:
        return positions
    n, nodes, width = positions.shape
    points = positions.reshape(n, nodes, width // 3, 3)
    steps = torch.diff(points, dim=2, prepend=points[:, :, :1])
    return torch.cat([positions, steps.reshape(n, nodes, width)], dim=-1)


def rotation_matrices(axis: Tensor, angle: Tensor) -> Tensor:
    """Rotations (n, 3, 3) about unit ``axis`` (n, 3) by ``angle`` (n,) radians, right-handed
    (Rodrigues' formula: I + sin(a) K + (1 - cos(a)) K^2, K the cross-product matrix)."""
    cross = torch.zeros(len(axis), 3, 3, dtype=axis.dtype)
    cross[:, 0, 1], cross[:, 0, 2], cross[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
    cross = cross - cross.transpose(1, 2)
    sin, cos = torch.sin(angle)[:, None, None], torch.cos(angle)[:, None, None]
    return torch.eye(3, dtype=axis.dtype) + sin * cross + (1.0 - cos) * cross @ cross


def random_rotations(count: int, max_degrees: float) -> Tensor:
    """``count`` rotations (count, 3, 3) about uniform random axes by angles uniform in
    +-max_degrees; draws from torch's global RNG."""
    axis = torch.randn(count, 3, dtype=torch.float64)
    axis = axis / axis.norm(dim=1, keepdim=True)
    angle = (torch.rand(count, dtype=torch.float64) * 2.0 - 1.0) * math.radians(max_degrees)
    return rotation_matrices(axis, angle)


@dataclass
class Augmentation:
    """A fresh random draw of the training inputs at every call (see the module doc)."""

    positions: Tensor  # (N, 21, 3C) training chunk positions, normalized
    recipe: Recipe
    #: With a time crop: the normalized frames of every training sequence, zero-padded to the
    #: longest, (N, T, 21, 3), and each sequence's length.
    frames: Tensor | None = None
    lengths: Tensor | None = None
    _on_device: dict[str, tuple[Tensor, Tensor | None]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.recipe.time_crop > 0.0 and (self.frames is None or self.lengths is None):
            raise ValueError("Augmentation: a time crop needs the training frames and lengths")

    def _tensors(self, device: torch.device | str) -> tuple[Tensor, Tensor | None]:
        key = str(device)
        if key not in self._on_device:
            sums = None
            if self.frames is not None and self.recipe.time_crop > 0.0:
                flat = self.frames.flatten(2).to(device, torch.float64)
                sums = torch.cat([torch.zeros_like(flat[:, :1]), flat.cumsum(1)], dim=1)
            self._on_device = {key: (self.positions.to(device), sums)}
        return self._on_device[key]

    def __call__(self, device: torch.device | str = "cpu") -> Tensor:
        positions, sums = self._tensors(device)
        n, nodes, width = positions.shape
        if sums is not None:
            positions = self._cropped(sums, width // 3, device).to(positions.dtype)
        # The random numbers come from the CPU generator whatever the device, so a run's draws
        # do not depend on where it trains.
        transform = torch.eye(3, dtype=torch.float64).expand(n, 3, 3)
        if self.recipe.rotate_deg > 0.0:
            transform = random_rotations(n, self.recipe.rotate_deg)
        if self.recipe.scale > 0.0:
            factor = 1.0 + (torch.rand(n, dtype=torch.float64) * 2.0 - 1.0) * self.recipe.scale
            transform = transform * factor[:, None, None]
        points = positions.reshape(n, nodes, width // 3, 3)
        moved = torch.einsum("nvcj,nkj->nvck", points, transform.to(device, positions.dtype))
        return featurize(moved.reshape(n, nodes, width), self.recipe.velocity)

    def _cropped(self, sums: Tensor, chunks: int, device: torch.device | str) -> Tensor:
        """Chunk positions (N, 21, 3C) of a random window of every sequence."""
        assert self.lengths is not None
        n = len(self.lengths)
        length = self.lengths.to(torch.float64)
        share = 1.0 - torch.rand(n, dtype=torch.float64) * self.recipe.time_crop
        start = torch.rand(n, dtype=torch.float64) * (1.0 - share)
        steps = torch.linspace(0.0, 1.0, chunks + 1, dtype=torch.float64)
        bounds = ((start[:, None] + share[:, None] * steps) * length[:, None]).to(device)
        bounds = torch.minimum(bounds, length.to(device)[:, None])  # float round-off at the end
        # F(t) = sums[k] + (t - k) * frame[k], k = floor(t) (the last frame's end included).
        k = bounds.floor().long().clamp(max=(self.lengths.to(device) - 1)[:, None])
        index = k[..., None].expand(-1, -1, sums.shape[-1])
        at = torch.gather(sums, 1, index) + (bounds - k)[..., None] * (
            torch.gather(sums, 1, index + 1) - torch.gather(sums, 1, index)
        )
        means = (at[:, 1:] - at[:, :-1]) / (bounds[:, 1:] - bounds[:, :-1])[..., None]
        return means.reshape(n, chunks, -1, 3).transpose(1, 2).reshape(n, -1, 3 * chunks)


def prepare(
    positions: SkeletonDataset,
    recipe: Recipe,
    train_sequences: Sequence[np.ndarray] | None = None,
) -> SkeletonDataset:
    """The data set a run trains on: ``positions`` (node signals of chunk positions, as
    :func:`tcmplib.data.load_dataset` returns them) featurized under ``recipe``, with the
    per-epoch augmentation attached as ``draw_train`` when the recipe augments.

    A time crop needs the raw frames of the training sequences (``train_sequences``, in the
    order of ``positions.x_train``)."""
    x_train = featurize(positions.x_train, recipe.velocity)
    x_test = featurize(positions.x_test, recipe.velocity)
    draw = None
    if recipe.augments:
        frames = lengths = None
        if recipe.time_crop > 0.0:
            if train_sequences is None or len(train_sequences) != len(positions.x_train):
                raise ValueError(
                    "prepare: a time crop needs the raw frames of every training sequence"
                )
            frames, lengths = _padded_frames(train_sequences, recipe, positions.meta["scale_mm"])
        draw = Augmentation(positions.x_train, recipe, frames, lengths)
    meta = {**positions.meta, "recipe": asdict(recipe), "d_in": int(x_train.shape[-1])}
    return replace(positions, x_train=x_train, x_test=x_test, meta=meta, draw_train=draw)


def _padded_frames(
    sequences: Sequence[np.ndarray], recipe: Recipe, scale: float
) -> tuple[Tensor, Tensor]:
    """The training frames as the node signal sees them, normalized, zero-padded: (N, T, 21, 3)."""
    prepared = [
        signal_frames(frames, frame=recipe.frame, hand_size=recipe.hand_size) / scale
        for frames in sequences
    ]
    lengths = torch.tensor([len(frames) for frames in prepared])
    padded = np.zeros((len(prepared), int(lengths.max()), *prepared[0].shape[1:]), np.float32)
    for i, frames in enumerate(prepared):
        padded[i, : len(frames)] = frames
    return torch.from_numpy(padded), lengths


def load_recipe_data(
    recipe: Recipe, dataset: str = "synthetic", *, root: Any = None, seed: int = 0
) -> SkeletonDataset:
    """:func:`tcmplib.data.load_dataset` with the recipe's signal options, then :func:`prepare`
    (with the raw training frames when the recipe crops in time)."""
    positions = load_dataset(
        dataset,
        chunks=recipe.chunks,
        seed=seed,
        root=root,
        frame=recipe.frame,
        hand_size=recipe.hand_size,
    )
    sequences = None
    if recipe.time_crop > 0.0:
        raw = load_fpha(root) if dataset == "fpha" else generate_synthetic(seed)
        sequences = [raw.sequences[i] for i in np.flatnonzero(raw.is_train)]
    return prepare(positions, recipe, sequences)
