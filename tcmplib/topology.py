"""Accessibility, co-accessibility and effective masks (Section 4.1 of the paper).

A pruned network is *topologically consistent* when every kept connection is both
**accessible** (some chain of kept connections reaches it from an input) and
**co-accessible** (some chain of kept connections leads from it to an output). A kept
connection that fails either test computes nothing the output can see, however large its
weight; the *effective* mask is the kept mask without those connections.

The unit graph
--------------
Everything here works on a *unit graph*: a chain of unit layers (neurons, channels, ...)
joined by bipartite links. A link is either

* a weight tensor with a 0/1 mask ``M`` in the paper's (source x target) convention, or
* a weightless fan-out that copies every source unit to ``copies`` target units.

Accessibility runs forwards (the paper's ``phi_r``), co-accessibility backwards
(``phi_l``), with ``H`` a step function (Heaviside in exact analysis)::

    a_0 = 1,   a_l = H(M_l^T a_{l-1})          c_L = 1,   c_{l-1} = H(M_l c_l)

and an edge ``i -> j`` of link ``l`` is effective iff ``M_l[i, j] a_{l-1}[i] c_l[j] = 1``.
For a plain chain (an MLP given as masks ``W_1 .. W_L`` of shapes ``d_{l-1} x d_l``) this is
exactly the paper's definition: column ``i`` of ``S_a = M_1 ... M_{l-1}`` is non-null iff
``a_{l-1}[i] = 1`` (see :func:`path_count_matrices`). Only weights are analysed: a chain
has no bias units here.

The attention GCN of :mod:`tcmplib.model` (no biases) reads as the chain::

    input features (d_in) --wv--> channels (C) --fan-out--> dense inputs (N*H*C) --fc--> classes

* ``wv`` masks ``M_v`` (d_in x C).
* The attention has no weights on the value path: channel ``c`` feeds every dense-layer
  input ``(n, h, c)``. Softmax attention is strictly positive, so that holds whatever the
  query/key masks are; a head whose Q or K weights are all pruned falls back to uniform
  attention and still carries signal. Hence ``a_(n,h,c) = a_c[c]`` forwards and
  ``c_c = OR_(n,h) c_(n,h,c)`` backwards (the fan-out link, ``copies = N*H``).
* ``fc`` masks ``M_fc`` (N*H*C x K), inputs flattened in (node, head, channel) order.

With per-head filters (``GCNConfig.values == "per-head"``, ``wv`` of shape (H, d_in, C)) the
channel layer has ``H*C`` units, channel ``(h, c)`` of head ``h`` only::

    input features (d_in) --wv--> channels (H*C) --fan-out--> dense inputs (N*H*C) --fc--> classes

``wv`` is read as its (d_in x H*C) view (:func:`value_view`), and each channel ``(h, c)``
feeds the ``N`` dense-layer inputs ``(n, h, c)`` (fan-out ``copies = N``): the same
(node, head, channel) order, since ``(n * H + h) * C + c = n * (H*C) + (h * C + c)``.

Query and key weights shape the attention but do not carry the signal. Our rule for them
(a design choice of this library; the paper does not spell out the attention case):

* head ``h`` is *live* iff some effective ``fc`` edge leaves an input ``(n, h, c)``;
* column ``j`` of ``Wq_h`` only matters together with column ``j`` of ``Wk_h``, because the
  score is ``sum_j (X wq_hj)(X wk_hj)^T``; so a kept Q edge ``(h, i, j)`` is effective iff
  head ``h`` is live and column ``j`` of ``Wk_h`` keeps at least one entry, and
  symmetrically for K.

Q/K edges read the input directly, so they are always accessible; the rule above is their
co-accessibility.

With bilinear attention (``GCNConfig.attention == "bilinear"``) a head can be silenced: its
attention ``A_h`` is the scores themselves (averaged over the attended joints), which are 0
unless some column ``j`` keeps an entry in both ``Wq_h`` and ``Wk_h``. The fan-out then
reaches the dense-layer inputs ``(n, h, c)`` of such *open* heads only (forwards and
backwards), so the filters and dense-layer weights of a closed head lose their paths; the
Q/K rule above is unchanged (a live head is open).

Exact and differentiable analysis share one implementation
----------------------------------------------------------
:meth:`UnitGraph.reachability` takes float masks and a ``step`` function. With
:func:`heaviside` (the default) it is the exact boolean analysis. TCMP's accessibility
networks (Sections 4.2-4.3) pass a straight-through step (Heaviside forwards, a sigmoid
surrogate backwards) and soft masks ``psi(W)``; every operation is then differentiable
with respect to the masks, and the effective masks returned are
``psi(W) * phi_r phi_l^T`` of Eq. 3.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from tcmplib.model import PRUNABLE, AttentionGCN, GCNConfig

__all__ = [
    "Step",
    "Masks",
    "heaviside",
    "MaskedLink",
    "FanOutLink",
    "UnitGraph",
    "Reachability",
    "TopologyReport",
    "EdgeClass",
    "unit_graph",
    "reachability",
    "accessibility",
    "coaccessibility",
    "effective_masks",
    "analyze",
    "classify_edges",
    "masks_from_model",
    "magnitude_masks",
    "magnitude_sweep",
    "path_count_matrices",
    "time_analyze",
    "value_view",
    "value_tensor",
]

#: A step function applied after every weighted sum: exact Heaviside, or a straight-through
#: surrogate for training. It must map ``x <= 0`` to 0 and ``x > 0`` to 1 in the forward pass.
Step = Callable[[Tensor], Tensor]

#: Masks of a network: a mapping with the keys of :data:`tcmplib.model.PRUNABLE` for the
#: attention GCN, or a plain chain (a sequence of 2-D masks, or a mapping of 2-D masks in
#: chain order).
Masks = Mapping[str, Tensor] | Sequence[Tensor]


def heaviside(x: Tensor) -> Tensor:
    """The exact step ``H(x) = 1 if x > 0 else 0``, in the dtype of ``x``."""
    return (x > 0).to(x.dtype)


def value_view(wv: Tensor, config: GCNConfig) -> Tensor:
    """``wv`` (or its mask) as the (d_in x value columns) link of the unit graph: itself when
    shared, the (H, d_in, C) per-head tensor as (d_in, H*C) with column ``h * C + c``."""
    if not config.per_head:
        return wv
    return wv.permute(1, 0, 2).reshape(config.d_in, config.value_columns)


def value_tensor(view: Tensor, config: GCNConfig) -> Tensor:
    """The inverse of :func:`value_view`: a (d_in x value columns) tensor in ``wv``'s shape."""
    if not config.per_head:
        return view
    return view.reshape(config.d_in, config.heads, config.channels).permute(1, 0, 2)


