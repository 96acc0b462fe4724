"""The network's tail, convolution -> ReLU -> dense layer, computed in cache-sized slices.

:meth:`tcmplib.model.AttentionGCN.features` is the definition: per head, ``ReLU(A_k X Wv)``,
flattened in (node, head, channel) order, then the dense layer. Computed that way the
(batch, 43,008) activation travels to memory and back about ten times per training step (the
convolution writes it, ReLU reads and writes it, the dense layer reads it twice, its gradient
is written, masked and read twice more).

:func:`convolve_dense` computes the same function one slice of the batch at a time, so that
a slice's activation (32 graphs: 5.5 MB) stays in cache from the convolution to the dense
layer. The backward pass recomputes each slice's activation instead of storing it (one more
convolution, +8% of the step's multiply-adds) and accumulates the dense layer's gradient
slice by slice. On this CPU the tail's forward + backward takes 15% less time than the
definition on one thread and about the same on two (benchmarks/bench_kernels.py). Its
outputs are the definition's up to float rounding (the tests compare both, values and
gradients); the slicing is fixed, so a run stays bit-for-bit repeatable.

With per-head filters (values of shape (batch, heads, nodes, channels)) each head multiplies
its own attention by its own values. The slice's product comes out in (head, node, channel)
order, and rather than transposing every slice's activation to the dense layer's (node,
head, channel) order, the kernel reorders the dense layer's rows to (head, node, channel)
once per call (and its gradient back once). The values may be a view of (batch, node, head,
channel) memory, as :meth:`tcmplib.model.AttentionGCN.values` computes them in one matmul:
each slice's values are made head-major in cache, and their gradient is written back in the
same layout.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["convolve_dense", "slice_size"]

#: Graphs per slice on CPU: 32 x 43,008 fp32 activations = 5.5 MB. Of 8 / 16 / 32 / 64 /
#: 150 / 600, the fastest on one thread and within 1% of the fastest on two
#: (benchmarks/bench_kernels.py).
CPU_SLICE = 32

#: Column multiple of the dense layer inside the kernel (see :func:`_widen`).
_WIDTH = 16


def slice_size(device: torch.device) -> int | None:
    """Graphs per slice on ``device``: :data:`CPU_SLICE` on CPU; the whole batch (None) on a
    GPU, whose memory holds the activation and whose kernels want it whole."""
    return CPU_SLICE if device.type == "cpu" else None


class _ConvolveDense(torch.autograd.Function):
    """logits[b] = vec(ReLU(attn[b] @ v[b])) @ fc, slice by slice (see the module doc).

    Shared filters: ``attn`` holds (node, head) rows, (batch, nodes * heads, nodes), and ``v``
    is (batch, nodes, channels). Per-head filters: ``attn`` is (batch, heads, nodes, nodes)
    and ``v`` (batch, heads, nodes, channels).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, attn: Tensor, v: Tensor, fc: Tensor, size: int, per_head: bool
    ) -> Tensor:
        ctx.dtypes = attn.dtype, v.dtype, fc.dtype
        dtype = _compute_dtype(attn)
        attn, v, fc = attn.to(dtype), v.to(dtype), fc.to(dtype)
        fc_wide = _widen(_head_major(fc, v.shape) if per_head else fc)
        logits = attn.new_empty(attn.shape[0], fc_wide.shape[1])
        for s in range(0, attn.shape[0], size):
            hidden = _hidden(attn[s : s + size], v[s : s + size], per_head)
            out = logits[s : s + size]
            torch.mm(hidden.view(len(out), -1), fc_wide, out=out)
        ctx.save_for_backward(attn, v, fc_wide)
        ctx.size, ctx.classes, ctx.per_head = size, fc.shape[1], per_head
        return logits[:, : fc.shape[1]]

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad_logits: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, None, None]:
        attn, v, fc_wide = ctx.saved_tensors
        size = ctx.size
        grad_wide = _widen(grad_logits.to(attn.dtype))
        fc_t = fc_wide.t().contiguous()
        grad_attn, grad_v = torch.empty_like(attn), torch.empty_like(v)
        # The dense layer's gradient sums over slices: in fp32 whatever the products' precision
        grad_fc = torch.zeros_like(fc_wide, dtype=ctx.dtypes[2])
        low_precision = fc_wide.dtype != grad_fc.dtype
        for s in range(0, attn.shape[0], size):
            a, vs, g = attn[s : s + size], v[s : s + size], grad_wide[s : s + size]
            if ctx.per_head:  # (slice * heads) products of one head's attention and values
                a, vs = _flat_heads(a), _flat_heads(vs.contiguous())
            hidden = torch.bmm(a, vs).relu_()  # recomputed: cheaper than a trip to memory
            rows = hidden.view(len(g), -1)
            if low_precision:
                grad_fc += torch.mm(rows.t(), g)
            else:
                grad_fc.addmm_(rows.t(), g)
            grad_hidden = torch.ops.aten.threshold_backward(torch.mm(g, fc_t), rows, 0.0)
            grad_hidden = grad_hidden.view(hidden.shape)
            torch.bmm(grad_hidden, vs.transpose(1, 2), out=grad_attn[s : s + size].view(a.shape))
            grad_vs = torch.bmm(a.transpose(1, 2), grad_hidden)
            # grad_v has v's layout: a node-major view is written back through its strides
            grad_v[s : s + size].copy_(grad_vs.view(grad_v[s : s + size].shape))
        grad_fc = grad_fc[:, : ctx.classes]
        if ctx.per_head:
            grad_fc = _node_major_rows(grad_fc, v.shape)
        attn_dtype, v_dtype, _ = ctx.dtypes
        return grad_attn.to(attn_dtype), grad_v.to(v_dtype), grad_fc.contiguous(), None, None


