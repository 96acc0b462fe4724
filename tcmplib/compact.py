"""Verified compaction: a masked attention GCN becomes a smaller dense model.

Zeros in dense tensors save neither time nor memory; removing *dead units* does. Using the
exact topology of :mod:`tcmplib.topology`, :func:`compact_model` keeps only

* the value-path input features that feed a live channel (rows of ``wv``),
* live convolution channels (columns of ``wv``; with per-head filters, the columns of its
  (d_in x heads*channels) view, channel ``h * channels + c`` being head ``h``'s ``c``),
* live heads, i.e. heads with an effective ``fc`` edge (their ``wq``/``wk`` slices),
* per live head, the query/key column pairs whose two columns both keep an entry,
* live dense-layer inputs ``(n, h, c)`` (rows of ``fc``).

Nothing else can change the logits: a dead channel carries zero signal or reaches no
class, a dead head reaches no class, an unpaired Q (or K) column adds ``0`` to every
attention score. A live head whose Q/K weights are all pruned has all-zero scores, hence
uniform attention; it keeps width-0 (or zero-padded) Q/K slices, which gives exactly the
same uniform attention. The score scale stays ``1/sqrt(qk_dim)`` of the original model.

Heads keep different numbers of Q/K column pairs; they are stored left-aligned in
``(heads, d_in, width)`` tensors padded with zeros to the widest head, so the forward pass
stays one batched product (padding adds ``0 * 0`` to the scores).

Files: ``compact.safetensors`` (the four tensors) and ``compact.json`` (format name and
version, the original :class:`~tcmplib.model.GCNConfig`, the kept indices per axis, the
tensor shapes). No pickle anywhere; :func:`load_compact` checks the JSON and the tensors
against each other and names the file and the expectation on any mismatch.
:func:`save_structure` writes a network's structure alone (kept indices and sizes, no
weight), which a sweep commits for every run; :meth:`CompactStructure.twin` rebuilds a
network of that structure for timing once the weights are gone.

:func:`measure_latency` times forward passes, to see what compaction buys at inference.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save, save_file
from torch import Tensor, nn

from tcmplib.fused import convolve_dense
from tcmplib.model import (
    PRUNABLE,
    AttentionGCN,
    GCNConfig,
    bilinear_weights,
    neighbourhood_mask,
)
from tcmplib.topology import analyze, value_tensor, value_view

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "KeptIndices",
    "CompactGCN",
    "CompactFormatError",
    "CompactionSummary",
    "masked_copy",
    "compact_model",
    "save_compact",
    "load_compact",
    "CompactStructure",
    "structure_of",
    "save_structure",
    "load_structure",
    "max_logit_difference",
    "summarize_compaction",
    "LatencyStats",
    "measure_latency",
    "STAGES",
    "multiply_adds",
    "measure_stages",
    "SCATTER_MIN_SHARE",
    "SCATTER_MIN_BATCH",
    "CONVOLUTION_SLICE",
    "HEADWISE_MIN_BATCH",
]

FORMAT_NAME = "tcmplib-compact-gcn"
FORMAT_VERSION = 1
JSON_NAME = "compact.json"
TENSORS_NAME = "compact.safetensors"
STRUCTURE_FORMAT_NAME = "tcmplib-compact-structure"


class CompactFormatError(ValueError):
    """A saved compact model does not match the format; the message names file and problem."""


@dataclass(frozen=True)
class KeptIndices:
    """What survives, as sorted indices into the *original* model's axes."""

    #: Input features read by ``wv`` (rows of ``wv`` kept).
    value_inputs: tuple[int, ...]
    #: Convolution channels (columns of ``wv``; per-head filters: of its (d_in x heads *
    #: channels) view, :func:`tcmplib.topology.value_view`).
    channels: tuple[int, ...]
    #: Live heads.
    heads: tuple[int, ...]
    #: Per kept head, its kept Q/K column pairs (indices into ``qk_dim``).
    qk_columns: tuple[tuple[int, ...], ...]
    #: Dense-layer inputs, as flat indices ``(n * heads + h) * channels + c``.
    fc_inputs: tuple[int, ...]

    @property
    def qk_width(self) -> int:
        """Width of the padded Q/K tensors: the largest number of pairs of one head."""
        return max((len(columns) for columns in self.qk_columns), default=0)


#: The dense layer reads the convolution outputs it keeps, gathered, except in batches of at
#: least ``SCATTER_MIN_BATCH`` sequences when it keeps at least ``SCATTER_MIN_SHARE`` of them:
#: there, gathering scattered columns of the large activation costs more than multiplying
#: every output by the layer's weights scattered into a zero-filled matrix. Both thresholds
#: are read off ``benchmarks/bench_gather.py`` (the README quotes its table), with a margin:
#: at batch 1 the gather is always cheaper.
SCATTER_MIN_SHARE = 0.5
SCATTER_MIN_BATCH = 256

#: Sequences per slice of the convolution on CPU: the (rows x channels) outputs of 32
#: sequences (at most 5.5 MB) stay in cache from the product to the gather, where the whole
#: batch's would travel to memory and back (at batch 575, 3x faster on this CPU;
#: ``benchmarks/bench_inference.py --stages``).
CONVOLUTION_SLICE = 32

#: Per-head filters: the smallest batch whose convolution runs head after head (see
#: :meth:`CompactGCN.headwise`).
HEADWISE_MIN_BATCH = 8


def _config_json(config: GCNConfig) -> dict[str, object]:
    """The sizes a file records: dropout acts in training only, and the attention's
    neighbourhood only when there is one (files of networks without it stay as they were)."""
    fields = asdict(config)
    del fields["dropout"]
    if fields["neighbourhood"] is None:
        del fields["neighbourhood"]
    if fields["values"] == "shared":
        del fields["values"]
    if fields["attention"] == "softmax":
        del fields["attention"]
    return fields