# --------------------------------------------------------------------------- links


@dataclass(frozen=True)
class MaskedLink:
    """A weight tensor between two unit layers; its mask is ``source x target``."""

    tensor: str
    source: int
    target: int

    def forward(self, accessible: Tensor, mask: Tensor, step: Step) -> Tensor:
        """Accessibility of the targets: ``H(M^T a)``."""
        return step(mask.transpose(0, 1) @ accessible)

    def backward(self, coaccessible: Tensor, mask: Tensor, step: Step) -> Tensor:
        """Co-accessibility of the sources: ``H(M c)``."""
        return step(mask @ coaccessible)


@dataclass(frozen=True)
class FanOutLink:
    """A weightless link that copies each of ``source`` units to ``copies`` targets.

    Target ``r * source + s`` is copy ``r`` of source ``s``; for the attention GCN,
    ``r = n * heads + h`` and ``s = c``, which is the (node, head, channel) order of ``fc``.
    """

    source: int
    copies: int

    @property
    def target(self) -> int:
        return self.source * self.copies

    def forward(self, accessible: Tensor) -> Tensor:
        """Each copy is as accessible as its source (no step: the values are already 0/1)."""
        return accessible.repeat(self.copies)

    def backward(self, coaccessible: Tensor, step: Step) -> Tensor:
        """A source is co-accessible iff one of its copies is."""
        return step(coaccessible.reshape(self.copies, self.source).sum(dim=0))


Link = MaskedLink | FanOutLink


# --------------------------------------------------------------------------- graph


