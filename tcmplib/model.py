"""The baseline attention GCN of the paper (Section 2 and Table 1), as reconstructed.

What the paper gives: one multi-head attention layer (16 heads) over the skeleton graph,
a graph convolution with 128 filters, one dense layer to the classes, 1,967,616 weights.
What we reconstruct (paper-family design 1.3): per-head query/key projections of width 8,
one value projection ``wv`` shared by all heads (the convolution filters), heads
concatenated before the dense layer, no biases. That design has exactly 1,967,616 weights.

For head k and node signals X (nodes x d_in)::

    A_k = softmax_rows((X Wq_k)(X Wk_k)^T / sqrt(qk_dim))
    H_k = ReLU(A_k X Wv)                      # nodes x channels
    logits = vec([H_1 ... H_heads]) Wfc        # flattened in (node, head, channel) order

The value projection can also be drawn per head (``values="per-head"``), as Section 2
writes multi-head convolution, ``f(sum_k A^k U^T W^k)``: head k owns its filters
``Wv_k in R^{d_in x C}``, so ``H_k = ReLU(A_k X Wv_k)``. Heads stay concatenated before the
dense layer; with ``C = 117`` filters per head (:func:`per_head_channels`: the width whose
weight count is nearest the paper's 1,967,616) the network keeps about 2M weights. Chapter
``04b_disconnection`` studies what this changes for magnitude pruning.

The attention can also be drawn so that pruning can silence a head (``attention=
"bilinear"``): the scores themselves, averaged over the attended joints, instead of their
softmax::

    A_k = ((X Wq_k)(X Wk_k)^T / sqrt(qk_dim)) * B / rowsum(B)    # B: attended joints, 0/1

Softmax attention is strictly positive: a head whose query or key weights are all pruned
attends uniformly and still carries its values. A bilinear head whose query columns and key
columns share no kept pair computes ``A_k = 0`` and contributes nothing, so its filters and
dense-layer weights lose their paths (:mod:`tcmplib.topology`). Chapter
``04b_disconnection`` studies what this changes for magnitude pruning.

Two options of the training recipe (:mod:`tcmplib.recipe`) change the forward pass, not the
weights: ``dropout`` on the dense layer's inputs while training, and ``neighbourhood``, which
restricts every head's attention to joints at most that many bones apart (the paper's edges
join spatially neighbouring joints; left open, attention spans the whole hand).

Every weight tensor follows the paper's convention W in R^{d_in x d_out} (rows are the
source units, columns the target units), so masks and accessibility read as in Section 4.1.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tcmplib.data.skeleton import BONES, NUM_JOINTS
from tcmplib.fused import convolve_dense, slice_size

__all__ = [
    "ATTENTIONS",
    "GCNConfig",
    "AttentionGCN",
    "PRUNABLE",
    "VALUES",
    "PAPER_WEIGHTS",
    "neighbourhood_mask",
    "bilinear_weights",
    "per_head_channels",
]

#: The weight tensors that pruning acts on, in the order of the network's chain.
PRUNABLE: tuple[str, ...] = ("wq", "wk", "wv", "fc")

#: How the convolution filters (the value projection) are held: one ``wv`` shared by all heads
#: (the reconstruction's default), or one per head (Section 2's ``W^k``).
VALUES: tuple[str, ...] = ("shared", "per-head")

#: How a head's attention is formed from its scores: a softmax over the attended joints (the
#: reconstruction's default), or the scores averaged over them, which pruning can silence.
ATTENTIONS: tuple[str, ...] = ("softmax", "bilinear")

#: The paper's weight count for the dense baseline (Table 1, 0% row).
PAPER_WEIGHTS = 1_967_616


@dataclass(frozen=True)
class GCNConfig:
    """Sizes of the attention GCN. The defaults give the paper's 1,967,616 weights."""

    nodes: int = 21
    d_in: int = 84  # 3 coordinates x 28 temporal chunks
    heads: int = 16
    qk_dim: int = 8
    channels: int = 128
    classes: int = 45
    dropout: float = 0.0  # on the dense layer's inputs, while training
    neighbourhood: int | None = None  # attention within this many bones; None: all joints
    values: str = "shared"  # one of VALUES; "per-head": channels filters for every head
    attention: str = "softmax"  # one of ATTENTIONS; "bilinear": a head that pruning can silence

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name in ("dropout", "neighbourhood", "values", "attention"):
                continue
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GCNConfig.{name}: expected a positive integer, got {value!r}")
        if not (isinstance(self.dropout, (int, float)) and 0.0 <= self.dropout < 1.0):
            raise ValueError(
                f"GCNConfig.dropout: expected a number in [0, 1), got {self.dropout!r}"
            )
        if self.neighbourhood is not None:
            if (
                not isinstance(self.neighbourhood, int)
                or isinstance(self.neighbourhood, bool)
                or (self.neighbourhood < 1)
            ):
                raise ValueError(
                    "GCNConfig.neighbourhood: expected None or a positive number of bones, "
                    f"got {self.neighbourhood!r}"
                )
            if self.nodes != NUM_JOINTS:
                raise ValueError(
                    f"GCNConfig.neighbourhood: needs the hand's {NUM_JOINTS} joints as nodes, "
                    f"got nodes={self.nodes}"
                )

        if self.values not in VALUES:
            raise ValueError(
                f"GCNConfig.values: expected one of {', '.join(VALUES)}, got {self.values!r}"
            )
        if self.attention not in ATTENTIONS:
            raise ValueError(
                f"GCNConfig.attention: expected one of {', '.join(ATTENTIONS)}, "
                f"got {self.attention!r}"
            )

    @property
    def per_head(self) -> bool:
        """Whether every head owns its convolution filters."""
        return self.values == "per-head"

    @property
    def silenceable(self) -> bool:
        """Whether a head whose query and key columns share no kept pair contributes nothing
        (bilinear attention), rather than attending uniformly (softmax)."""
        return self.attention == "bilinear"

    @property
    def value_columns(self) -> int:
        """Columns of the value projection: ``channels``, or ``heads * channels`` per head."""
        return self.heads * self.channels if self.per_head else self.channels

    @property
    def fc_in(self) -> int:
        """Inputs of the dense layer: one per (node, head, channel)."""
        return self.nodes * self.heads * self.channels

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        return {
            "wq": (self.heads, self.d_in, self.qk_dim),
            "wk": (self.heads, self.d_in, self.qk_dim),
            "wv": (
                (self.heads, self.d_in, self.channels)
                if self.per_head
                else (self.d_in, self.channels)
            ),
            "fc": (self.fc_in, self.classes),
        }

    def num_weights(self) -> int:
        return sum(math.prod(s) for s in self.weight_shapes().values())