def _compute_dtype(tensor: Tensor) -> torch.dtype:
    """The products' dtype: autocast's where it is on for the tensor's device (bf16 training,
    :data:`tcmplib.train.PRECISIONS`), else the tensor's own."""
    device = tensor.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return tensor.dtype


def _hidden(attn: Tensor, v: Tensor, per_head: bool) -> Tensor:
    """A slice's ReLU(attention @ values): shared filters in the dense layer's (node, head,
    channel) order, per-head filters in (head, node, channel) order (see the module doc)."""
    if per_head:
        return torch.bmm(_flat_heads(attn), _flat_heads(v.contiguous())).relu_()
    return torch.bmm(attn, v).relu_()


def _flat_heads(tensor: Tensor) -> Tensor:
    """(slice, heads, rows, cols), contiguous -> (slice * heads, rows, cols), a view."""
    return tensor.view(-1, *tensor.shape[2:])


def _head_major(fc: Tensor, shape: torch.Size) -> Tensor:
    """Dense-layer rows from (node, head, channel) to (head, node, channel) order;
    ``shape`` is the values' (batch, heads, nodes, channels)."""
    _, heads, nodes, channels = shape
    return fc.reshape(nodes, heads, channels, -1).transpose(0, 1).reshape(fc.shape)


def _node_major_rows(fc: Tensor, shape: torch.Size) -> Tensor:
    """The inverse of :func:`_head_major`."""
    _, heads, nodes, channels = shape
    return fc.reshape(heads, nodes, channels, -1).transpose(0, 1).reshape(fc.shape)


def _widen(matrix: Tensor) -> Tensor:
    """``matrix`` with zero columns appended up to a multiple of 16: on two threads the dense
    layer's three matmuls ran 1.5-1.7x faster on 48 columns than on FPHA's 45 classes
    (0.9-1.15x on one; benchmarks/bench_kernels.py)."""
    extra = -matrix.shape[1] % _WIDTH
    return torch.nn.functional.pad(matrix, (0, extra)) if extra else matrix.contiguous()


def convolve_dense(attn: Tensor, v: Tensor, fc: Tensor, size: int | None) -> Tensor:
    """The dense layer's logits from attention (batch, heads, nodes, nodes), values
    (batch, nodes, channels), or (batch, heads, nodes, channels) for per-head filters, and
    dense weights (nodes * heads * channels, classes).

    ``size`` graphs per slice (None: the whole batch at once). Equal, up to rounding, to
    ``relu(einsum("bhnm,bmc->bnhc", attn, v)).flatten(1) @ fc`` (per-head filters:
    ``"bhnm,bhmc->bnhc"``).
    """
    batch, heads, nodes, _ = attn.shape
    if v.dim() == 4:
        return _ConvolveDense.apply(attn.contiguous(), v, fc, size or max(batch, 1), True)
    # (batch, node, head, source) rows: one matmul per graph writes the activation directly
    # in the dense layer's (node, head, channel) order.
    rows = attn.transpose(1, 2).reshape(batch, nodes * heads, nodes)
    return _ConvolveDense.apply(rows, v, fc, size or max(batch, 1), False)