@dataclass(frozen=True)
class Reachability:
    """Accessibility and co-accessibility of every unit, and the effective masks.

    With soft masks and a straight-through ``step`` every tensor here is differentiable
    with respect to the masks; ``effective[name]`` is then ``psi(W) * phi_r phi_l^T`` and
    ``gates[name]`` is ``phi_r phi_l^T`` alone.
    """

    #: ``phi_r`` per unit layer, by unit-layer name, in chain order.
    accessible: dict[str, Tensor]
    #: ``phi_l`` per unit layer, by unit-layer name, in chain order.
    coaccessible: dict[str, Tensor]
    #: ``phi_r phi_l^T`` per weight tensor, shaped like its mask: 1 where a kept entry would
    #: be effective, also where the mask is 0 (Eq. 3 needs it there). For Q/K: head live
    #: times partner column kept. Some are broadcast views; do not write into them.
    gates: dict[str, Tensor]
    #: Kept and accessible and co-accessible, per weight tensor: ``mask * gate``.
    effective: dict[str, Tensor]
    #: Attention GCN only: 1 for heads whose output reaches the classes (else ``None``).
    live_heads: Tensor | None = None


@dataclass(frozen=True)
class UnitGraph:
    """A chain of unit layers joined by links; see the module documentation.

    ``attention`` is set for the attention GCN: it adds the query/key tensors and the
    head / column-pairing rule on top of the chain ``wv -> fan-out -> fc``.
    """

    unit_names: tuple[str, ...]
    unit_sizes: tuple[int, ...]
    links: tuple[Link, ...]
    attention: GCNConfig | None = None

    @staticmethod
    def for_chain(shapes: Sequence[tuple[int, int]], names: Sequence[str]) -> UnitGraph:
        """The graph of a plain chain of weight tensors with the given (source x target) shapes."""
        if len(shapes) == 0:
            raise ValueError("masks: expected at least one weight tensor, got none")
        if len(names) != len(shapes):
            raise ValueError(f"names: expected {len(shapes)} names, got {len(names)}")
        for layer, ((_, target), (source, _), name) in enumerate(
            zip(shapes[:-1], shapes[1:], names[1:], strict=True), start=2
        ):
            if target != source:
                raise ValueError(
                    f"masks: {name!r} (layer {layer}) has {source} rows but the previous mask "
                    f"has {target} columns; shapes must chain as (d_(l-1) x d_l)"
                )
        sizes = (shapes[0][0], *(shape[1] for shape in shapes))
        unit_names = ("input", *(f"hidden{i}" for i in range(1, len(shapes))), "output")
        links = tuple(
            MaskedLink(name, source, target)
            for name, (source, target) in zip(names, shapes, strict=True)
        )
        return UnitGraph(unit_names, sizes, links)

    @staticmethod
    def for_gcn(config: GCNConfig) -> UnitGraph:
        """The unit graph of :class:`tcmplib.model.AttentionGCN` with this configuration."""
        # Shared filters: channel c feeds (n, h, c) for every node and head. Per-head filters:
        # channel (h, c) feeds (n, h, c) for every node.
        copies = config.nodes if config.per_head else config.nodes * config.heads
        return UnitGraph(
            unit_names=("input", "channels", "fc_inputs", "classes"),
            unit_sizes=(config.d_in, config.value_columns, config.fc_in, config.classes),
            links=(
                MaskedLink("wv", config.d_in, config.value_columns),
                FanOutLink(config.value_columns, copies),
                MaskedLink("fc", config.fc_in, config.classes),
            ),
            attention=config,
        )

    @property
    def tensor_names(self) -> tuple[str, ...]:
        """Names of the weight tensors, in chain order (Q/K first for the attention GCN)."""
        chain = tuple(link.tensor for link in self.links if isinstance(link, MaskedLink))
        return ("wq", "wk", *chain) if self.attention is not None else chain

    def mask_shapes(self) -> dict[str, tuple[int, ...]]:
        """The expected shape of every mask, by tensor name."""
        if self.attention is not None:
            return dict(self.attention.weight_shapes())
        return {
            link.tensor: (link.source, link.target)
            for link in self.links
            if isinstance(link, MaskedLink)
        }

    def check_masks(self, masks: Mapping[str, Tensor]) -> None:
        """Raise ``ValueError`` naming the first mask whose name or shape does not fit."""
        expected = self.mask_shapes()
        if set(masks) != set(expected):
            raise ValueError(f"masks: expected the tensors {sorted(expected)}, got {sorted(masks)}")
        for name, shape in expected.items():
            if tuple(masks[name].shape) != shape:
                raise ValueError(
                    f"masks[{name!r}]: expected shape {shape}, got {tuple(masks[name].shape)}"
                )

    def reachability(self, masks: Mapping[str, Tensor], step: Step = heaviside) -> Reachability:
        """Accessibility (``phi_r``), co-accessibility (``phi_l``) and effective masks.

        ``masks`` are float tensors (0/1 for exact analysis, ``psi(W)`` for TCMP); all must
        share one floating dtype and device. Cost: one matrix-vector product per weight
        tensor in each direction plus elementwise products for the effective masks.
        """
        self.check_masks(masks)
        reference = masks[self.tensor_names[0]]
        if not reference.is_floating_point():
            raise ValueError(
                f"masks: expected floating-point tensors (use analyze() for boolean masks), "
                f"got {reference.dtype}"
            )
        ones = torch.ones(self.unit_sizes[0], dtype=reference.dtype, device=reference.device)
        config = self.attention
        if config is not None and config.per_head:
            masks = {**masks, "wv": value_view(masks["wv"], config)}
        # Bilinear attention: the fan-out reaches the dense-layer inputs of open heads only.
        open_inputs = self._open_inputs(masks, step) if config and config.silenceable else None
        forward = [ones]
        for link in self.links:
            if isinstance(link, MaskedLink):
                forward.append(link.forward(forward[-1], masks[link.tensor], step))
            elif open_inputs is not None:
                forward.append(link.forward(forward[-1]) * open_inputs)
            else:
                forward.append(link.forward(forward[-1]))
        backward = [torch.ones(self.unit_sizes[-1], dtype=ones.dtype, device=ones.device)]
        for link in reversed(self.links):
            if isinstance(link, MaskedLink):
                backward.append(link.backward(backward[-1], masks[link.tensor], step))
            elif open_inputs is not None:
                backward.append(link.backward(backward[-1] * open_inputs, step))
            else:
                backward.append(link.backward(backward[-1], step))
        backward.reverse()

        gates: dict[str, Tensor] = {}
        for index, link in enumerate(self.links):
            if isinstance(link, MaskedLink):
                source_accessible = forward[index].unsqueeze(1)
                target_coaccessible = backward[index + 1].unsqueeze(0)
                gates[link.tensor] = source_accessible * target_coaccessible

        live_heads = None
        if config is not None:
            live_heads = self._live_heads(forward, backward, step)
            gates.update(self._query_key_gates(masks, live_heads, step))
            if config.per_head:
                masks = {**masks, "wv": value_tensor(masks["wv"], config)}
                gates["wv"] = value_tensor(gates["wv"], config)
        gates = {name: gates[name] for name in self.tensor_names}

        return Reachability(
            accessible=dict(zip(self.unit_names, forward, strict=True)),
            coaccessible=dict(zip(self.unit_names, backward, strict=True)),
            gates=gates,
            effective={name: masks[name] * gate for name, gate in gates.items()},
            live_heads=live_heads,
        )

    def _open_inputs(self, masks: Mapping[str, Tensor], step: Step) -> Tensor:
        """Bilinear attention: 1 on the dense-layer inputs ``(n, h, c)`` of the heads whose
        scores can be nonzero, i.e. some column ``j`` keeps an entry in both ``Wq_h`` and
        ``Wk_h``; 0 on those of the others, which compute ``A_h = 0``."""
        config = self.attention
        assert config is not None
        query_columns, key_columns = _kept_columns(masks, step)
        open_heads = step((query_columns * key_columns).sum(dim=1))  # (heads,)
        per_input = open_heads.reshape(1, config.heads, 1)
        return per_input.expand(config.nodes, config.heads, config.channels).reshape(-1)

    def _live_heads(self, forward: list[Tensor], backward: list[Tensor], step: Step) -> Tensor:
        """A head is live iff one of its dense-layer inputs is accessible and co-accessible.

        A dense-layer input is co-accessible iff it has a kept ``fc`` edge (the classes are
        all co-accessible), so this is "some effective ``fc`` edge leaves the head".
        """
        config = self.attention
        assert config is not None
        fc_alive = forward[2] * backward[2]
        per_head = fc_alive.reshape(config.nodes, config.heads, config.channels).sum(dim=(0, 2))
        return step(per_head)

    @staticmethod
    def _query_key_gates(
        masks: Mapping[str, Tensor], live_heads: Tensor, step: Step
    ) -> dict[str, Tensor]:
        """The Q/K rule: an entry counts iff its head is live and its partner column is kept."""
        query_columns, key_columns = _kept_columns(masks, step)
        head = live_heads.reshape(-1, 1, 1)
        return {
            "wq": (head * key_columns.unsqueeze(1)).expand_as(masks["wq"]),
            "wk": (head * query_columns.unsqueeze(1)).expand_as(masks["wk"]),
        }