def per_head_channels(
    nodes: int,
    d_in: int,
    classes: int,
    heads: int = 16,
    qk_dim: int = 8,
    target: int = PAPER_WEIGHTS,
) -> int:
    """Filters per head whose per-head network is nearest ``target`` weights (the smaller on a
    tie): at FPHA's sizes (21 joints, 45 classes, 3 x 32 chunks) 117, for 1,973,328 weights."""

    def count(channels: int) -> int:
        config = GCNConfig(nodes, d_in, heads, qk_dim, channels, classes, values="per-head")
        return config.num_weights()

    per_channel = count(2) - count(1)
    best = max(1, round((target - (count(1) - per_channel)) / per_channel))
    candidates = [c for c in (best - 1, best, best + 1) if c >= 1]
    return min(candidates, key=lambda c: (abs(count(c) - target), c))


def neighbourhood_mask(hops: int) -> torch.Tensor:
    """(21, 21) bool: True where two joints are at most ``hops`` bones apart (self included)."""
    adjacent = torch.eye(NUM_JOINTS, dtype=torch.int64)
    for parent, child in BONES:
        adjacent[parent, child] = adjacent[child, parent] = 1
    reach = torch.eye(NUM_JOINTS, dtype=torch.int64)
    for _ in range(hops):
        reach = (reach @ adjacent).clamp(max=1)
    return reach.bool()


