"""The straight-through Heaviside step of TCMP's accessibility networks (Section 4.3).

The accessibility networks ``phi_r`` and ``phi_l`` apply a Heaviside step ``h`` after every
weighted sum. Its derivative is zero almost everywhere, so no gradient would reach the
weights through them. The paper keeps the exact step in the forward pass (the responses
stay binary, so the masks the network computes with are genuinely 0/1) and uses a sigmoid
as a differentiable surrogate in the backward pass: a straight-through estimator (STE)::

    forward:   h(x) = 1 if x > 0 else 0
    backward:  dh/dx := d/dx sigmoid(x / tau) = sigmoid(x / tau) (1 - sigmoid(x / tau)) / tau

``tau`` (our name; the paper does not give one) sets the width of the surrogate: the
gradient peaks at ``x = 0`` with height ``1 / (4 tau)`` and is negligible beyond a few
``tau``. The forward step matches :func:`tcmplib.topology.heaviside` exactly (``x <= 0``
maps to 0), so :func:`ste_step` can be passed as the ``step`` of the topology analysis.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from tcmplib.topology import Step

__all__ = ["HeavisideSTE", "heaviside_ste", "ste_step", "surrogate", "surrogate_grad"]


def _check_tau(tau: float) -> float:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau):
        raise ValueError(f"tau: expected a positive finite number, got {tau!r}")
    if tau <= 0:
        raise ValueError(f"tau: expected a positive finite number, got {tau!r}")
    return float(tau)


class HeavisideSTE(torch.autograd.Function):
    """Heaviside forwards, the derivative of ``sigmoid(x / tau)`` backwards."""

    @staticmethod
    def forward(x: Tensor, tau: float) -> Tensor:  # type: ignore[override]
        return (x > 0).to(x.dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor, float], output: Tensor) -> None:
        x, tau = inputs
        ctx.save_for_backward(x)
        ctx.tau = tau

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_output * surrogate_grad(x, ctx.tau), None


def heaviside_ste(x: Tensor, tau: float = 1.0) -> Tensor:
    """``h(x)`` with the straight-through sigmoid gradient of width ``tau`` (see the module doc)."""
    return HeavisideSTE.apply(x, _check_tau(tau))


def ste_step(tau: float = 1.0) -> Step:
    """The straight-through step as a one-argument function, for the topology analysis."""
    checked = _check_tau(tau)

    def step(x: Tensor) -> Tensor:
        return HeavisideSTE.apply(x, checked)

    return step


def surrogate(x: Tensor, tau: float = 1.0) -> Tensor:
    """The smooth stand-in ``sigmoid(x / tau)`` whose derivative the backward pass uses."""
    return torch.sigmoid(x / _check_tau(tau))


def surrogate_grad(x: Tensor, tau: float = 1.0) -> Tensor:
    """``d/dx sigmoid(x / tau)``: the gradient the STE passes for ``h`` at ``x``."""
    s = torch.sigmoid(x / _check_tau(tau))
    return s * (1.0 - s) / tau