def _kept_columns(masks: Mapping[str, Tensor], step: Step) -> tuple[Tensor, Tensor]:
    """Which query and which key columns keep an entry, per head: two (heads, qk_dim)."""
    return step(masks["wq"].sum(dim=1)), step(masks["wk"].sum(dim=1))


# --------------------------------------------------------------------------- inputs


def _named(masks: Masks) -> dict[str, Tensor]:
    """Masks as an ordered name -> tensor mapping (chains given as sequences become W1..WL)."""
    if isinstance(masks, Mapping):
        named = dict(masks)
    elif isinstance(masks, Sequence) and not isinstance(masks, (str, bytes)):
        named = {f"W{i}": mask for i, mask in enumerate(masks, start=1)}
    else:
        raise TypeError(
            f"masks: expected a mapping of tensors or a sequence of tensors, got "
            f"{type(masks).__name__}"
        )
    for name, mask in named.items():
        if not isinstance(mask, Tensor):
            raise TypeError(f"masks[{name!r}]: expected a torch.Tensor, got {type(mask).__name__}")
    return named


def _is_gcn(named: Mapping[str, Tensor]) -> bool:
    return set(named) == set(PRUNABLE)


def _gcn_config_from_shapes(named: Mapping[str, Tensor]) -> GCNConfig:
    """Recover the GCN sizes from the mask shapes (the node count from the ``fc`` rows)."""
    wq, wv, fc = named["wq"], named["wv"], named["fc"]
    if wq.dim() != 3 or wv.dim() not in (2, 3) or fc.dim() != 2:
        raise ValueError(
            "masks: expected wq/wk of shape (heads, d_in, qk_dim), wv (d_in, channels) or "
            "(heads, d_in, channels) and fc (nodes*heads*channels, classes), got wq "
            f"{tuple(wq.shape)}, wv {tuple(wv.shape)}, fc {tuple(fc.shape)}"
        )
    heads, _, qk_dim = wq.shape
    d_in, channels = wv.shape[-2:]
    per_node = heads * channels
    if per_node == 0 or fc.shape[0] % per_node != 0:
        raise ValueError(
            f"masks['fc']: expected a multiple of heads*channels = {per_node} rows, "
            f"got {fc.shape[0]}"
        )
    return GCNConfig(
        nodes=fc.shape[0] // per_node,
        d_in=d_in,
        heads=heads,
        qk_dim=qk_dim,
        channels=channels,
        classes=fc.shape[1],
        values="per-head" if wv.dim() == 3 else "shared",
    )