class CompactGCN(nn.Module):
    """The attention GCN restricted to its live units; same input and output as the original.

    ``forward`` computes what :class:`~tcmplib.model.AttentionGCN` computes with the pruned
    weights, on smaller dense tensors.
    """

    value_inputs: Tensor
    fc_rows: Tensor
    row_fc_rows: Tensor
    constant_attention: Tensor | None
    conv_rows: Tensor
    additive_mask: Tensor | None
    score_weights: Tensor | None

    def __init__(
        self,
        config: GCNConfig,
        kept: KeptIndices,
        tensors: Mapping[str, Tensor],
    ) -> None:
        super().__init__()
        self.config = config
        self.kept = kept
        self.wq = nn.Parameter(tensors["wq"].clone())
        self.wk = nn.Parameter(tensors["wk"].clone())
        self.wv = nn.Parameter(tensors["wv"].clone())
        self.fc = nn.Parameter(tensors["fc"].clone())
        self.register_buffer(
            "value_inputs", torch.tensor(kept.value_inputs, dtype=torch.int64), persistent=False
        )
        # The read rows against every kept channel: with shared filters the convolution's
        # only layout; with per-head filters the one of small batches (below).
        conv_rows, row_fc_rows = self._feature_indices(config, kept)
        self.register_buffer("conv_rows", conv_rows, persistent=False)
        #: Per-head filters: each kept head's kept channels, as a (start, stop) range of
        #: the kept channels (:func:`_head_ranges`); None for shared filters.
        self.head_channels: tuple[tuple[int, int], ...] | None = None
        fc_rows = row_fc_rows
        if config.per_head:
            fc_rows, self.head_channels = _head_ranges(config, kept)
        self.register_buffer("fc_rows", fc_rows, persistent=False)
        self.register_buffer("row_fc_rows", row_fc_rows, persistent=False)
        #: Per-head filters compute each kept head's rows against its own channels, head
        #: after head, in batches of at least this many sequences, and below it the read rows
        #: against every kept channel in one product: head after head computes no output
        #: twice, but its products, one per head, cost more calls than they save at batch 1
        #: (benchmarks/README.md, "Per-head compact networks").
        self.headwise_min_batch = HEADWISE_MIN_BATCH
        hops = config.neighbourhood
        # Added to the scores (0 inside the neighbourhood, -inf outside): one in-place add
        # instead of a masked copy of every score tensor.
        self.register_buffer(
            "additive_mask",
            None
            if hops is None or config.silenceable
            else torch.zeros(config.nodes, config.nodes).masked_fill(
                ~neighbourhood_mask(hops), float("-inf")
            ),
            persistent=False,
        )
        # Bilinear attention multiplies its scores instead (tcmplib.model.bilinear_weights).
        self.register_buffer(
            "score_weights",
            bilinear_weights(config.nodes, None if hops is None else neighbourhood_mask(hops))
            if config.silenceable
            else None,
            persistent=False,
        )
        self._qk_cache: tuple[tuple[tuple[int, int], ...], Tensor] | None = None
        # Without a query/key pair in any head every score is 0, so the attention is the same
        # for every sequence: computed once, expanded over the batch without a copy (MP at
        # 99% often prunes every query and key weight).
        self.register_buffer(
            "constant_attention",
            self._normalized(torch.zeros(len(kept.heads), config.nodes, config.nodes))
            if kept.qk_width == 0
            else None,
            persistent=False,
        )
        #: Sequences per slice of the convolution on CPU (None: the whole batch at once, as
        #: an exported graph, which must not depend on the batch size, computes it).
        self.convolution_slice: int | None = CONVOLUTION_SLICE
        grid = (
            len(conv_rows) * len(kept.channels)
            if self.head_channels is None
            else config.nodes * len(kept.channels)
        )
        self._row_grid = len(conv_rows) * len(kept.channels)
        self._all_row_fc_rows = bool(torch.equal(row_fc_rows, torch.arange(self._row_grid)))
        self._all_inputs = kept.value_inputs == tuple(range(config.d_in))
        self._all_conv_rows = len(conv_rows) == config.nodes * len(kept.heads)
        # The dense network's sliced kernel computes every row of every kept head against
        # every kept channel (shared filters), or against as many of its own channels as
        # every other head keeps (per-head filters).
        widths = {stop - start for start, stop in self.head_channels or ()}
        self._dense_kernel = self._all_conv_rows and len(widths) <= 1
        self._all_fc_rows = bool(torch.equal(self.fc_rows, torch.arange(grid)))
        self._grid = grid
        self._kept_share = len(kept.fc_inputs) / grid if grid else 0.0

    @staticmethod
    def _feature_indices(config: GCNConfig, kept: KeptIndices) -> tuple[Tensor, Tensor]:
        """The attention rows the dense layer needs, and where its inputs lie among them.

        A dense-layer input ``(n, h, c)`` is ``ReLU(A_h[n] . V[:, c])``: it needs row ``n`` of
        head ``h``'s attention only. ``conv_rows`` lists the rows (as ``h * nodes + n`` in the
        compact heads, in (node, head) order) that some kept input reads; ``fc_rows`` the
        position of each kept input in the (row, channel) grid of those rows' outputs.
        """
        head_position = {head: i for i, head in enumerate(kept.heads)}
        channel_position = {channel: i for i, channel in enumerate(kept.channels)}
        inputs = []
        for flat in kept.fc_inputs:
            node, rest = divmod(flat, config.heads * config.channels)
            head, channel = divmod(rest, config.channels)
            # Per-head filters: input (n, h, c) reads value column h * channels + c = rest.
            column = rest if config.per_head else channel
            inputs.append((node, head_position[head], channel_position[column]))
        rows = sorted({(node, head) for node, head, _ in inputs})
        row_position = {row: i for i, row in enumerate(rows)}
        channels = len(kept.channels)
        conv_rows = [head * config.nodes + node for node, head in rows]
        fc_rows = [row_position[(n, h)] * channels + c for n, h, c in inputs]
        return torch.tensor(conv_rows, dtype=torch.int64), torch.tensor(fc_rows, dtype=torch.int64)

    def expected_shapes(self) -> dict[str, tuple[int, ...]]:
        return _expected_shapes(self.config, self.kept)

    def num_parameters(self) -> int:
        """Stored values (dense, padding included)."""
        return sum(p.numel() for p in self.parameters())

    def num_nonzero(self) -> int:
        return sum(int(p.count_nonzero()) for p in self.parameters())

    def is_dense(self) -> bool:
        """Whether every unit was kept (a dense network saved in this format)."""
        config, kept = self.config, self.kept
        every = tuple(range(config.qk_dim))
        return (
            kept.value_inputs == tuple(range(config.d_in))
            and kept.channels == tuple(range(config.value_columns))
            and kept.heads == tuple(range(config.heads))
            and all(columns == every for columns in kept.qk_columns)
            and kept.fc_inputs == tuple(range(config.fc_in))
        )

    def dense_weights(self) -> dict[str, Tensor]:
        """The original network's four tensors, in their shapes; only for a dense network
        (:meth:`is_dense`), where the compact tensors are the original ones reordered."""
        if not self.is_dense():
            raise ValueError(
                "expected a dense network (every unit kept, e.g. a baseline run), got a "
                f"compact one with tensors {self.expected_shapes()}"
            )
        weights = {name: getattr(self, name).detach() for name in PRUNABLE}
        weights["wv"] = value_tensor(weights["wv"], self.config)
        return weights

    # The forward pass in its stages (:data:`STAGES`), so that a profile times the same code.

    def attention(self, x: Tensor) -> Tensor:
        """Attention of every kept head, (batch, heads, nodes, nodes), as the network's
        (:meth:`tcmplib.model.AttentionGCN.attention`)."""
        batch, nodes, d_in = x.shape
        heads, width = self.wq.shape[0], self.wq.shape[2]
        if self.constant_attention is not None:
            return self.constant_attention.expand(batch, heads, nodes, nodes)
        # Queries and keys of all heads from one product; each head's (nodes, width) blocks
        # are then made contiguous, on which the batched product runs 2.7x faster.
        qk = (x.reshape(batch * nodes, d_in) @ self._qk_weights()).view(
            batch, nodes, 2, heads, width
        )
        q = qk[:, :, 0].transpose(1, 2).contiguous()
        k = qk[:, :, 1].permute(0, 2, 3, 1).contiguous()
        return self._normalized(torch.matmul(q, k))

    def _normalized(self, scores: Tensor) -> Tensor:
        """Attention from scores (in place where it can): bilinear weights, or the
        neighbourhood and softmax."""
        if self.score_weights is not None:
            return scores.mul_(self.score_weights)
        if self.additive_mask is not None:
            scores.add_(self.additive_mask)
        return torch.softmax(scores, dim=-1)

    def _qk_weights(self) -> Tensor:
        """Queries and keys of every head side by side, (d_in, 2 * heads * width), the score
        scale folded into the queries (2 K values to scale, not 4 M scores).

        Kept between calls without autograd, rebuilt when ``wq`` or ``wk`` change: at batch 1
        the three small copies that build it were a tenth of the forward pass.
        """
        key = tuple((w._version, w.data_ptr()) for w in (self.wq, self.wk))
        cached = self._qk_cache
        if cached is not None and cached[0] == key and not torch.is_grad_enabled():
            return cached[1]
        scaled = self.wq * (1.0 / math.sqrt(self.config.qk_dim))
        weights = torch.cat([scaled, self.wk], dim=0).transpose(0, 1).reshape(self.wq.shape[1], -1)
        if not torch.is_grad_enabled():
            self._qk_cache = (key, weights)
        return weights

    def values(self, x: Tensor) -> Tensor:
        """The kept convolution channels of every node: (batch, nodes, channels)."""
        # Gathers copy activations; skip them when nothing is dropped, as at low rates where
        # every unit is still live.
        inputs = x if self._all_inputs else x[..., self.value_inputs]
        return inputs @ self.wv

    def headwise(self, batch: int) -> bool:
        """Whether the convolution computes head after head at this batch size (per-head
        filters only); the outputs then lie in :attr:`fc_rows`' layout, else in
        :attr:`row_fc_rows`'."""
        return self.head_channels is not None and batch >= self.headwise_min_batch

    def _layout(self, batch: int) -> tuple[Tensor, int, bool]:
        """Where the kept inputs lie among the computed outputs at this batch size, how many
        outputs there are, and whether every output is a kept input, in kept order."""
        if self.head_channels is None or self.headwise(batch):
            return self.fc_rows, self._grid, self._all_fc_rows
        return self.row_fc_rows, self._row_grid, self._all_row_fc_rows

    def scatters(self, batch: int) -> bool:
        """Whether the dense layer takes every computed convolution output at this batch size,
        its weights scattered into a zero-filled matrix, instead of gathering the kept ones."""
        if batch < SCATTER_MIN_BATCH:
            return False
        _, grid, everything = self._layout(batch)
        return not everything and len(self.kept.fc_inputs) >= SCATTER_MIN_SHARE * grid

    def convolution(self, attention: Tensor, values: Tensor) -> Tensor:
        """The dense layer's inputs: ``ReLU(A_h[n] . V[:, c])`` for the kept ``(n, h, c)``,
        computed for the attention rows that some kept input reads against every kept
        channel, or (per-head filters, :meth:`headwise`) for every row of each kept head
        against its own channels; all computed outputs where it scatters.

        The product runs slice by slice on CPU (:data:`CONVOLUTION_SLICE`), each slice's
        outputs gathered while they are in cache.
        """
        batch, heads, nodes, _ = attention.shape
        headwise = self.headwise(batch)
        if headwise:
            rows = attention  # every row of each kept head
        elif attention.stride(0) == 0:
            # The same attention for every sequence: its read rows once, expanded.
            rows = attention[0].reshape(heads * nodes, nodes).index_select(0, self.conv_rows)
            rows = rows.expand(batch, *rows.shape)
        else:
            rows = attention.reshape(batch, heads * nodes, nodes)
            # (node, head) order: the dense layer's order of inputs, whichever rows are read.
            rows = rows.index_select(1, self.conv_rows)
        fc_rows, grid, everything = self._layout(batch)
        gathered = not (everything or self.scatters(batch))
        size = self.convolution_slice if attention.device.type == "cpu" else None
        if size is None or batch <= size:
            block = self._products(rows, values, headwise)
            return (block.index_select(1, fc_rows) if gathered else block).relu_()
        out = attention.new_empty(batch, len(fc_rows) if gathered else grid)
        for s in range(0, batch, size):
            block = self._products(rows[s : s + size], values[s : s + size], headwise)
            out[s : s + size] = block.index_select(1, fc_rows) if gathered else block
        return out.relu_()

    def _products(self, rows: Tensor, values: Tensor, headwise: bool) -> Tensor:
        """The computed convolution outputs, (batch, grid): each read row against every
        kept channel, or (``headwise``, per-head filters) each kept head's rows against its
        own channels only, head after head (a head's channels are a contiguous range of the
        kept ones), where one product against every kept channel computes each output once
        per kept head."""
        if not headwise:
            return torch.bmm(rows, values).flatten(1)
        assert self.head_channels is not None
        return torch.cat(
            [
                torch.bmm(rows[:, i], values[:, :, start:stop]).flatten(1)
                for i, (start, stop) in enumerate(self.head_channels)
            ],
            dim=1,
        )

    def dense(self, features: Tensor) -> Tensor:
        batch = features.shape[0]
        if self.scatters(batch):
            # Rebuilt at each call rather than stored, so that it never goes stale and the
            # network holds its compact weights only (bench_gather.py times it with the rest).
            fc_rows, grid, _ = self._layout(batch)
            rows = self.fc.new_zeros(grid, self.fc.shape[1])
            return features @ rows.index_copy(0, fc_rows, self.fc)
        return features @ self.fc

    def forward(self, x: Tensor) -> Tensor:
        config = self.config
        if x.dim() != 3 or x.shape[1:] != (config.nodes, config.d_in):
            raise ValueError(
                f"CompactGCN input: expected (batch, {config.nodes}, {config.d_in}), "
                f"got {tuple(x.shape)}"
            )
        attention, values = self.attention(x), self.values(x)
        size = self.convolution_slice if x.device.type == "cpu" else None
        if size is None or len(x) <= size or self._kept_share < SCATTER_MIN_SHARE:
            # (The share is that of fc_rows' layout: per-head filters compute head after
            # head at batches beyond one slice.)
            return self.dense(self.convolution(attention, values))
        if self._dense_kernel:
            # Every attention row is read: the dense network's own sliced kernel, on the
            # dense layer scattered into the whole (node, head, channel) grid.
            rows = self.fc.new_zeros(self._grid, self.fc.shape[1])
            rows = rows.index_copy(0, self.fc_rows, self.fc)
            if self.head_channels is not None:
                # Per-head filters: the grid's (head, node, channel) order to the kernel's
                # (node, head, channel), the values as (batch, heads, nodes, channels) views.
                heads, nodes = len(self.head_channels), self.config.nodes
                rows = rows.reshape(heads, nodes, -1, rows.shape[1]).transpose(0, 1)
                rows = rows.reshape(self._grid, -1)
                values = values.view(len(x), nodes, heads, -1).transpose(1, 2)
            return convolve_dense(attention, values, rows, size)
        # Large batches of a dense layer that reads many outputs: the convolution and the
        # dense layer slice by slice, as the dense network's tcmplib.fused does, so a slice's
        # outputs go from the product to the dense layer in cache instead of through a
        # (batch, inputs) activation in memory (at 95%, batch 575: 56 ms against 82 ms
        # stage by stage). Where few are read, the gathered activation is small and the
        # slicing only adds calls (at 99%: 42 ms against 30 ms).
        logits = x.new_empty(len(x), self.fc.shape[1])
        for s in range(0, len(x), size):
            logits[s : s + size] = self.dense(
                self.convolution(attention[s : s + size], values[s : s + size])
            )
        return logits


