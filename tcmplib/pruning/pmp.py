"""Probabilistic magnitude pruning (PMP, Sahbi, arXiv 2305.19343), as reconstructed here.

What the public record says: PMP trains topology and weights together by aligning the
distribution of the network's latent weights with a fixed prior; because the distribution is
then known, the threshold that removes a fraction ``r`` of the weights follows from the
prior's quantile ``a(r)``; the mask is a band-stop function of the latent weights. The
details below are our choices (each is an option of :class:`PMPOptions`).

* **Mask.** ``W = W_latent * psi_a(W_latent)`` with the band-stop
  ``psi_a(w) = sigmoid(beta (w - a)) + sigmoid(-beta (w + a))``: about 0 for ``|w| < a``,
  about 1 outside, exactly 1/2 at ``|w| = a``. ``beta = gamma / a`` where the dimensionless
  steepness ``gamma`` grows *geometrically* from ``steepness_start`` (4: a soft mask,
  psi(0) = 0.04, psi(2a) = 0.98) to ``steepness_end`` (200: a 1% change of ``|w|`` around
  ``a`` flips the mask), so every epoch sharpens the mask by the same factor.
* **Prior.** Zero-mean Gaussian (default) or Laplace. Its scale is fitted once, by maximum
  likelihood, to the initial latent weights (Gaussian: ``s = sqrt(mean w^2)``; Laplace:
  ``b = mean |w|``) and then kept fixed: the threshold ``a(r)`` is known before training
  (Gaussian ``a = s Phi^-1((1 + r) / 2)``, Laplace ``a = -b ln(1 - r)``) and training pulls
  the weights onto the prior, instead of the prior chasing the weights. ``prior_scale``
  fixes it by hand instead.
* **Scope.** ``"pooled"`` (default): one prior for all weights of the network, so ``r`` is a
  global rate, as for MP and TCMP, and the layers' rates are free. ``"per-tensor"``: one
  prior per weight tensor, scale fitted per tensor, so every tensor loses exactly ``r`` of its
  weights (uniform layer-wise sparsity).
* **Divergence.** The quantile-matching (1-D Wasserstein-2) distance between the empirical
  distribution of ``|w|`` and the prior's magnitude distribution (half-normal or
  exponential): ``mean_i (|w|_(i) - F^-1((i - 1/2) / n))^2 / s^2`` over the sorted
  magnitudes, divided by the prior variance so it is scale-free. We use it instead of a
  soft-histogram KL because it is exact (no bin width or kernel bandwidth to choose), its
  gradient moves every weight towards the quantile of its own rank (so it never vanishes
  on empty bins or on weights far out in the tails) and it costs one sort per step. Only
  magnitudes are matched: the mask and the prior are symmetric, and the signs are left to
  the cross entropy. Loss: ``CE + eta * divergence`` (``eta = 1``, the value the TCMP paper
  gives its mixing parameter).
* **Weight decay.** The alignment term is a prior on the latent weights, so a recipe's weight
  decay (Adam's L2 term, another zero-mean Gaussian prior, of a scale the recipe chose for
  the dense network) does not act on them: ``latent_decay=False`` exempts them, and the
  decay acts on every other parameter. With it on, the two priors disagree and decay wins:
  under the selected recipe (``weight_decay = 1e-2``) the per-weight decay ``1e-2 w`` was
  about 3x the alignment's pull, the latent weights shrank into the stop band, and a run at
  r = 50% ended with 93% of them below ``a(r)``: it trained a 93%-pruned network, and the
  hard mask then kept weights that had never computed (FPHA, paper scale: 61.73% against
  78.78% for the soft network at its last evaluation).
* **Threshold** (revision 2, ``threshold="rank"``, the default). The band's threshold
  follows the weights' own ranks: at the start of every epoch it is set between the largest
  magnitude the budget removes and the smallest it keeps (per group), so the soft mask stops
  exactly the weights that the final hard mask will remove, and the network trains under the
  mask it will keep. The prior still shapes the distribution through the alignment term;
  ``band_threshold`` in every history row is the band's
  threshold over the prior's ``a(r)`` (1 where the alignment has matched the prior at the
  rate). Revision 1 (``threshold="prior"``) kept the band at the prior's ``a(r)`` for the
  whole run. Under the selected recipe the alignment never pulled enough weights below it
  (FPHA, paper scale: 94.5% of them at r = 95%, 97.2% at r = 99% after 2,700 epochs), so
  the hard mask at the end removed weights that had computed at full strength (at 99% it
  kept 36% of them): the soft networks tested at 77-80% at their last evaluation, the
  pruned ones at 15-21% (99%) and 49-80% (95%). Following the ranks costs nothing
  extra: the alignment sorts the magnitudes at every step anyway, and the threshold is read
  from that order.
* **Final network.** The prior's hard mask ``|w| >= a(r)`` removes about ``r`` of the weights,
  only as exactly as the empirical distribution matches the prior; its rate is reported
  (``details["threshold_rate"]``, and ``threshold_rate`` in every history row). The final
  network then keeps exactly the top ``round((1 - r) N)`` magnitudes (pooled; per tensor for
  ``"per-tensor"``) of the baked weights ``w psi_a(w)``, so the rate is met by construction.
  Where psi underflows to exactly 0 (deep inside the band, when fewer than the budget lie
  outside it), a kept weight computes with its latent value instead of a zero.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tcmplib.model import PRUNABLE, AttentionGCN
from tcmplib.pruning.base import Job, PruneResult, PruningMethod
from tcmplib.pruning.masks import FixedMask, attach, detach, keep_count, topk_masks
from tcmplib.train import NoOpHook

__all__ = [
    "PMPOptions",
    "Prior",
    "BandStopMask",
    "band_stop",
    "magnitude_order",
    "geometric_steepness",
    "PMP",
]

PRIORS = ("gaussian", "laplace")
SCOPES = ("pooled", "per-tensor")
THRESHOLDS = ("rank", "prior")


def parametrize_original(model: nn.Module, name: str) -> Tensor:
    """The latent (unmasked) weight behind a parametrized ``name``."""
    return getattr(model.parametrizations, name).original  # type: ignore[no-any-return]


def band_stop(w: Tensor, threshold: float, steepness: float, floor: float = 0.0) -> Tensor:
    """``psi_a(w) = sigmoid(beta (w - a)) + sigmoid(-beta (w + a))`` with ``beta = steepness / a``,
    and 0 where it is below ``floor``.

    With ``a = 0`` (rate 0) nothing is removed: the mask is 1 everywhere. The floor keeps the
    masked weights ``w psi`` of the stop band, and their products with activations and
    gradients, out of float32's denormal range, where a matmul that reads or writes them ran
    60-85x slower on this CPU (benchmarks/bench_kernels.py). It must stay far below the
    values that train: Adam normalizes a gradient by its own size, so a mask of 1e-8 still
    moves its weight at full speed (a floor of 2^-24 cost PMP 13 points at 75% in a book
    run). Below 1e-24 the gradient through the mask, squared in Adam's second moment,
    underflows float32, and the weight does not move by it either way.
    """
    if threshold <= 0.0:
        return torch.ones_like(w)
    beta = steepness / threshold
    mask = torch.sigmoid(beta * (w - threshold)) + torch.sigmoid(-beta * (w + threshold))
    return mask.masked_fill(mask < floor, 0.0) if floor > 0.0 else mask


class BandStopMask(nn.Module):
    """Parametrization ``W -> W * psi_a(W)``; the method anneals ``steepness``."""

    def __init__(self, threshold: float, steepness: float, floor: float = 0.0) -> None:
        super().__init__()
        self.threshold = float(threshold)
        self.steepness = float(steepness)
        self.floor = float(floor)
        self.last_mask: Tensor | None = None

    def mask(self, w: Tensor) -> Tensor:
        return band_stop(w, self.threshold, self.steepness, self.floor)

    def forward(self, w: Tensor) -> Tensor:
        mask = self.mask(w)
        self.last_mask = mask.detach()  # the step's soft rate is logged from it
        return w * mask


def geometric_steepness(epoch: int, epochs: int, start: float, end: float) -> float:
    """``start`` at the first 1-based epoch, ``end`` at the last, geometric in between."""
    if epochs <= 1:
        return end
    progress = (epoch - 1) / (epochs - 1)
    return start * (end / start) ** progress


@dataclass(frozen=True)
class Prior:
    """A zero-mean prior over weights; ``scale`` is the Gaussian's s or the Laplace's b."""

    family: str
    scale: float

    @classmethod
    def fit(cls, family: str, weights: Tensor) -> Prior:
        """Maximum-likelihood zero-mean fit: s = sqrt(mean w^2), or b = mean |w|."""
        w = weights.detach().double()
        scale = float(w.square().mean().sqrt()) if family == "gaussian" else float(w.abs().mean())
        if not scale > 0:
            raise ValueError("PMP prior: the initial weights are all 0, no scale can be fitted")
        return cls(family, scale)

    @property
    def std(self) -> float:
        return self.scale if self.family == "gaussian" else self.scale * math.sqrt(2.0)

    def magnitude_quantile(self, p: Tensor) -> Tensor:
        """Quantile of ``|w|`` at probabilities ``p``: half-normal or exponential."""
        if self.family == "gaussian":
            return self.scale * torch.special.ndtri((1.0 + p) / 2.0)
        return -self.scale * torch.log1p(-p)

    def threshold(self, rate: float) -> float:
        """``a(r)``: the magnitude below which a fraction ``rate`` of the prior's mass lies."""
        return float(self.magnitude_quantile(torch.tensor(rate, dtype=torch.float64)))