def unit_graph(masks: Masks, config: GCNConfig | None = None) -> UnitGraph:
    """The unit graph that ``masks`` describe, checked against their shapes.

    Masks keyed exactly by ``wq, wk, wv, fc`` are read as the attention GCN (its sizes come
    from ``config`` when given, else from the shapes); anything else is a plain chain.
    """
    named = _named(masks)
    if _is_gcn(named):
        graph = UnitGraph.for_gcn(config or _gcn_config_from_shapes(named))
    else:
        if config is not None:
            raise ValueError(
                f"config: given, but the masks {sorted(named)} are not the attention GCN's "
                f"{list(PRUNABLE)}"
            )
        for name, mask in named.items():
            if mask.dim() != 2:
                raise ValueError(
                    f"masks[{name!r}]: expected a 2-D (source x target) mask, got shape "
                    f"{tuple(mask.shape)}"
                )
        shapes = [(mask.shape[0], mask.shape[1]) for mask in named.values()]
        graph = UnitGraph.for_chain(shapes, list(named))
    graph.check_masks(named)
    return graph


def reachability(
    masks: Masks, step: Step = heaviside, config: GCNConfig | None = None
) -> Reachability:
    """``phi_r``, ``phi_l`` and effective masks of float masks; see :meth:`UnitGraph.reachability`.

    This is the entry point for TCMP: pass ``psi(W)`` per tensor and a straight-through
    step to get differentiable accessibility/co-accessibility vectors per unit layer.
    """
    named = _named(masks)
    return unit_graph(named, config).reachability(named, step)


def accessibility(
    masks: Masks, step: Step = heaviside, config: GCNConfig | None = None
) -> dict[str, Tensor]:
    """``phi_r``: the accessibility vector of every unit layer, in chain order."""
    return reachability(masks, step, config).accessible