def _head_ranges(
    config: GCNConfig, kept: KeptIndices
) -> tuple[Tensor, tuple[tuple[int, int], ...]]:
    """Per-head filters: where each kept dense-layer input lies among the convolution's
    outputs, and each kept head's channels as a ``(start, stop)`` range of the kept ones.

    Head ``h``'s filters are the value columns ``h * channels`` to ``(h + 1) * channels``, so
    in the sorted kept channels each head's are contiguous, and a dense-layer input
    ``(n, h, c)`` reads head ``h``'s attention row ``n`` against that head's channel ``c``
    only. The convolution computes head after head every row against the head's channels,
    (node, channel) within a head: input ``(n, h, c)`` is output
    ``offset_h + n * width_h + (c's position in the head's range)``.
    """
    ranges = []
    for head in kept.heads:
        start = bisect.bisect_left(kept.channels, head * config.channels)
        ranges.append((start, bisect.bisect_left(kept.channels, (head + 1) * config.channels)))
    offsets = {}
    offset = 0
    for head, (start, stop) in zip(kept.heads, ranges, strict=True):
        offsets[head] = offset
        offset += config.nodes * (stop - start)
    head_position = {head: i for i, head in enumerate(kept.heads)}
    fc_rows = []
    for flat in kept.fc_inputs:
        node, column = divmod(flat, config.heads * config.channels)
        head = column // config.channels
        start, stop = ranges[head_position[head]]
        fc_rows.append(offsets[head] + node * (stop - start) + kept.channels.index(column) - start)
    return torch.tensor(fc_rows, dtype=torch.int64), tuple(ranges)


