"""Magnitude pruning (Section 3 of the paper): the relaxed, trained variant of Eq. 1 and the
classic one-shot reference.

Relaxed MP (``"mp"``, the paper's MP rows of Table 1)
-----------------------------------------------------
Every weight tensor of :data:`tcmplib.model.PRUNABLE` is used as ``W * psi(W)`` with
``psi(w) = 2 sigmoid(w^2 / T) - 1`` (:class:`~tcmplib.pruning.masks.RelaxedMagnitudeMask`), and
the network is trained on Eq. 1::

    CE(W * psi(W)) + lambda * ((sum psi(W) - c) / N)^2,      c = round((1 - rate) N)

where ``N`` is the number of weights of the network. Choices the paper leaves open:

* **Budget normalisation.** The paper writes ``lambda (sum psi - c)^2`` with ``lambda = 10``.
  Here ``sum psi`` is of the order of 10^6, so the unnormalised term would be ~10^11 at the
  start and swamp the cross entropy. We divide the gap by ``N``: the term becomes
  ``lambda (r_soft - rate)^2`` with ``r_soft = 1 - sum psi / N`` the *soft pruning rate*, a
  number in [0, 1] whatever the network size, and keep the paper's ``lambda = 10``.
* **Temperature schedule.** ``psi`` switches from 0 to 1 around ``|w| ~ sqrt(T)`` (it is 1/2
  at ``w^2 = T ln 3``). ``T`` is annealed *linearly* over the epochs (the paper's word) from
  ``T0 = q^2``, where ``q`` is the magnitude of the ``c``-th largest weight at the start
  (the one-shot magnitude threshold, so ``psi(q) = 0.46`` in the first epoch), down to
  ``T_end = T0 * t_end_ratio`` (default 0.1: at the end ``psi(q) = 0.9999`` and ``psi`` is
  1/2 at ``0.33 q``). Tying ``T0`` to the rate and to the initial weights makes the schedule
  independent of the network's weight scale. Why not anneal further: Adam moves every
  weight by up to about the learning rate per step whatever its gradient, so the weights
  the budget drives to zero keep jittering at that amplitude (a few 1e-3 with the paper's
  adaptive rate, against dense-layer weights of order 1e-2). With ``t_end_ratio = 0.01``,
  ``sqrt(T)`` fell below that amplitude in the last epochs and the jittering weights
  switched back on (measured on the synthetic data at 95%, book profile: the soft rate fell
  from 84.5% to 75.3% over the last 14 epochs, and the crisp class-average accuracy was
  23.0% against 24.0% with the default).
* **Step ceiling.** Adam moves every weight by up to about the learning rate per
  step whatever its gradient, and the adaptive rule of :mod:`tcmplib.train` drives the rate
  up to its cap (1e-2) on long schedules. Once one step is wider than the band
  ``|w| < sqrt(T ln 3)`` in which ``psi < 1/2``, a pruned weight with a small but steady
  cross-entropy gradient jumps out of the band in one step, lands where ``psi`` is saturated
  and the budget term has no gradient left to pull it back. We therefore cap the learning
  rate at ``sqrt(T ln 3) / band_steps`` (default 2 steps across the band,
  :func:`~tcmplib.pruning.masks.band_lr_ceiling`); as ``T`` is annealed the cap falls with
  it. Without the cap (the code of the runs in ``results/fpha-paper-superseded``), TCMP at
  99% on FPHA at paper scale (same mechanism, smaller ``T``) held its budget for 2,000
  epochs and then lost it within 50 (chapter 8).
* **Budget scope** (``scope``). ``"global"``: Eq. 1 as written, one budget and one
  temperature for the whole network. ``"per-tensor"``: the same rate in every tensor (as
  ``torch.nn.utils.prune`` and Han et al. prune), one term ``lambda ((sum psi_i - c_i) /
  N_i)^2`` per tensor, each tensor's temperature tied to its own initial threshold, the
  learning rate under the narrowest of the tensors' bands, and the final projection per
  tensor (:mod:`tcmplib.disconnection` says why the scope matters).
* **Weight decay** (revision 3, ``masked_decay=False``, the default). A recipe's weight
  decay (Adam's L2 term, a zero-mean prior chosen for the dense network) pulls every weight
  towards 0; on the masked weights it pulls the soft rate past the budget, and the budget
  term, which only pushes back by ``2 lambda (r_soft - rate)``, cannot hold it once the
  temperature has fallen. Revision 2 let the decay act on them: under a recipe with
  ``weight_decay = 1e-2`` (FPHA, paper scale, 3 seeds at 95%, 2 at 99%) the soft rate ended
  at 0.998 against a 95% budget, so the crisp network kept weights the decay had already
  driven to zero (98.2-99.1% of the weights were zero after the projection), and at 99% it
  passed 0.993 by epoch 50 and reached 1.0: nothing computed, the network never trained
  (4.07% and 4.37%, chance). Revision 3 exempts the masked weights from the decay, as PMP
  exempts its latent weights (:mod:`tcmplib.pruning.pmp`), and leaves it on every other
  parameter: the budget term is then the only prior on the magnitudes, as in Eq. 1. Under a
  recipe without weight decay the two revisions are the same computation, and the option
  is left out of the run identity there (the records of the paper's recipe keep their
  names); under one with decay, revision-2 records are ``masked_decay=True`` and keep
  their names (``results/*-superseded``).
* **Final crisp network.** However short the training, the rate must be met exactly: at the
  end the relaxed weights ``W * psi(W)`` are baked in and the global top-``c`` by magnitude
  are kept with a :class:`~tcmplib.pruning.masks.FixedMask` (``|w psi(w)|`` is increasing in
  ``|w|``, so this is also the top-``c`` by ``psi``; ranking by ``psi`` itself would tie
  every large weight once ``psi`` rounds to 1.0). The test metrics are those of this crisp
  network.

History rows add ``temperature``, ``soft_kept`` (``sum psi``), ``soft_rate``, ``hard_rate``
(the rate if every weight with ``psi < 1/2`` were pruned) and ``budget`` (the loss term).

One-shot MP (``"mp-oneshot"``, the classic reference)
-----------------------------------------------------
Train the dense network, keep the global top-``c`` magnitudes (exact count, ties broken by
position), retrain the kept weights under a fixed mask: the two-phase template
:class:`~tcmplib.pruning.base.TwoPhaseMethod` (``dense_fraction``, default 1/2, of the epochs
for dense training, the rest for retraining), shared with greedy TC.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tcmplib.model import PRUNABLE, AttentionGCN
from tcmplib.pruning.base import (
    Job,
    PruneResult,
    PruningMethod,
    TwoPhaseMethod,
    TwoPhaseOptions,
)
from tcmplib.pruning.masks import (
    SCOPES,
    FixedMask,
    RelaxedMagnitudeMask,
    attach,
    band_lr_ceiling,
    detach,
    keep_count,
    scoped_topk_masks,
    topk_masks,
)
from tcmplib.train import NoOpHook

__all__ = [
    "MPOptions",
    "OneShotOptions",
    "RelaxedMP",
    "OneShotMP",
    "linear_temperature",
    "initial_temperature",
    "magnitude_threshold",
    "project_top_k",
]

#: psi(w) >= 1/2 exactly when w^2 / T >= ln 3 (2 sigmoid(x) - 1 = 1/2 at x = ln 3).
_HALF_KEPT = math.log(3.0)


def check_positive(owner: str, name: str, value: object) -> None:
    """An option that must be a positive finite number (one-line error naming it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{owner}.{name}: expected a positive number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{owner}.{name}: expected a finite number, got {value!r}")


@dataclass(frozen=True)
class MPOptions:
    """Hyperparameters of relaxed MP (Eq. 1). See the module doc for the reasoning."""

    budget_weight: float = 10.0  # lambda, the paper's value (applied to the normalised gap)
    t0_scale: float = 1.0  # T0 = t0_scale * q^2, q = initial magnitude of the c-th largest weight
    t_end_ratio: float = 0.1  # T_end = T0 * t_end_ratio, reached at the last epoch
    band_steps: float = 2.0  # learning rate <= sqrt(T ln 3) / band_steps
    # "global" (Eq. 1) or "per-tensor" (the same rate in every tensor). Added after the MP
    # records existed: at its default it stays out of the run identity, which keeps theirs.
    scope: str = field(default="global", metadata={"identity": "unless-default"})
    # The recipe's weight decay on the masked weights too (revision 2; revision 3 exempts
    # them). True is how the records before the option ran, and it does nothing under a
    # recipe without weight decay: in both cases the option stays out of the run identity.
    masked_decay: bool = field(
        default=False,
        metadata={"identity": "unless", "unless": True, "inert_without": "weight_decay"},
    )

    def __post_init__(self) -> None:
        if not isinstance(self.masked_decay, bool):
            raise ValueError(
                f"MPOptions.masked_decay: expected True or False, got {self.masked_decay!r}"
            )
        check_positive("MPOptions", "budget_weight", self.budget_weight)
        check_positive("MPOptions", "band_steps", self.band_steps)
        check_positive("MPOptions", "t0_scale", self.t0_scale)
        check_positive("MPOptions", "t_end_ratio", self.t_end_ratio)
        if self.scope not in SCOPES:
            raise ValueError(f"MPOptions.scope: expected one of {SCOPES}, got {self.scope!r}")
        if self.t_end_ratio > 1:
            raise ValueError(
                f"MPOptions.t_end_ratio: expected a number in (0, 1] (T only decreases), "
                f"got {self.t_end_ratio!r}"
            )


@dataclass(frozen=True)
class OneShotOptions(TwoPhaseOptions):
    """One-shot MP: how the profile's epochs are split (the two-phase template's), and where
    the budget applies (:data:`~tcmplib.pruning.masks.SCOPES`)."""

    scope: str = "global"  # "global" (Eq. 1) or "per-tensor" (the same rate in every tensor)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.scope not in SCOPES:
            raise ValueError(f"OneShotOptions.scope: expected one of {SCOPES}, got {self.scope!r}")


def linear_temperature(epoch: int, epochs: int, t0: float, t_end: float) -> float:
    """``T`` of a 1-based ``epoch``: ``t0`` at the first, ``t_end`` at the last, linear between."""
    if epochs <= 1:
        return t_end
    progress = (epoch - 1) / (epochs - 1)
    return t0 + (t_end - t0) * progress


def initial_temperature(method: str, threshold: float, keep: int, t0_scale: float) -> float:
    """``T0 = t0_scale * q^2``, tied to the magnitude ``q`` (``threshold``) at which the
    initial weights are cut to ``keep`` (by RelaxedMP and TCMP alike). ``q = 0`` is a
    one-line error naming ``method``: psi is undefined at T = 0."""
    if threshold <= 0.0:
        raise ValueError(
            f"{method}: the {keep}-th largest initial weight is 0, so no temperature "
            "can be tied to it; initialise the model with nonzero weights"
        )
    return t0_scale * threshold * threshold


def magnitude_threshold(weights: Mapping[str, Tensor], keep: int) -> float:
    """Magnitude of the ``keep``-th largest weight over all tensors (0 when ``keep`` is 0)."""
    if keep <= 0:
        return 0.0
    flat = torch.cat([w.detach().abs().reshape(-1).float().cpu() for w in weights.values()])
    return float(torch.topk(flat, keep, sorted=False).values.min())


def project_top_k(model: AttentionGCN, keep: int) -> dict[str, Tensor]:
    """Bake the current effective weights, then keep exactly the global top-``keep`` magnitudes.

    Whatever parametrization the weights had (relaxed mask or none), the model afterwards
    computes with ``W_eff * M`` through a :class:`FixedMask`, where ``W_eff`` is what it
    computed with before; returns the masks ``M``.
    """
    detach(model, bake=True)
    masks = topk_masks({name: w.abs() for name, w in model.prunable().items()}, keep)
    attach(model, {name: FixedMask(mask) for name, mask in masks.items()})
    return masks


@dataclass(frozen=True)
class _Budget:
    """One budget of relaxed MP: its tensors, the weights to keep among them, and the
    temperature schedule tied to their initial magnitudes."""

    names: tuple[str, ...]
    keep: int
    size: int
    t0: float
    t_end: float

    def temperature(self, epoch: int, epochs: int) -> float:
        return linear_temperature(epoch, epochs, self.t0, self.t_end)


@dataclass(eq=False)
class _RelaxedMPHook(NoOpHook):
    """Anneals T, adds the normalised budget term of Eq. 1, projects to top-c at the end.

    One budget for the whole network (``scope="global"``, Eq. 1), or one per tensor, each
    with its own temperature and its own term ``lambda ((sum psi_i - c_i) / N_i)^2``.
    """

    masks: dict[str, RelaxedMagnitudeMask]
    budgets: list[_Budget]
    total: int
    budget_weight: float
    band_steps: float
    masked_decay: bool

    def on_epoch_start(self, model: nn.Module, epoch: int, epochs: int) -> None:
        for budget in self.budgets:
            temperature = budget.temperature(epoch, epochs)
            for name in budget.names:
                self.masks[name].temperature = temperature

    def lr_ceiling(self, epoch: int, epochs: int) -> float:
        # The narrowest band bounds every step: Adam's steps are of one size for all weights.
        return min(
            band_lr_ceiling(budget.temperature(epoch, epochs), self.band_steps)
            for budget in self.budgets
        )

    def extra_loss(self, model: nn.Module) -> tuple[Tensor, dict[str, float]]:
        assert isinstance(model, AttentionGCN)
        weights = model.prunable()
        soft_parts: list[Tensor] = []
        budget_term: Tensor | float = 0.0
        for budget in self.budgets:
            part = sum(self.masks[name].mask(weights[name]).sum() for name in budget.names)
            assert isinstance(part, Tensor)
            soft_parts.append(part)
            gap = (part - budget.keep) / budget.size  # = target rate - soft rate
            budget_term = budget_term + self.budget_weight * gap.square()
        assert isinstance(budget_term, Tensor)
        with torch.no_grad():
            hard_kept = sum(
                int((w.square() >= _HALF_KEPT * self.masks[name].temperature).sum())
                for name, w in weights.items()
            )
        soft = sum(float(part.detach()) for part in soft_parts)
        logs = {
            "temperature": self.masks[self.budgets[0].names[0]].temperature,
            "soft_kept": soft,
            "soft_rate": 1.0 - soft / self.total,
            "hard_rate": 1.0 - hard_kept / self.total,
            "budget": float(budget_term.detach()),
        }
        return budget_term, logs

    def decay_exempt(self, model: nn.Module) -> list[nn.Parameter]:
        if self.masked_decay:
            return []
        return [getattr(model.parametrizations, name).original for name in self.masks]

    def on_train_end(self, model: nn.Module) -> None:
        assert isinstance(model, AttentionGCN)
        if len(self.budgets) == 1:
            project_top_k(model, self.budgets[0].keep)
            return
        detach(model, bake=True)
        weights = model.prunable()
        masks: dict[str, Tensor] = {}
        for budget in self.budgets:
            scores = {name: weights[name].abs() for name in budget.names}
            masks.update(topk_masks(scores, budget.keep))
        attach(model, {name: FixedMask(mask) for name, mask in masks.items()})


class RelaxedMP(PruningMethod):
    """Relaxed magnitude pruning trained on Eq. 1 (the paper's MP); see the module doc."""

    name = "mp"
    label = "MP"
    options_class = MPOptions
    tc_by_design = False
    style = ("#E69F00", "o")

    def prune(self, job: Job) -> PruneResult:
        gcn, opts = job.model, job.options
        weights = gcn.prunable()
        groups = [PRUNABLE] if opts.scope == "global" else [(name,) for name in PRUNABLE]
        budgets: list[_Budget] = []
        details: dict[str, float] = {}
        for names in groups:
            size = sum(weights[name].numel() for name in names)
            keep = job.keep if opts.scope == "global" else keep_count(size, job.rate)
            q = magnitude_threshold({name: weights[name] for name in names}, keep)
            t0 = initial_temperature(self.name, q, keep, opts.t0_scale)
            budgets.append(_Budget(names, keep, size, t0, t0 * opts.t_end_ratio))
            suffix = "" if opts.scope == "global" else f"_{names[0]}"
            details |= {f"t0{suffix}": t0, f"t_end{suffix}": t0 * opts.t_end_ratio,
                        f"initial_threshold{suffix}": q}  # fmt: skip
        masks = {
            name: RelaxedMagnitudeMask(budget.t0) for budget in budgets for name in budget.names
        }
        attach(gcn, masks)
        hook = _RelaxedMPHook(
            masks, budgets, gcn.num_weights(), opts.budget_weight, opts.band_steps,
            opts.masked_decay,
        )  # fmt: skip
        trained = job.train(hook)
        return job.result(trained, details)


class OneShotMP(TwoPhaseMethod):
    """Train dense, keep the top magnitudes (globally or per tensor), retrain the kept weights."""

    name = "mp-oneshot"
    label = "MP (one-shot)"
    options_class = OneShotOptions
    tc_by_design = False
    style = ("#D55E00", "v")
    in_grids = False  # a reference, not a row of the paper's table

    def select(self, job: Job) -> dict[str, float]:
        if job.options.scope == "global":
            project_top_k(job.model, job.keep)
            return {}
        detach(job.model, bake=True)
        magnitudes = {name: w.abs() for name, w in job.model.prunable().items()}
        masks = scoped_topk_masks(magnitudes, job.rate, job.options.scope)
        attach(job.model, {name: FixedMask(mask) for name, mask in masks.items()})
        return {}