def coaccessibility(
    masks: Masks, step: Step = heaviside, config: GCNConfig | None = None
) -> dict[str, Tensor]:
    """``phi_l``: the co-accessibility vector of every unit layer, in chain order."""
    return reachability(masks, step, config).coaccessible


def effective_masks(
    masks: Masks, step: Step = heaviside, config: GCNConfig | None = None
) -> dict[str, Tensor]:
    """Kept, accessible and co-accessible entries of every mask (``psi(W) * phi_r phi_l^T``)."""
    return reachability(masks, step, config).effective


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class TopologyReport:
    """Exact topology of a pruned network: what is kept, what is effective, what is dead.

    Counts are over *all* weights of the network, so :attr:`percent_ac` is the paper's
    "% of A-C" column (Table 1): effective kept weights over kept weights, times 100.
    """

    graph: UnitGraph
    #: Kept entries (nonzero in the masks given), per tensor.
    kept_masks: dict[str, Tensor]
    #: Kept, accessible and co-accessible entries, per tensor.
    effective_masks: dict[str, Tensor]
    #: Boolean accessibility / co-accessibility of every unit layer.
    accessible: dict[str, Tensor]
    coaccessible: dict[str, Tensor]
    #: Attention GCN only: live heads (bool, one per head).
    live_heads: Tensor | None
    kept: dict[str, int] = field(init=False)
    effective: dict[str, int] = field(init=False)
    sizes: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        # Counts are computed once: reports are logged every epoch and read many times.
        object.__setattr__(
            self, "kept", {n: int(m.count_nonzero()) for n, m in self.kept_masks.items()}
        )
        object.__setattr__(
            self,
            "effective",
            {n: int(m.count_nonzero()) for n, m in self.effective_masks.items()},
        )
        object.__setattr__(self, "sizes", {n: m.numel() for n, m in self.kept_masks.items()})

    @property
    def total_weights(self) -> int:
        return sum(self.sizes.values())

    @property
    def total_kept(self) -> int:
        return sum(self.kept.values())

    @property
    def total_effective(self) -> int:
        return sum(self.effective.values())

    @property
    def percent_ac(self) -> float:
        """Effective kept / kept * 100 over all weights; NaN when nothing is kept."""
        if self.total_kept == 0:
            return math.nan
        return 100.0 * self.total_effective / self.total_kept

    @property
    def direct_sparsity(self) -> float:
        """Fraction of weights removed by the masks."""
        return 1.0 - self.total_kept / self.total_weights

    @property
    def effective_sparsity(self) -> float:
        """Fraction of weights that compute nothing the output sees (pruned or inconsistent)."""
        return 1.0 - self.total_effective / self.total_weights

    @property
    def is_topologically_consistent(self) -> bool:
        """True iff every kept weight is accessible and co-accessible."""
        return self.total_effective == self.total_kept

    @property
    def alive(self) -> dict[str, Tensor]:
        """Units that are both accessible and co-accessible, per unit layer."""
        return {name: self.accessible[name] & self.coaccessible[name] for name in self.accessible}

    @property
    def dead_units(self) -> dict[str, int]:
        """Units that are not alive, per unit layer (plus ``heads`` for the attention GCN)."""
        dead = {name: int((~alive).sum()) for name, alive in self.alive.items()}
        if self.live_heads is not None:
            dead["heads"] = int((~self.live_heads).sum())
        return dead

    def tensor_rows(self) -> list[dict[str, float | int | str]]:
        """One row per weight tensor: size, kept, effective and its own % A-C."""
        rows: list[dict[str, float | int | str]] = []
        for name in self.graph.tensor_names:
            kept = self.kept[name]
            rows.append(
                {
                    "tensor": name,
                    "weights": self.sizes[name],
                    "kept": kept,
                    "effective": self.effective[name],
                    "% A-C": 100.0 * self.effective[name] / kept if kept else math.nan,
                }
            )
        return rows

    def summary(self) -> dict[str, float | int | bool]:
        """The network-level numbers, flat (a row of a sweep table or a JSON log line)."""
        row: dict[str, float | int | bool] = {
            "weights": self.total_weights,
            "kept": self.total_kept,
            "effective": self.total_effective,
            "% A-C": self.percent_ac,
            "direct sparsity": self.direct_sparsity,
            "effective sparsity": self.effective_sparsity,
            "consistent": self.is_topologically_consistent,
        }
        row.update({f"dead {name}": count for name, count in self.dead_units.items()})
        return row

    def __str__(self) -> str:
        lines = [
            f"{'tensor':>8} {'weights':>10} {'kept':>10} {'effective':>10} {'% A-C':>8}",
        ]
        for row in self.tensor_rows():
            lines.append(
                f"{row['tensor']:>8} {row['weights']:>10,} {row['kept']:>10,} "
                f"{row['effective']:>10,} {row['% A-C']:>8.2f}"
            )
        lines.append(
            f"{'total':>8} {self.total_weights:>10,} {self.total_kept:>10,} "
            f"{self.total_effective:>10,} {self.percent_ac:>8.2f}"
        )
        dead = ", ".join(f"{name} {count}" for name, count in self.dead_units.items())
        lines.append(f"dead units: {dead}")
        lines.append(f"topologically consistent: {self.is_topologically_consistent}")
        return "\n".join(lines)