def _expected_shapes(config: GCNConfig, kept: KeptIndices) -> dict[str, tuple[int, ...]]:
    heads, width = len(kept.heads), kept.qk_width
    return {
        "wq": (heads, config.d_in, width),
        "wk": (heads, config.d_in, width),
        "wv": (len(kept.value_inputs), len(kept.channels)),
        "fc": (len(kept.fc_inputs), config.classes),
    }


def multiply_adds(config: GCNConfig, kept: KeptIndices | None = None) -> dict[str, int]:
    """Multiply-adds per sequence of each of the :data:`STAGES`, as the forward pass runs them.

    Without ``kept``, the dense network's (:class:`~tcmplib.model.AttentionGCN`): at the
    paper's sizes 0.45 M for the queries and keys, 0.06 M for the scores, 0.23 M for the
    values, 0.90 M for the convolution and 1.94 M for the dense layer, 3.57 M in all. With
    ``kept``, a :class:`CompactGCN`'s: the kept heads' query/key columns (padded to the
    widest head, as stored), the kept value inputs and channels, the attention rows that
    some kept dense-layer input reads times the kept channels (per-head filters, in batches
    of at least :data:`HEADWISE_MIN_BATCH`: every row of a kept head times its own kept
    channels), and the kept dense-layer
    inputs. Softmax and ReLU are not multiply-adds and are not counted.
    """
    nodes, classes = config.nodes, config.classes
    if kept is None:
        heads, width, channels = config.heads, config.qk_dim, config.channels
        inputs, rows, dense_inputs = config.d_in, config.heads * nodes, config.fc_in
        # Per-head filters: every head's own columns, each row against its head's only.
        columns = config.value_columns
    else:
        heads, width, channels = len(kept.heads), kept.qk_width, len(kept.channels)
        columns = channels
        inputs = len(kept.value_inputs)
        if config.per_head:
            # Every row of a kept head against its own channels: nodes rows per channel.
            rows, channels = config.nodes, len(kept.channels)
        else:
            # A read row against every kept channel.
            rows = len(CompactGCN._feature_indices(config, kept)[0])
        dense_inputs = len(kept.fc_inputs)
    return {
        "attention": nodes * config.d_in * 2 * heads * width + heads * nodes * nodes * width,
        "values": nodes * inputs * columns,
        "convolution": rows * nodes * channels,
        "dense": dense_inputs * classes,
    }