@dataclass(frozen=True)
class PMPOptions:
    """Hyperparameters of PMP; see the module doc for what each choice means."""

    prior: str = "gaussian"  # "gaussian" or "laplace"
    scope: str = "pooled"  # "pooled" (global rate) or "per-tensor" (rate r in every tensor)
    prior_scale: float | None = None  # None: ML fit to the initial weights, then fixed
    alignment_weight: float = 1.0  # eta
    steepness_start: float = 4.0  # gamma = beta * a at the first epoch
    steepness_end: float = 200.0  # gamma at the last epoch
    mask_floor: float = 1e-24  # mask values below it are 0 (0: none; see band_stop)
    latent_decay: bool = False  # weight decay on the latent weights too (see the module doc)
    # "rank" (revision 2): the band follows the budget's ranks; "prior": fixed at a(r), the
    # revision-1 runs, whose identities predate the option and stay valid without it.
    threshold: str = field(default="rank", metadata={"identity": "unless", "unless": "prior"})

    def __post_init__(self) -> None:
        if self.prior not in PRIORS:
            raise ValueError(f"PMPOptions.prior: expected one of {PRIORS}, got {self.prior!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"PMPOptions.scope: expected one of {SCOPES}, got {self.scope!r}")
        if self.threshold not in THRESHOLDS:
            raise ValueError(
                f"PMPOptions.threshold: expected one of {THRESHOLDS}, got {self.threshold!r}"
            )
        for name in ("alignment_weight", "steepness_start", "steepness_end"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (0 < value < math.inf)
            ):
                raise ValueError(f"PMPOptions.{name}: expected a positive number, got {value!r}")
        if self.steepness_end < self.steepness_start:
            raise ValueError(
                f"PMPOptions.steepness_end: expected >= steepness_start "
                f"({self.steepness_start}), got {self.steepness_end!r}"
            )
        floor = self.mask_floor
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 <= floor < 1:
            raise ValueError(f"PMPOptions.mask_floor: expected a number in [0, 1), got {floor!r}")
        if not isinstance(self.latent_decay, bool):
            raise ValueError(
                f"PMPOptions.latent_decay: expected True or False, got {self.latent_decay!r}"
            )
        scale = self.prior_scale
        if scale is not None and (
            isinstance(scale, bool)
            or not isinstance(scale, (int, float))
            or not 0 < scale < math.inf
        ):
            raise ValueError(
                f"PMPOptions.prior_scale: expected None or a positive number, got {scale!r}"
            )


def magnitude_order(magnitudes: Tensor) -> Tensor:
    """Indices that sort non-negative float32 ``magnitudes`` ascending.

    For floats >= 0 the IEEE bit patterns, read as integers, are in the same order as the
    values, and torch's stable sort of 32-bit integers ran 3-8x faster than its sort of the
    floats on this CPU (2M weights, 23 ms on 2 threads; benchmarks/bench_kernels.py), which
    PMP does at every step. Equal values keep their index order.
    """
    if magnitudes.dtype != torch.float32:
        return torch.sort(magnitudes).indices
    return torch.sort(magnitudes.view(torch.int32), stable=True).indices


class _Group:
    """Weights sharing one prior: all tensors (pooled) or a single tensor (per-tensor)."""

    def __init__(
        self, names: tuple[str, ...], prior: Prior, rate: float, size: int, keep: int
    ) -> None:
        if not 0 < keep <= size:
            raise ValueError(f"PMP: expected a budget in 1..{size} weights, got {keep}")
        self.names = names
        self.prior = prior
        self.threshold = prior.threshold(rate)
        self.keep = keep
        self.band = self.threshold  # the band's threshold, moved by threshold="rank"
        # Target magnitudes at mid-rank probabilities, computed once (n floats per group).
        p = (torch.arange(size, dtype=torch.float64) + 0.5) / size
        self.targets = prior.magnitude_quantile(p).float()
        self._order: tuple[tuple[int, ...], Tensor] | None = None

    def magnitudes(self, weights: Mapping[str, Tensor]) -> Tensor:
        return torch.cat([weights[name].reshape(-1) for name in self.names]).abs()

    def order(self, weights: Mapping[str, Tensor], flat: Tensor) -> Tensor:
        """:func:`magnitude_order` of ``flat``, sorted once per weight update: the threshold
        at the epoch's start and the step's alignment read the same order (one sort per
        full-batch epoch). A parameter's ``_version`` counts its in-place updates."""
        versions = tuple(weights[name]._version for name in self.names)
        if self._order is None or self._order[0] != versions:
            self._order = (versions, magnitude_order(flat.detach()))
        return self._order[1]

    def follow_ranks(self, weights: Mapping[str, Tensor]) -> float:
        """Move the band between the largest magnitude the budget removes and the smallest
        it keeps (0, no band, when it keeps every weight); returns the new threshold."""
        with torch.no_grad():
            flat = self.magnitudes(weights)
            removed = flat.numel() - self.keep
            if removed == 0:
                self.band = 0.0
            else:
                pair = flat[self.order(weights, flat)[removed - 1 : removed + 1]]
                self.band = float(pair.double().mean())
        return self.band

    def divergence(self, weights: Mapping[str, Tensor]) -> Tensor:
        """Quantile-matching distance between sorted ``|w|`` and the prior, over ``std^2``."""
        flat = self.magnitudes(weights)
        # Each weight's target is the prior's quantile at the weight's rank: the sum of
        # (sorted |w| - targets)^2 taken in weight order, whose gradient is elementwise
        # (gathering the sorted values would scatter the gradient back, 2M indices a step).
        matched = torch.empty_like(flat)
        matched[self.order(weights, flat)] = self.targets.to(flat.device)
        return (flat - matched).square().mean() / self.prior.std**2


@dataclass(eq=False)
class _PMPHook(NoOpHook):
    groups: list[_Group]
    masks: dict[str, BandStopMask]
    total: int
    opts: PMPOptions
    keep: dict[str, int] | int
    final_threshold_rate: float = field(init=False, default=math.nan)

    def on_epoch_start(self, model: nn.Module, epoch: int, epochs: int) -> None:
        steepness = geometric_steepness(
            epoch, epochs, self.opts.steepness_start, self.opts.steepness_end
        )
        for mask in self.masks.values():
            mask.steepness = steepness
        if self.opts.threshold == "rank":
            assert isinstance(model, AttentionGCN)
            weights = model.prunable()
            for group in self.groups:
                band = group.follow_ranks(weights)
                for name in group.names:
                    self.masks[name].threshold = band

    def threshold_rate(self, weights: Mapping[str, Tensor]) -> float:
        """Fraction of weights the hard mask ``|w| >= a(r)`` removes."""
        with torch.no_grad():
            removed = sum(
                int((weights[name].abs() < group.threshold).sum())
                for group in self.groups
                for name in group.names
            )
        return removed / self.total

    def extra_loss(self, model: nn.Module) -> tuple[Tensor, dict[str, float]]:
        assert isinstance(model, AttentionGCN)
        weights = model.prunable()
        divergence = sum(group.divergence(weights) for group in self.groups)
        assert isinstance(divergence, Tensor)
        with torch.no_grad():
            # The masks of this step's forward pass (the trainer calls extra_loss after it).
            last = [mask.last_mask for mask in self.masks.values()]
            assert all(m is not None for m in last), "PMP: extra_loss before a forward pass"
            soft_kept = sum(float(m.sum()) for m in last if m is not None)
        logs = {
            "steepness": next(iter(self.masks.values())).steepness,
            "alignment": float(divergence.detach()),
            "soft_rate": 1.0 - soft_kept / self.total,
            "threshold_rate": self.threshold_rate(weights),
            "band_threshold": sum(g.band / g.threshold for g in self.groups) / len(self.groups),
        }
        return self.opts.alignment_weight * divergence, logs

    def on_train_end(self, model: nn.Module) -> None:
        assert isinstance(model, AttentionGCN)
        self.final_threshold_rate = self.threshold_rate(model.prunable())
        latent = {name: parametrize_original(model, name).detach().clone() for name in self.masks}
        detach(model, bake=True)
        with torch.no_grad():
            for name, w in model.prunable().items():
                # Deep inside the band psi underflows to exactly 0, so the baked weights can
                # hold fewer nonzeros than the budget. Those that the budget keeps are revived
                # with their latent value: the rate is met, and every other kept weight keeps
                # the value it was trained to compute with. Ranking by the latent |w| is
                # ranking by |w psi(w)| (psi grows with |w|) without the ties at zero.
                revive = (w == 0) & (latent[name] != 0)
                w[revive] = latent[name][revive]
        scores = {name: latent[name].abs() for name in model.prunable()}
        masks: dict[str, Tensor] = {}
        if isinstance(self.keep, int):
            masks = topk_masks(scores, self.keep)
        else:  # per tensor: the exact count in every tensor, so each loses its share r
            for name, score in scores.items():
                masks.update(topk_masks({name: score}, self.keep[name]))
        attach(model, {name: FixedMask(mask) for name, mask in masks.items()})

    def decay_exempt(self, model: nn.Module) -> list[nn.Parameter]:
        if self.opts.latent_decay:
            return []
        return [getattr(model.parametrizations, name).original for name in self.masks]


class PMP(PruningMethod):
    """Probabilistic magnitude pruning; see the module doc for the reconstruction."""

    name = "pmp"
    label = "PMP"
    options_class = PMPOptions
    tc_by_design = False
    style = ("#CC79A7", "^")

    def prune(self, job: Job) -> PruneResult:
        model, opts, rate = job.model, job.options, job.rate
        weights = model.prunable()
        total = model.num_weights()
        scopes = [PRUNABLE] if opts.scope == "pooled" else [(name,) for name in PRUNABLE]
        groups: list[_Group] = []
        for names in scopes:
            flat = torch.cat([weights[name].detach().reshape(-1) for name in names])
            prior = (
                Prior(opts.prior, float(opts.prior_scale))
                if opts.prior_scale is not None
                else Prior.fit(opts.prior, flat)
            )
            count = job.keep if opts.scope == "pooled" else keep_count(flat.numel(), rate)
            groups.append(_Group(names, prior, rate, flat.numel(), count))
        masks = {
            name: BandStopMask(group.threshold, opts.steepness_start, opts.mask_floor)
            for group in groups
            for name in group.names
        }
        attach(model, masks)
        keep: dict[str, int] | int = (
            job.keep if opts.scope == "pooled" else {g.names[0]: g.keep for g in groups}
        )
        hook = _PMPHook(groups, masks, total, opts, keep)
        trained = job.train(hook)
        details = {"threshold_rate": hook.final_threshold_rate}
        for group in groups:
            label = "pooled" if len(group.names) > 1 else group.names[0]
            details[f"prior_scale_{label}"] = group.prior.scale
            details[f"threshold_{label}"] = group.threshold
            details[f"band_threshold_{label}"] = group.band
        return job.result(trained, details)