def analyze(masks: Masks, config: GCNConfig | None = None) -> TopologyReport:
    """Exact topology of the masks: an entry is *kept* iff it is nonzero (any dtype).

    Accepts the attention GCN's masks (``wq, wk, wv, fc``; see :func:`masks_from_model`) or a
    plain chain. Fast enough to run every epoch (a few milliseconds on the full GCN).
    """
    named = _named(masks)
    kept = {
        name: mask.detach() if mask.dtype == torch.bool else mask.detach() != 0
        for name, mask in named.items()
    }
    dtype = torch.float32  # exact for counts below 2**24, far above any layer width here
    floats = {name: mask.to(dtype) for name, mask in kept.items()}
    graph = unit_graph(floats, config)
    reach = graph.reachability(floats, heaviside)
    return TopologyReport(
        graph=graph,
        kept_masks={name: kept[name] for name in graph.tensor_names},
        effective_masks={name: m > 0 for name, m in reach.effective.items()},
        accessible={name: v > 0 for name, v in reach.accessible.items()},
        coaccessible={name: v > 0 for name, v in reach.coaccessible.items()},
        live_heads=None if reach.live_heads is None else reach.live_heads > 0,
    )


class EdgeClass:
    """Codes returned by :func:`classify_edges` (ints so they fit in one tensor)."""

    PRUNED = 0
    CONSISTENT = 1  # kept, accessible and co-accessible
    NOT_ACCESSIBLE = 2  # kept, but no kept path reaches it from the inputs ("disconnected")
    NOT_COACCESSIBLE = 3  # kept and accessible, but leads nowhere ("dangling")


def classify_edges(report: TopologyReport, tensor: str) -> Tensor:
    """An :class:`EdgeClass` code per entry of ``tensor``'s mask (for plots and tables).

    A kept edge that is neither accessible nor co-accessible is reported as not accessible.
    Q/K edges are always accessible, so their inconsistent edges are not co-accessible.
    """
    if tensor not in report.kept_masks:
        raise ValueError(f"tensor: expected one of {list(report.kept_masks)}, got {tensor!r}")
    kept = report.kept_masks[tensor]
    effective = report.effective_masks[tensor]
    codes = torch.full(kept.shape, EdgeClass.PRUNED, dtype=torch.int64)
    codes[kept] = EdgeClass.NOT_COACCESSIBLE
    position = report.graph.unit_names
    for index, link in enumerate(report.graph.links):
        if isinstance(link, MaskedLink) and link.tensor == tensor:
            source_accessible = report.accessible[position[index]].unsqueeze(1)
            codes[kept & ~source_accessible] = EdgeClass.NOT_ACCESSIBLE
    codes[effective] = EdgeClass.CONSISTENT
    return codes


# --------------------------------------------------------------------------- models


def masks_from_model(model: AttentionGCN) -> dict[str, Tensor]:
    """What the model computes with: nonzero entries of its (possibly parametrized) weights.

    Weights are read through ``getattr(model, name)``, so a registered masking
    parametrization is applied; a weight that is exactly zero counts as pruned.
    """
    return {name: getattr(model, name).detach() != 0 for name in PRUNABLE}


def _weights_of(
    weights: AttentionGCN | Mapping[str, Tensor] | Sequence[Tensor],
) -> tuple[list[str] | None, list[Tensor]]:
    if isinstance(weights, AttentionGCN):
        return list(PRUNABLE), [getattr(weights, name).detach() for name in PRUNABLE]
    if isinstance(weights, Mapping):
        return list(weights), [w.detach() for w in weights.values()]
    if isinstance(weights, Sequence) and all(isinstance(w, Tensor) for w in weights):
        return None, [w.detach() for w in weights]
    raise TypeError(
        "weights: expected an AttentionGCN, a mapping of tensors or a sequence of tensors, got "
        f"{type(weights).__name__}"
    )