def _pruned_weights(model: AttentionGCN, masks: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
    """The weights the masked model computes with (parametrizations applied, masks multiplied)."""
    weights = {name: getattr(model, name).detach().clone() for name in PRUNABLE}
    if masks is not None:
        for name in PRUNABLE:
            if name not in masks or tuple(masks[name].shape) != tuple(weights[name].shape):
                raise ValueError(
                    f"masks[{name!r}]: expected shape {tuple(weights[name].shape)}, got "
                    f"{tuple(masks[name].shape) if name in masks else 'nothing'}"
                )
            weights[name] = weights[name] * (masks[name] != 0).to(weights[name].dtype)
    return weights


def masked_copy(model: AttentionGCN, masks: Mapping[str, Tensor]) -> AttentionGCN:
    """A plain (unparametrized) copy of ``model`` whose pruned weights are set to zero."""
    copy = AttentionGCN(model.config)
    with torch.no_grad():
        for name, weight in _pruned_weights(model, masks).items():
            getattr(copy, name).copy_(weight)
    return copy


def compact_model(model: AttentionGCN, masks: Mapping[str, Tensor] | None = None) -> CompactGCN:
    """Drop every dead unit of the pruned model; the logits stay the same.

    Without ``masks``, the pruned weights are the nonzero entries of the model's
    (possibly parametrized) weights; with ``masks``, the model's weights times the masks.
    """
    config = model.config
    weights = _pruned_weights(model, masks)
    report = analyze(weights, config)
    alive = report.alive
    effective = report.effective_masks
    assert report.live_heads is not None

    heads = report.live_heads.nonzero().squeeze(1).tolist()
    qk_columns = tuple(
        tuple(effective["wq"][head].any(dim=0).nonzero().squeeze(1).tolist()) for head in heads
    )
    kept = KeptIndices(
        value_inputs=tuple(alive["input"].nonzero().squeeze(1).tolist()),
        channels=tuple(alive["channels"].nonzero().squeeze(1).tolist()),
        heads=tuple(heads),
        qk_columns=qk_columns,
        fc_inputs=tuple(alive["fc_inputs"].nonzero().squeeze(1).tolist()),
    )

    width = kept.qk_width
    dtype = weights["wq"].dtype
    wq = torch.zeros(len(heads), config.d_in, width, dtype=dtype)
    wk = torch.zeros_like(wq)
    for position, (head, columns) in enumerate(zip(heads, qk_columns, strict=True)):
        index = torch.tensor(columns, dtype=torch.int64)
        wq[position, :, : len(columns)] = weights["wq"][head][:, index]
        wk[position, :, : len(columns)] = weights["wk"][head][:, index]
    value_inputs = torch.tensor(kept.value_inputs, dtype=torch.int64)
    channels = torch.tensor(kept.channels, dtype=torch.int64)
    tensors = {
        "wq": wq,
        "wk": wk,
        "wv": value_view(weights["wv"], config)[value_inputs][:, channels],
        "fc": weights["fc"][torch.tensor(kept.fc_inputs, dtype=torch.int64)],
    }
    return CompactGCN(config, kept, tensors)


# --------------------------------------------------------------------------- files


def _description(compact: CompactGCN) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": _config_json(compact.config),
        "kept": {
            "value_inputs": list(compact.kept.value_inputs),
            "channels": list(compact.kept.channels),
            "heads": list(compact.kept.heads),
            "qk_columns": [list(columns) for columns in compact.kept.qk_columns],
            "fc_inputs": list(compact.kept.fc_inputs),
        },
        "tensors": {name: list(shape) for name, shape in compact.expected_shapes().items()},
    }


def _tensors(compact: CompactGCN) -> dict[str, Tensor]:
    return {name: getattr(compact, name).detach().contiguous() for name in PRUNABLE}