def masked_scores(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Attention scores with the joints outside the neighbourhood removed (no mask: as is)."""
    return scores if mask is None else scores.masked_fill(~mask, float("-inf"))


def bilinear_weights(nodes: int, mask: torch.Tensor | None) -> torch.Tensor:
    """(nodes, nodes): what bilinear attention multiplies its scores by, ``B / rowsum(B)``
    with ``B`` the attended joints (all of them without a neighbourhood mask)."""
    attended = torch.ones(nodes, nodes) if mask is None else mask.to(torch.get_default_dtype())
    return attended / attended.sum(dim=1, keepdim=True)


class AttentionGCN(nn.Module):
    """One attention layer, one graph convolution, one dense layer; see the module doc."""

    attention_mask: torch.Tensor | None

    def __init__(self, config: GCNConfig | None = None) -> None:
        super().__init__()
        self.config = config or GCNConfig()
        shapes = self.config.weight_shapes()
        self.wq = nn.Parameter(torch.empty(shapes["wq"]))
        self.wk = nn.Parameter(torch.empty(shapes["wk"]))
        self.wv = nn.Parameter(torch.empty(shapes["wv"]))
        self.fc = nn.Parameter(torch.empty(shapes["fc"]))
        hops = self.config.neighbourhood
        # Not persistent: the mask follows from the config, and state dicts stay as they were.
        self.register_buffer(
            "attention_mask", None if hops is None else neighbourhood_mask(hops), persistent=False
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform on each (fan_in, fan_out); draws from torch's global RNG."""
        for name in PRUNABLE:
            weight = self._original(name)
            fan_in, fan_out = weight.shape[-2], weight.shape[-1]
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            with torch.no_grad():
                weight.uniform_(-bound, bound)

    def _original(self, name: str) -> nn.Parameter:
        """The trainable tensor behind ``name``, also when a parametrization is registered."""
        if torch.nn.utils.parametrize.is_parametrized(self, name):
            return getattr(self.parametrizations, name).original
        return getattr(self, name)

    def prunable(self) -> dict[str, nn.Parameter]:
        """The trainable weight tensors, by name, in chain order (see :data:`PRUNABLE`)."""
        return {name: self._original(name) for name in PRUNABLE}

    def num_weights(self) -> int:
        return sum(p.numel() for p in self.prunable().values())

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Attention of every head, (batch, heads, nodes, nodes): row-stochastic (softmax), or
        the scores averaged over the attended joints (bilinear)."""
        q = torch.einsum("bnd,hde->bhne", x, self.wq)
        k = torch.einsum("bnd,hde->bhne", x, self.wk)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.config.qk_dim)
        if self.config.silenceable:
            weights = bilinear_weights(self.config.nodes, self.attention_mask)
            return scores * weights.to(scores.device, scores.dtype)
        return torch.softmax(masked_scores(scores, self.attention_mask), dim=-1)

    def values(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution's values: (batch, nodes, channels), per head (batch, heads, nodes,
        channels) with per-head filters."""
        if self.config.per_head:
            # One matmul for every head's filters, its output in (batch, node, head, channel)
            # memory; the einsum it replaces ran at half the speed (benchmarks/README.md).
            heads, d_in, channels = self.wv.shape
            filters = self.wv.permute(1, 0, 2).reshape(d_in, heads * channels)
            return (x @ filters).view(*x.shape[:2], heads, channels).transpose(1, 2)
        return x @ self.wv

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Dense-layer inputs: (batch, nodes * heads * channels) in (node, head, channel) order."""
        attn, v = self.attention(x), self.values(x)
        # Writing straight into (batch, node, head, channel) order avoids a permuted copy of
        # the largest activation (measured 1.5x faster per epoch on 2 CPU cores).
        pattern = "bhnm,bhmc->bnhc" if self.config.per_head else "bhnm,bmc->bnhc"
        h = torch.relu(torch.einsum(pattern, attn, v))
        h = h.reshape(x.shape[0], -1)
        return F.dropout(h, self.config.dropout, self.training) if self.config.dropout else h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[1:] != (self.config.nodes, self.config.d_in):
            raise ValueError(
                f"AttentionGCN input: expected (batch, {self.config.nodes}, {self.config.d_in}), "
                f"got {tuple(x.shape)}"
            )
        size = slice_size(x.device)
        # A batch of one slice or less gains nothing from slicing, and the sliced kernel's
        # padded copy of the dense weights would cost more than the rest: at batch 1, 1.08 ms
        # sliced against 0.49 ms (2 threads, benchmarks/bench_inference.py).
        if (self.config.dropout and self.training) or (size is not None and len(x) <= size):
            return self.features(x) @ self.fc
        # The same function as features(x) @ fc, computed slice by slice (tcmplib.fused).
        return convolve_dense(self.attention(x), self.values(x), self.fc, size)