def magnitude_masks(
    weights: AttentionGCN | Mapping[str, Tensor] | Sequence[Tensor], rate: float
) -> dict[str, Tensor] | list[Tensor]:
    """Global magnitude pruning: keep exactly ``round((1 - rate) * total)`` largest ``|w|``.

    One ranking over all weights of the network (not per layer), as in Table 1's MP rows.
    Ties at the threshold are broken by position, earlier first, in chain order (tensors in
    the order given, entries in row-major order), so the count is exact and the result
    deterministic. ``round`` is Python's (half to even). Returns boolean masks in the same
    structure as the input (a dict for a model or mapping, a list for a sequence).
    """
    if not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate: expected a number in [0, 1], got {rate!r}")
    names, tensors = _weights_of(weights)
    if not tensors:
        raise ValueError("weights: expected at least one tensor, got none")
    scores = torch.cat([w.abs().reshape(-1) for w in tensors])  # |w| is exact in any dtype
    if not torch.isfinite(scores).all():
        raise ValueError("weights: expected finite values, got NaN or infinity")
    total = scores.numel()
    keep_count = round((1.0 - rate) * total)
    keep = torch.zeros(total, dtype=torch.bool)
    if keep_count > 0:
        threshold = torch.kthvalue(scores, total - keep_count + 1).values
        keep = scores > threshold
        missing = keep_count - int(keep.sum())
        ties = (scores == threshold).nonzero().squeeze(1)[:missing]
        keep[ties] = True
    masks = [
        part.reshape(w.shape)
        for part, w in zip(keep.split([w.numel() for w in tensors]), tensors, strict=True)
    ]
    if names is None:
        return masks
    return dict(zip(names, masks, strict=True))


def magnitude_sweep(
    weights: AttentionGCN | Mapping[str, Tensor] | Sequence[Tensor], rates: Sequence[float]
) -> list[dict[str, float | int | bool]]:
    """:meth:`TopologyReport.summary` of global magnitude pruning at each rate, one row each."""
    config = weights.config if isinstance(weights, AttentionGCN) else None
    return [
        {"pruning rate": rate, **analyze(magnitude_masks(weights, rate), config).summary()}
        for rate in rates
    ]


def path_count_matrices(masks: Masks) -> tuple[list[Tensor], list[Tensor]]:
    """The paper's ``S_a`` and ``S_c`` for a plain chain, one pair per unit layer.

    Returns ``(to_units, from_units)``: ``to_units[k] = M_1 ... M_k`` (``d_0 x d_k``; the
    identity for the inputs) counts the kept paths from each input to each unit of layer
    ``k``; ``from_units[k] = M_(k+1) ... M_L`` (``d_k x d_L``; identity for the outputs)
    counts the kept paths from each unit to each output. In the paper's numbering
    ``S_a^l = to_units[l - 1]`` and ``S_c^l = from_units[l]``: an edge of ``W^l`` leaving unit
    ``i`` is accessible iff column ``i`` of ``S_a^l`` is non-null. Dense products: meant
    for small networks and for checking :func:`analyze`, not for the full GCN.
    """
    named = _named(masks)
    if _is_gcn(named):
        raise ValueError("masks: expected a plain chain; the attention GCN has no single S_a")
    unit_graph(named)
    matrices = [mask.detach().ne(0).to(torch.float64) for mask in named.values()]
    to_units = [torch.eye(matrices[0].shape[0], dtype=torch.float64)]
    for matrix in matrices:
        to_units.append(to_units[-1] @ matrix)
    from_units = [torch.eye(matrices[-1].shape[1], dtype=torch.float64)]
    for matrix in reversed(matrices):
        from_units.append(matrix @ from_units[-1])
    from_units.reverse()
    return to_units, from_units


def time_analyze(masks: Masks, repeats: int = 20) -> float:
    """Median wall-clock seconds of one :func:`analyze` call on ``masks`` (after a warm-up)."""
    if repeats < 1:
        raise ValueError(f"repeats: expected a positive integer, got {repeats!r}")
    analyze(masks)
    durations = []
    for _ in range(repeats):
        start = time.perf_counter()
        analyze(masks)
        durations.append(time.perf_counter() - start)
    return statistics.median(durations)