def save_compact(compact: CompactGCN, directory: str | Path) -> tuple[Path, Path]:
    """Write ``compact.json`` and ``compact.safetensors`` into ``directory``; return both paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # Each file is written under a temporary name and renamed into place (the tensors first,
    # the description that points to them last): an interrupted save never leaves a
    # truncated file behind.
    staging = Path(tempfile.mkdtemp(dir=directory, prefix=".compact-"))
    try:
        save_file(_tensors(compact), str(staging / TENSORS_NAME))
        (staging / JSON_NAME).write_text(
            json.dumps(_description(compact), separators=(",", ":")) + "\n"
        )
        os.replace(staging / TENSORS_NAME, directory / TENSORS_NAME)
        os.replace(staging / JSON_NAME, directory / JSON_NAME)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory / JSON_NAME, directory / TENSORS_NAME


def _index_list(value: Any, size: int, where: str, path: Path) -> tuple[int, ...]:
    """Check a strictly increasing list of ints in ``[0, size)``."""
    if not isinstance(value, list) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in value
    ):
        raise CompactFormatError(f"{path}: {where}: expected a list of integers")
    increasing = all(a < b for a, b in zip(value, value[1:], strict=False))
    if not increasing or any(i < 0 or i >= size for i in value):
        raise CompactFormatError(
            f"{path}: {where}: expected strictly increasing indices in [0, {size})"
        )
    return tuple(value)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CompactFormatError(f"{path}: expected {what}, no such file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CompactFormatError(f"{path}: expected valid JSON ({error})") from None


def _read_description(path: Path) -> tuple[GCNConfig, KeptIndices, dict[str, Any]]:
    return _parse_description(_read_json(path, "a compact-model description"), path)


def check_format(document: Mapping[str, Any], name: str, version: int, path: Path) -> None:
    """A one-line :class:`CompactFormatError` unless ``document`` declares format ``name``
    at ``version`` (the files of this module and of :mod:`tcmplib.sparse_file`)."""
    if document.get("format") != name:
        raise CompactFormatError(
            f'{path}: expected "format": "{name}", got {document.get("format")!r}'
        )
    if document.get("format_version") != version:
        raise CompactFormatError(
            f'{path}: expected "format_version": {version}, got {document.get("format_version")!r}'
        )


def _parse_description(
    description: Any, path: Path
) -> tuple[GCNConfig, KeptIndices, dict[str, Any]]:
    """Check a description (the content of ``compact.json``); ``path`` names it in errors."""
    if not isinstance(description, dict):
        raise CompactFormatError(f"{path}: expected a JSON object at the top level")
    check_format(description, FORMAT_NAME, FORMAT_VERSION, path)
    for key in ("config", "kept", "tensors"):
        if not isinstance(description.get(key), dict):
            raise CompactFormatError(f"{path}: expected an object under {key!r}")
    config_fields = set(GCNConfig.__dataclass_fields__)
    # The recipe's options came later and change no shape: files written before them load.
    required = config_fields - {"dropout", "neighbourhood", "values", "attention"}
    if not required <= set(description["config"]) <= config_fields:
        raise CompactFormatError(
            f"{path}: config: expected the keys {sorted(required)} (and optionally dropout, "
            f"neighbourhood, values, attention), got {sorted(description['config'])}"
        )
    try:
        config = GCNConfig(**description["config"])
    except ValueError as error:
        raise CompactFormatError(f"{path}: {error}") from None

    kept_json = description["kept"]
    axes = {
        "value_inputs": config.d_in,
        "channels": config.value_columns,
        "heads": config.heads,
        "fc_inputs": config.fc_in,
    }
    missing = sorted((set(axes) | {"qk_columns"}) - set(kept_json))
    if missing:
        raise CompactFormatError(f"{path}: kept: expected the keys {missing} too")
    indices = {
        axis: _index_list(kept_json[axis], size, f"kept.{axis}", path)
        for axis, size in axes.items()
    }
    qk_json = kept_json["qk_columns"]
    if not isinstance(qk_json, list) or len(qk_json) != len(indices["heads"]):
        raise CompactFormatError(
            f"{path}: kept.qk_columns: expected one list per kept head "
            f"({len(indices['heads'])} lists)"
        )
    qk_columns = tuple(
        _index_list(columns, config.qk_dim, f"kept.qk_columns[{i}]", path)
        for i, columns in enumerate(qk_json)
    )
    heads, channels = set(indices["heads"]), set(indices["channels"])
    for flat in indices["fc_inputs"]:
        rest = flat % (config.heads * config.channels)
        head, channel = divmod(rest, config.channels)
        if head not in heads or (rest if config.per_head else channel) not in channels:
            raise CompactFormatError(
                f"{path}: kept.fc_inputs: input {flat} (head {head}, channel {channel}) "
                "expected to belong to a kept head and a kept channel"
            )
    kept = KeptIndices(qk_columns=qk_columns, **indices)
    expected = _expected_shapes(config, kept)
    declared = {
        name: tuple(shape)
        for name, shape in description["tensors"].items()
        if isinstance(shape, list)
    }
    if declared != expected:
        raise CompactFormatError(
            f"{path}: tensors: expected shapes {expected} from the kept indices, "
            f"got {description['tensors']}"
        )
    return config, kept, description


def load_compact(directory: str | Path) -> CompactGCN:
    """Read a model written by :func:`save_compact`, checking description and tensors."""
    directory = Path(directory)
    json_path, tensors_path = directory / JSON_NAME, directory / TENSORS_NAME
    config, kept, _ = _read_description(json_path)
    expected = _expected_shapes(config, kept)
    try:
        tensors = load_file(str(tensors_path))
    except FileNotFoundError:
        raise CompactFormatError(
            f"{tensors_path}: expected the model's tensors, no such file"
        ) from None
    except Exception as error:  # safetensors raises its own error types for damaged files
        raise CompactFormatError(f"{tensors_path}: expected a safetensors file ({error})") from None
    found = {name: tuple(tensor.shape) for name, tensor in tensors.items()}
    if found != expected:
        raise CompactFormatError(f"{tensors_path}: expected tensors {expected}, got {found}")
    return CompactGCN(config, kept, tensors)


# --------------------------------------------------------------------------- structures


def _runs(indices: tuple[int, ...]) -> list[int | list[int]]:
    """Sorted indices with each run of three or more as a half-open ``[start, stop]`` pair:
    ``(0, 1, 2, 5, 7, 8)`` -> ``[[0, 3], 5, 7, 8]``. Dense layers at low rates keep long
    runs, sparse ones at 99% scattered indices; both stay short (never longer than the
    plain list, since a pair is written only where it saves characters)."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and runs[-1][1] == index:
            runs[-1][1] = index + 1
        else:
            runs.append([index, index + 1])
    encoded: list[int | list[int]] = []
    for start, stop in runs:
        encoded += [[start, stop]] if stop - start >= 3 else list(range(start, stop))
    return encoded


