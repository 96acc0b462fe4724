"""Masks as parametrizations: the relaxed magnitude mask psi of Section 3, and crisp masks.

A method registers one of these on each weight of :data:`tcmplib.model.PRUNABLE` with
``torch.nn.utils.parametrize``; the model then computes with ``W * mask`` while the
optimizer updates the original ``W``. The trainer never sees masks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

from tcmplib.model import PRUNABLE

__all__ = [
    "psi",
    "band_lr_ceiling",
    "RelaxedMagnitudeMask",
    "FixedMask",
    "attach",
    "detach",
    "crisp_masks",
    "topk_masks",
    "count_kept",
    "keep_count",
]


def psi(w: torch.Tensor, temperature: float) -> torch.Tensor:
    """The paper's relaxed mask psi(w) = 2 sigmoid(w^2 / T) - 1 (footnote of Eq. 1).

    Symmetric in w, 0 at w = 0, in [0, 1), and crisp as T -> 0 (1 for every w != 0): the
    budget term therefore drives small weights to exactly the region |w| << sqrt(T).
    """
    if temperature <= 0:
        raise ValueError(f"psi: temperature must be > 0, got {temperature}")
    return 2.0 * torch.sigmoid(w.square() / temperature) - 1.0


def band_lr_ceiling(temperature: float, band_steps: float) -> float:
    """Largest learning rate that keeps ``band_steps`` Adam steps inside the switching band.

    ``psi(w) < 1/2`` exactly when ``|w| < sqrt(T ln 3)``. Adam moves every weight by up to
    about the learning rate per step whatever the size of its gradient, so a pruned weight
    (held near 0 by the budget, nudged by a tiny but steady cross-entropy gradient) crosses
    the band in one step once the rate exceeds its half-width, and with ``psi`` then near 1
    the budget term can no longer pull it back. Capping the rate at
    ``sqrt(T ln 3) / band_steps`` makes a crossing take at least ``band_steps`` steps, during
    which the budget term acts.
    """
    if temperature <= 0:
        raise ValueError(f"band_lr_ceiling: temperature must be > 0, got {temperature}")
    if not band_steps > 0:
        raise ValueError(f"band_lr_ceiling: band_steps must be > 0, got {band_steps}")
    return math.sqrt(temperature * math.log(3.0)) / band_steps


class RelaxedMagnitudeMask(nn.Module):
    """Parametrization W -> W * psi(W; T); ``temperature`` is annealed by the method."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = float(temperature)

    def mask(self, w: torch.Tensor) -> torch.Tensor:
        return psi(w, self.temperature)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask(w)


class FixedMask(nn.Module):
    """Parametrization W -> W * M for a fixed binary mask M (kept as a buffer)."""

    keep: torch.Tensor

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("keep", mask.detach().to(torch.bool).clone())

    def mask(self, w: torch.Tensor) -> torch.Tensor:
        return self.keep.to(w.dtype)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask(w)


def attach(model: nn.Module, masks: Mapping[str, nn.Module]) -> None:
    """Register one mask parametrization per named weight (replacing any previous one)."""
    for name, module in masks.items():
        if name not in PRUNABLE:
            raise ValueError(f"attach: unknown weight {name!r}; expected one of {PRUNABLE}")
        if parametrize.is_parametrized(model, name):
            parametrize.remove_parametrizations(model, name, leave_parametrized=False)
        parametrize.register_parametrization(model, name, module)


def detach(model: nn.Module, *, bake: bool = True) -> None:
    """Remove the mask parametrizations; with ``bake`` the weights keep the masked values."""
    for name in PRUNABLE:
        if parametrize.is_parametrized(model, name):
            parametrize.remove_parametrizations(model, name, leave_parametrized=bake)


def count_kept(masks: dict[str, torch.Tensor]) -> int:
    return int(sum(int(m.count_nonzero()) for m in masks.values()))


def topk_masks(scores: dict[str, torch.Tensor], keep: int) -> dict[str, torch.Tensor]:
    """Global top-``keep`` binary masks over all tensors, by decreasing score.

    Ties are broken by position in the concatenation of the tensors in the given order
    (earlier first), so the kept count is exactly ``keep`` and reruns agree.
    """
    total = sum(s.numel() for s in scores.values())
    if not 0 <= keep <= total:
        raise ValueError(f"topk_masks: keep must be in [0, {total}], got {keep}")
    flat = torch.cat([s.detach().reshape(-1).float().cpu() for s in scores.values()])
    # stable sort of -score keeps the earlier index first among equal scores
    order = torch.sort(-flat, stable=True).indices[:keep]
    chosen = torch.zeros(total, dtype=torch.bool)
    chosen[order] = True
    masks: dict[str, torch.Tensor] = {}
    offset = 0
    for name, s in scores.items():
        masks[name] = chosen[offset : offset + s.numel()].view(s.shape).to(s.device)
        offset += s.numel()
    return masks


#: Where a magnitude budget applies: one ranking over all weights (the paper's Eq. 1, Table
#: 1's MP), or the same rate in every tensor (``torch.nn.utils.prune``'s and Han et al.'s
#: layer-wise MP).
SCOPES: tuple[str, ...] = ("global", "per-tensor")


def scoped_topk_masks(
    scores: dict[str, torch.Tensor], rate: float, scope: str
) -> dict[str, torch.Tensor]:
    """Top-score binary masks at pruning ``rate``: over all tensors at once (``"global"``,
    :func:`topk_masks` of ``keep_count(N, rate)``), or in each tensor separately
    (``"per-tensor"``, ``keep_count(n_i, rate)`` of each, so every tensor loses its share).
    """
    if scope == "global":
        return topk_masks(scores, keep_count(sum(s.numel() for s in scores.values()), rate))
    if scope != "per-tensor":
        raise ValueError(f"scope: expected one of {SCOPES}, got {scope!r}")
    masks: dict[str, torch.Tensor] = {}
    for name, score in scores.items():
        masks.update(topk_masks({name: score}, keep_count(score.numel(), rate)))
    return masks


def keep_count(total: int, rate: float) -> int:
    """Weights kept at pruning ``rate``: round((1 - rate) * total), the paper's # parameters."""
    return int(math.floor((1.0 - rate) * total + 0.5))


def crisp_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """Binary masks of the weights the model actually computes with (nonzero effective weights)."""
    return {name: getattr(model, name).detach() != 0 for name in PRUNABLE}