def _from_runs(value: Any, where: str, path: Path) -> list[int]:
    def is_int(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    def is_run(x: Any) -> bool:
        return isinstance(x, list) and len(x) == 2 and all(map(is_int, x)) and x[0] < x[1]

    if not isinstance(value, list) or not all(is_int(x) or is_run(x) for x in value):
        raise CompactFormatError(
            f"{path}: {where}: expected a list of indices and [start, stop] runs (start < stop)"
        )
    return [i for x in value for i in ([x] if is_int(x) else range(x[0], x[1]))]


@dataclass(frozen=True)
class CompactStructure:
    """A compact network without its weights: what survived compaction, and its sizes.

    A sweep writes one per run next to the result (:func:`save_structure`). It holds no
    weight, only unit indices and counts, so it can be committed where the weights may not
    (networks trained on FPHA), and it outlives the saved networks: the inference benchmark
    times a :meth:`twin` built from it, a network with the same tensors and gathers filled
    with random values at the dense network's initial scale, which costs the same to run:
    CPU time does not depend on the values as long as they stay out of the denormal range.
    """

    config: GCNConfig
    kept: KeptIndices
    #: Nonzero values of the compact tensors: the weights the network computes with.
    nonzero_weights: int
    #: Bytes of the network's ``compact.safetensors``.
    file_bytes: int
    #: Bytes of its sparse file (:mod:`tcmplib.sparse_file`); None in structures recorded
    #: before that format existed.
    sparse_bytes: int | None = None

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return _expected_shapes(self.config, self.kept)

    @property
    def stored_values(self) -> int:
        """Values the compact tensors store (zeros and Q/K padding included)."""
        return sum(math.prod(shape) for shape in self.shapes.values())

    def twin(self, seed: int = 0) -> CompactGCN:
        """A :class:`CompactGCN` of this structure with weights drawn from ``seed`` at the
        dense network's initial scale (Glorot-uniform bounds of each original tensor).

        The scale matters, the values do not: with N(0, 1) weights the attention scores
        reach the hundreds and softmax underflows into denormal floats; at batch 575 a 99%
        network's softmax then took 5.6x and its whole forward pass 2.6x the time of the
        same network at a trained scale, on this CPU.
        """
        generator = torch.Generator().manual_seed(seed)
        original = self.config.weight_shapes()
        tensors = {}
        for name, shape in self.shapes.items():
            fan_in, fan_out = original[name][-2], original[name][-1]
            bound = math.sqrt(6.0 / (fan_in + fan_out))
            tensors[name] = (torch.rand(shape, generator=generator) * 2.0 - 1.0) * bound
        return CompactGCN(self.config, self.kept, tensors)


def structure_of(compact: CompactGCN) -> CompactStructure:
    """The structure of a compact network; ``file_bytes`` is what :func:`save_compact` writes."""
    from tcmplib.sparse_file import sparse_bytes  # it builds on this module

    return CompactStructure(
        config=compact.config,
        kept=compact.kept,
        nonzero_weights=compact.num_nonzero(),
        file_bytes=len(save(_tensors(compact))),
        sparse_bytes=sparse_bytes(compact),
    )


def save_structure(structure: CompactStructure, path: str | Path) -> Path:
    """Write ``structure`` as one JSON file, atomically. Index lists are stored as runs."""
    from tcmplib.train import atomic_write  # train imports nothing of this module

    kept = structure.kept
    document = {
        "format": STRUCTURE_FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": _config_json(structure.config),
        "kept_runs": {
            "value_inputs": _runs(kept.value_inputs),
            "channels": _runs(kept.channels),
            "heads": _runs(kept.heads),
            "fc_inputs": _runs(kept.fc_inputs),
        },
        "qk_columns": [list(columns) for columns in kept.qk_columns],
        "tensors": {name: list(shape) for name, shape in structure.shapes.items()},
        "nonzero_weights": structure.nonzero_weights,
        "stored_values": structure.stored_values,
        "file_bytes": structure.file_bytes,
    }
    if structure.sparse_bytes is not None:
        document["sparse_bytes"] = structure.sparse_bytes
    text = json.dumps(document, separators=(",", ":")) + "\n"
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def load_structure(path: str | Path) -> CompactStructure:
    """Read a file of :func:`save_structure`, checked as strictly as :func:`load_compact`."""
    path = Path(path)
    document = _read_json(path, "a compact-network structure")
    if not isinstance(document, dict):
        raise CompactFormatError(f"{path}: expected a JSON object at the top level")
    if document.get("format") != STRUCTURE_FORMAT_NAME:
        raise CompactFormatError(
            f'{path}: expected "format": "{STRUCTURE_FORMAT_NAME}", got {document.get("format")!r}'
        )
    runs = document.get("kept_runs")
    if not isinstance(runs, dict):
        raise CompactFormatError(f"{path}: expected an object under 'kept_runs'")
    kept = {axis: _from_runs(value, f"kept_runs.{axis}", path) for axis, value in runs.items()}
    description = {
        "format": FORMAT_NAME,
        "format_version": document.get("format_version"),
        "config": document.get("config"),
        "kept": {**kept, "qk_columns": document.get("qk_columns")},
        "tensors": document.get("tensors"),
    }
    config, indices, _ = _parse_description(description, path)
    counts = {}
    for key in ("nonzero_weights", "stored_values", "file_bytes"):
        value = document.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise CompactFormatError(f"{path}: {key}: expected an integer >= 0, got {value!r}")
        counts[key] = value
    sparse = document.get("sparse_bytes")
    if sparse is not None and (
        not isinstance(sparse, int) or isinstance(sparse, bool) or sparse < 0
    ):
        raise CompactFormatError(
            f"{path}: sparse_bytes: expected an integer >= 0 (or no such key), got {sparse!r}"
        )
    structure = CompactStructure(
        config, indices, counts["nonzero_weights"], counts["file_bytes"], sparse
    )
    if counts["stored_values"] != structure.stored_values:
        raise CompactFormatError(
            f"{path}: stored_values: expected {structure.stored_values} from the tensor shapes, "
            f"got {counts['stored_values']}"
        )
    if structure.nonzero_weights > structure.stored_values:
        raise CompactFormatError(
            f"{path}: nonzero_weights: expected at most the {structure.stored_values} stored "
            f"values, got {structure.nonzero_weights}"
        )
    return structure


# --------------------------------------------------------------------------- summary


@dataclass(frozen=True)
class CompactionSummary:
    """Sizes before and after compaction, and how far apart the two models' logits are."""

    parameters_before: int
    nonzero_before: int
    parameters_after: int
    nonzero_after: int
    bytes_before: int
    bytes_after: int
    #: Largest absolute logit difference on the inputs given, computed in float64.
    max_abs_difference: float

    def rows(self) -> list[dict[str, int | str]]:
        """A two-row table (masked dense model, compact model) for display."""
        return [
            {
                "model": "masked (dense)",
                "stored values": self.parameters_before,
                "nonzero": self.nonzero_before,
                "file bytes": self.bytes_before,
            },
            {
                "model": "compact",
                "stored values": self.parameters_after,
                "nonzero": self.nonzero_after,
                "file bytes": self.bytes_after,
            },
        ]


def max_logit_difference(model: nn.Module, other: nn.Module, inputs: Tensor) -> float:
    """Largest absolute difference of the two models' logits, computed in float64 copies."""
    with torch.no_grad():
        first = copy.deepcopy(model).double()(inputs.double())
        second = copy.deepcopy(other).double()(inputs.double())
    return (first - second).abs().max().item() if first.numel() else 0.0


def summarize_compaction(
    model: AttentionGCN, compact: CompactGCN, inputs: Tensor
) -> CompactionSummary:
    """Parameter counts and serialized sizes before/after, and the logits' max difference.

    ``model`` is the masked model (its weights as it computes with them). File sizes are
    the safetensors bytes of the four tensors; the compact size adds its JSON description.
    The logits are compared in float64 copies of both models: in float32, a logit that is a
    near-cancelling sum of large terms differs by rounding alone, because the compact model
    sums fewer terms in another order; float64 leaves only structural differences visible.
    """
    dense = {name: getattr(model, name).detach().contiguous() for name in PRUNABLE}
    description = json.dumps(_description(compact), separators=(",", ":")) + "\n"
    difference = max_logit_difference(model, compact, inputs)
    return CompactionSummary(
        parameters_before=sum(t.numel() for t in dense.values()),
        nonzero_before=sum(int(t.count_nonzero()) for t in dense.values()),
        parameters_after=compact.num_parameters(),
        nonzero_after=compact.num_nonzero(),
        bytes_before=len(save(dense)),
        bytes_after=len(save(_tensors(compact))) + len(description.encode()),
        max_abs_difference=difference,
    )


# --------------------------------------------------------------------------- latency


@dataclass(frozen=True)
class LatencyStats:
    """Wall-clock time of one forward pass: median and quartiles over the timed repeats."""

    median_ms: float
    p25_ms: float
    p75_ms: float
    repeats: int
    #: Size of the first axis of the inputs.
    batch: int
    #: ``torch.get_num_threads()`` while timing.
    threads: int

    @property
    def iqr_ms(self) -> float:
        """Interquartile range: the spread of the middle half of the repeats."""
        return self.p75_ms - self.p25_ms


def _quantile(ordered: list[float], q: float) -> float:
    """Linear interpolation between order statistics (the 'inclusive' method).

    One rule for the median and the quartiles keeps ``p25 <= median <= p75`` by
    construction, and works for a single repeat (``statistics.quantiles`` needs two).
    """
    position = q * (len(ordered) - 1)
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def _positive_int(value: object, name: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


@contextlib.contextmanager
def _timing(model: nn.Module, inputs: Tensor, threads: int | None) -> Iterator[int]:
    """Eval mode, inference mode and ``threads`` for a measurement, all restored afterwards;
    yields the thread count in use."""
    if not isinstance(inputs, Tensor) or inputs.dim() < 1:
        raise ValueError("inputs: expected a tensor with a batch axis")
    if threads is not None:
        threads = _positive_int(threads, "threads", 1)
    previous_threads = torch.get_num_threads()
    was_training = model.training
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        model.eval()
        with torch.inference_mode():
            yield torch.get_num_threads()
    finally:
        model.train(was_training)
        if threads is not None:
            torch.set_num_threads(previous_threads)


def _synchronize(inputs: Tensor) -> None:
    # CUDA kernels are asynchronous: without this the clock would stop at their launch.
    if inputs.device.type == "cuda":
        torch.cuda.synchronize(inputs.device)


def _stats(durations: list[float], batch: int, threads: int) -> LatencyStats:
    ordered = sorted(durations)
    return LatencyStats(
        median_ms=_quantile(ordered, 0.5),
        p25_ms=_quantile(ordered, 0.25),
        p75_ms=_quantile(ordered, 0.75),
        repeats=len(durations),
        batch=batch,
        threads=threads,
    )


def measure_latency(
    model: nn.Module,
    inputs: Tensor,
    *,
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
) -> LatencyStats:
    """Time ``model(inputs)`` ``repeats`` times after ``warmup`` untimed calls.

    Runs under ``torch.inference_mode()`` with the model in eval mode (its previous mode is
    restored). With ``threads``, torch's intra-op thread count is set for the measurement
    and put back afterwards, so a benchmark does not change the caller's process. On CUDA
    inputs, each call is synchronised before the clock stops; kernels are asynchronous and
    would otherwise be timed at launch.
    """
    repeats = _positive_int(repeats, "repeats", 1)
    warmup = _positive_int(warmup, "warmup", 0)
    durations: list[float] = []
    with _timing(model, inputs, threads) as used_threads:
        for _ in range(warmup):
            model(inputs)
        _synchronize(inputs)
        for _ in range(repeats):
            start = time.perf_counter()
            model(inputs)
            _synchronize(inputs)
            durations.append((time.perf_counter() - start) * 1000.0)
    return _stats(durations, int(inputs.shape[0]), used_threads)


#: The stages of :class:`CompactGCN`'s forward pass, in order: the attention of every head,
#: the value projection (the convolution's weights), the graph convolution with its ReLU and
#: the gather of the outputs the dense layer keeps, and the dense layer.
STAGES: tuple[str, ...] = ("attention", "values", "convolution", "dense")


def measure_stages(
    model: CompactGCN,
    inputs: Tensor,
    *,
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
) -> dict[str, LatencyStats]:
    """Time each of the :data:`STAGES` of ``model``'s forward pass, pass after pass.

    Each timed pass runs the stages in order on the previous stage's output, as ``forward``
    does, and clocks them one by one (same modes and threads as :func:`measure_latency`), so
    the medians say where a forward pass spends its time; their sum is close to, not equal
    to, the median of whole passes.
    """
    repeats = _positive_int(repeats, "repeats", 1)
    warmup = _positive_int(warmup, "warmup", 0)
    durations: dict[str, list[float]] = {stage: [] for stage in STAGES}

    def clocked(stage: str, function: Callable[..., Tensor], *args: Tensor) -> Tensor:
        start = time.perf_counter()
        out = function(*args)
        _synchronize(inputs)
        durations[stage].append((time.perf_counter() - start) * 1000.0)
        return out

    with _timing(model, inputs, threads) as used_threads:
        for _ in range(warmup + repeats):
            attention = clocked("attention", model.attention, inputs)
            values = clocked("values", model.values, inputs)
            features = clocked("convolution", model.convolution, attention, values)
            clocked("dense", model.dense, features)
    batch = int(inputs.shape[0])
    return {
        stage: _stats(times[warmup:], batch, used_threads) for stage, times in durations.items()
    }
