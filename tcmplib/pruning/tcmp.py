"""TCMP: magnitude pruning trained with accessibility networks (Sections 4.2-4.3, Eq. 3).

Every weight tensor of :data:`tcmplib.model.PRUNABLE` is used as::

    W * psi(W) * (phi_r phi_l^T)                                        (Eq. 3, first term)

where ``psi(w) = 2 sigmoid(w^2 / T) - 1`` is the relaxed magnitude mask of MP, ``phi_r``
the accessibility of the tensor's source units (a forward pass over the masks from
all-ones inputs) and ``phi_l`` the co-accessibility of its target units (a backward pass
from all-ones classes). The paper trains the network on::

    CE + lambda (sum_l phi_r^T psi(W) phi_l - c)^2
       + eta sum_l [1^T psi(W) 1 - phi_r^T psi(W) phi_l]                 (Eq. 3)

with ``c`` the budget ``round((1 - rate) N)`` (``N`` weights in all), ``lambda = 10`` and
``eta = 1``. We train on::

    CE + lambda ((K_ac - c) / c)^2 + eta (S - S_ac) / N

with ``S = sum psi(W)``, ``S_ac = sum phi_r^T psi(W) phi_l`` (the soft mass on connections
between accessible and co-accessible units) and ``K_ac = sum phi_r^T h(psi(W) - 1/2) phi_l``
(the number of kept A-C connections). The weights are shared by the classifier and both
accessibility networks and trained jointly.

Choices the paper leaves open, or that we changed (ours)
--------------------------------------------------------
* **The budget counts kept connections, relative to the budget.** The paper's sums are of
  the order of 10^6, so its budget term needs a rescaling, which it does not give. We tried
  the soft mass ``S_ac`` divided by ``N``, as relaxed MP (:mod:`tcmplib.pruning.mp`) does:
  on the paper's GCN at 95% the term stayed far from the target for a whole book-profile
  run (per weight its gradient is ``1/N`` of the gap, negligible next to the cross entropy
  under Adam), and the final projection then had to change most of the mask. Divided by
  ``c`` instead, the soft mass overshoots the other way: the soft tails of the ~1.9M
  pruned ``fc`` weights (``psi`` of a few per cent each) alone exceed the budget, so the
  term pushed every ``fc`` weight down, the kept ones too, and the network lost all its
  ``fc`` connections within a few epochs. Counting kept A-C connections crisply (the
  forward value is the exact count; the gradient is the STE's) and dividing the gap by
  ``c`` avoids both: the term is a relative error of order 1, it vanishes at the budget
  whatever the soft tails, and it reaches the weights near the threshold. The
  consistency term keeps the paper's soft form, divided by ``N`` (the share of soft mass
  off A-C connections).
* **What "kept" means inside phi.** The paper writes ``phi_r^l = h(psi(W_(l-1))^T
  phi_r^(l-1))`` with the Heaviside ``h``. As ``psi(w) > 0`` for every nonzero weight,
  ``h`` at 0 would find every unit accessible. We apply the step twice, both times with the
  straight-through estimator of :mod:`tcmplib.pruning.ste`: first ``kept = h(psi(W) - 1/2)``
  (a weight counts as kept when ``psi >= 1/2``, i.e. ``w^2 > T ln 3``: the crisp mask of
  the current temperature), then ``phi = h(kept^T phi - 1/2)`` through the exact unit graph
  of :mod:`tcmplib.topology` (attention fan-out and query/key rule included). Forward, the
  shift by 1/2 changes nothing (the sums count kept edges, integers); backward, it centres
  the sigmoid surrogate between "no kept edge" and "one kept edge". So in the forward pass
  ``phi_r``, ``phi_l`` are *exactly* the accessibility and co-accessibility of the current
  crisp mask, and the gradient still reaches every weight through ``psi``.
* **Surrogate width.** ``tau = 0.5`` (``TCMPOptions.ste_tau``) for both steps: the
  surrogate gradient is 0.5 at the threshold and 0.39 half a unit away, so weights just
  below or above ``psi = 1/2`` and units with zero or one kept edge all receive gradient.
* **Temperature.** Linear, as in relaxed MP, from ``T0`` to ``T0 / 10`` at the last epoch.
  With ``T0 / 100`` we measured, on the paper's
  GCN at 95% and the book profile, a learned mask that tracked the budget to about 1% for
  145 of the 150 epochs and then exploded to nearly dense: the pruned weights sit just
  below the threshold ``sqrt(T ln 3)``, and in the last epochs a linear schedule to
  ``T0 / 100`` shrinks ``T`` by up to 40% per epoch, faster than the weights can follow.
  To ``T0 / 10`` the last step is 6%.
* **Step ceiling.** As in relaxed MP (:mod:`tcmplib.pruning.mp`), the learning
  rate is capped at ``sqrt(T ln 3) / band_steps`` (default 2), so that no Adam step is
  wider than half the band in which a weight counts as pruned. TCMP needs it more than MP:
  its ``T0`` is tied to the greedy threshold, which at high rates is set by the small
  ``fc`` weights. Without the cap (the code of ``results/fpha-paper-superseded``), at
  paper scale on FPHA at 99% (seed 0) the learned mask met its budget (98.99-99.00%)
  from epoch 150 to epoch 2,000 with the rate at its 1e-2 cap, while the band's half-width
  ``sqrt(T ln 3)`` fell from 0.0118 to 0.0068; between epochs 2,000 and 2,050 it lost it
  (1.84% pruned), and the final projection without retraining left 16.27% class-averaged
  accuracy (chapter 8 shows the history).
* **Initial temperature.** ``T0 = q^2 / ln 3`` puts ``psi(q)`` at exactly 1/2, where ``q``
  is the smallest initial magnitude kept by the greedy TC selection of ``c`` weights
  (:func:`consistent_threshold`): the first crisp mask is then the smallest magnitude mask
  that contains a consistent network of the budget's size. When the magnitude mask at the
  target rate is already consistent, ``q`` is its threshold and the first crisp mask is the
  MP mask. When it is not (99% on the freshly initialised GCN: the attention and
  convolution weights outnumber the budget and are an order of magnitude larger than the
  ``fc`` weights, so MP keeps no ``fc`` weight), starting from the MP mask means starting
  from a network that computes nothing; we measured that TCMP does not recover from it,
  because the cross entropy has no gradient and the budget term, through Adam, then grows
  all ``fc`` weights at the same speed until they cross the threshold together.

How phi is computed once per step
---------------------------------
``phi`` of one tensor depends on the masks of all tensors, so the four parametrizations
(:class:`AccessibilityMask`, one per tensor, registered with ``torch.nn.utils.parametrize``)
share one :class:`AccessibilityNetworks` object. It evaluates ``psi``, the STE masks and
``phi`` for the whole network the first time any weight is read in a step and caches the
result for the other tensors and for the loss terms of the same step, so the network and
the loss see the same tensors and the gradients of Eq. 4 (through ``g``, ``phi_r`` and
``phi_l`` at once) come from one graph. The cache is dropped at every forward call of the
model (a forward pre-hook), when the temperature changes, when the gradient mode changes
and when a weight changes in place (the optimizer step), so it is never stale.

Final crisp network
-------------------
At the end the learned mask is ``kept * phi_r phi_l^T`` at the final temperature: the
crisp mask without its non-A-C connections, topologically consistent by construction.
If its rate is within ``tolerance`` (0.5 percentage points) of the target it is used as
is; otherwise (short runs, where the budget term had no time to act) it is projected onto
the budget with the greedy TC selection of :mod:`tcmplib.pruning.greedy`, ranking the
weights by what the network computed with, ``|W psi(W) phi_r phi_l^T|``. The weights
keep the values the network computed with (``W psi(W)``; a weight the projection adds back
keeps its raw value, since its ``psi`` may have rounded to 0). The report's ``details``
give the learned rate and % A-C before the projection and whether it was needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from tcmplib.model import PRUNABLE, AttentionGCN, GCNConfig
from tcmplib.pruning.base import Job, PruneResult, PruningMethod
from tcmplib.pruning.greedy import greedy_tc_masks
from tcmplib.pruning.masks import FixedMask, attach, band_lr_ceiling, detach, psi
from tcmplib.pruning.mp import check_positive, initial_temperature, linear_temperature
from tcmplib.pruning.ste import heaviside_ste
from tcmplib.topology import Reachability, analyze, reachability
from tcmplib.train import NoOpHook

__all__ = [
    "TCMPOptions",
    "AccessibilityState",
    "AccessibilityNetworks",
    "AccessibilityMask",
    "TCMP",
    "accessibility_gates",
    "consistent_threshold",
    "half_step",
]


@dataclass(frozen=True)
class TCMPOptions:
    """Hyperparameters of TCMP (Eq. 3); see the module doc for the reasoning."""

    budget_weight: float = 10.0  # lambda, the paper's value (on the relative count gap)
    consistency_weight: float = 1.0  # eta, the paper's value (on the soft mass / N)
    ste_tau: float = 0.5  # width of the sigmoid surrogate of the Heaviside steps
    # T0 = t0_scale * q^2, q = consistent_threshold() of the initial weights; the default
    # 1 / ln 3 puts psi(q) at exactly 1/2
    t0_scale: float = 1.0 / math.log(3.0)
    t_end_ratio: float = 0.1  # T_end = T0 * t_end_ratio, reached at the last epoch
    tolerance: float = 0.005  # learned rate within this of the target: no projection
    band_steps: float = 2.0  # learning rate <= sqrt(T ln 3) / band_steps

    def __post_init__(self) -> None:
        for name in (
            "budget_weight",
            "consistency_weight",
            "ste_tau",
            "t0_scale",
            "tolerance",
            "band_steps",
        ):
            check_positive("TCMPOptions", name, getattr(self, name))
        check_positive("TCMPOptions", "t_end_ratio", self.t_end_ratio)
        if self.t_end_ratio > 1:
            raise ValueError(
                f"TCMPOptions.t_end_ratio: expected a number in (0, 1] (T only decreases), "
                f"got {self.t_end_ratio!r}"
            )
        if self.tolerance >= 1:
            raise ValueError(
                f"TCMPOptions.tolerance: expected a rate difference in (0, 1), "
                f"got {self.tolerance!r}"
            )


def half_step(tau: float) -> Callable[[Tensor], Tensor]:
    """``x -> h(x - 1/2)`` with the straight-through sigmoid gradient of width ``tau``.

    On counts of kept edges (integers) the forward pass is the exact Heaviside of
    :func:`tcmplib.topology.heaviside`; the shift centres the surrogate between 0 and 1.
    """

    def step(x: Tensor) -> Tensor:
        return heaviside_ste(x - 0.5, tau)

    return step


def accessibility_gates(
    reach: Reachability, kept: Mapping[str, Tensor], step: Callable[[Tensor], Tensor]
) -> dict[str, Tensor]:
    """``phi_r phi_l^T`` per weight tensor of the attention GCN, from a reachability pass.

    ``reach.effective`` is ``kept * gate``; Eq. 3 also needs the gate where ``kept`` is 0
    (the soft mass ``psi`` of pruned connections between A-C units), so it is rebuilt here
    from the unit vectors: source accessibility times target co-accessibility for ``wv``
    and ``fc``; for Q/K (always accessible) the head's liveness times the partner column
    (the rule of :mod:`tcmplib.topology`, with the same ``step``).
    """
    acc, coacc = reach.accessible, reach.coaccessible
    live = reach.live_heads
    assert live is not None, "accessibility_gates: expected the attention GCN's reachability"
    query_columns = step(kept["wq"].sum(dim=1))  # (heads, qk_dim)
    key_columns = step(kept["wk"].sum(dim=1))
    head = live.view(-1, 1, 1)
    value_gate = acc["input"].unsqueeze(1) * coacc["channels"].unsqueeze(0)
    if kept["wv"].dim() == 3:  # per-head filters: channel h * C + c is column c of head h
        heads, d_in, channels = kept["wv"].shape
        value_gate = value_gate.reshape(d_in, heads, channels).permute(1, 0, 2)
    return {
        "wq": head * key_columns.unsqueeze(1),
        "wk": head * query_columns.unsqueeze(1),
        "wv": value_gate,
        "fc": acc["fc_inputs"].unsqueeze(1) * coacc["classes"].unsqueeze(0),
    }


@dataclass(frozen=True)
class AccessibilityState:
    """One evaluation of the accessibility networks, per weight tensor.

    ``psi`` the soft masks, ``kept`` their STE crisp version ``h(psi - 1/2)``, ``gate``
    ``phi_r phi_l^T``; the network computes with ``W * psi * gate``.
    """

    psi: dict[str, Tensor]
    kept: dict[str, Tensor]
    gate: dict[str, Tensor]

    def factor(self, name: str) -> Tensor:
        return self.psi[name] * self.gate[name]

    def soft_masses(self) -> tuple[Tensor, Tensor]:
        """``S`` and ``S_ac``: the soft mass of all weights, and of those on A-C connections.

        Eq. 3's consistency term is ``(S - S_ac) / N``, the soft mass off A-C connections.
        """
        soft = sum(p.sum() for p in self.psi.values())
        soft_ac = sum(self.factor(name).sum() for name in PRUNABLE)
        assert isinstance(soft, Tensor) and isinstance(soft_ac, Tensor)
        return soft, soft_ac


class AccessibilityNetworks:
    """``psi``, ``phi_r`` and ``phi_l`` of the whole network, computed once per step.

    Holds references to the four trainable tensors (not to the model, so module traversal
    sees no cycle); see the module doc for when the cached evaluation is recomputed.
    """

    def __init__(self, config: GCNConfig, temperature: float, tau: float) -> None:
        self.config = config
        self.tau = tau
        self._temperature = temperature
        self._weights: dict[str, Tensor] = {}
        self._generation = 0
        self._key: tuple[object, ...] | None = None
        self._state: AccessibilityState | None = None

    def bind(self, weights: Mapping[str, Tensor]) -> None:
        """Attach the trainable tensors (the parametrizations' originals)."""
        self._weights = {name: weights[name] for name in PRUNABLE}
        self._key = None

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, value: float) -> None:
        self._temperature = float(value)

    def invalidate(self, *_: object) -> None:
        """Drop the cache; registered as a forward pre-hook of the model."""
        self._generation += 1

    def evaluate(self) -> AccessibilityState:
        if not self._weights:
            raise RuntimeError("AccessibilityNetworks: bind() the model's weights first")
        key = (
            self._generation,
            self._temperature,
            torch.is_grad_enabled(),
            tuple(w._version for w in self._weights.values()),
        )
        if self._state is None or key != self._key:
            self._state = self._compute()
            self._key = key
        return self._state

    def _compute(self) -> AccessibilityState:
        step = half_step(self.tau)
        soft = {name: psi(w, self._temperature) for name, w in self._weights.items()}
        kept = {name: step(p) for name, p in soft.items()}  # h(psi - 1/2)
        reach = reachability(kept, step, self.config)
        return AccessibilityState(psi=soft, kept=kept, gate=accessibility_gates(reach, kept, step))


class AccessibilityMask(nn.Module):
    """Parametrization ``W -> W * psi(W) * phi_r phi_l^T`` reading the shared evaluation."""

    def __init__(self, name: str, networks: AccessibilityNetworks) -> None:
        super().__init__()
        if name not in PRUNABLE:
            raise ValueError(f"AccessibilityMask: name: expected one of {PRUNABLE}, got {name!r}")
        self.name = name
        self.networks = networks

    def forward(self, w: Tensor) -> Tensor:
        return w * self.networks.evaluate().factor(self.name)


@dataclass(eq=False)
class _TCMPHook(NoOpHook):
    """Anneals T, adds the two pruning terms of Eq. 3, extracts the crisp network at the end."""

    networks: AccessibilityNetworks
    keep: int
    total: int
    t0: float
    options: TCMPOptions
    t_end: float = field(init=False)
    details: dict[str, float] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.t_end = self.t0 * self.options.t_end_ratio

    def on_epoch_start(self, model: nn.Module, epoch: int, epochs: int) -> None:
        self.networks.temperature = linear_temperature(epoch, epochs, self.t0, self.t_end)

    def lr_ceiling(self, epoch: int, epochs: int) -> float:
        temperature = linear_temperature(epoch, epochs, self.t0, self.t_end)
        return band_lr_ceiling(temperature, self.options.band_steps)

    def extra_loss(self, model: nn.Module) -> tuple[Tensor, dict[str, float]]:
        state = self.networks.evaluate()
        soft, soft_ac = state.soft_masses()
        crisp_ac = sum((state.kept[name] * state.gate[name]).sum() for name in PRUNABLE)
        assert isinstance(crisp_ac, Tensor)
        budget = self.options.budget_weight * ((crisp_ac - self.keep) / self.keep).square()
        consistency = self.options.consistency_weight * (soft - soft_ac) / self.total
        with torch.no_grad():
            kept = sum(int(k.sum()) for k in state.kept.values())
        effective = round(crisp_ac.item())  # a sum of 0/1 products: exact in float32 here
        logs = {
            "temperature": self.networks.temperature,
            "budget": budget.item(),
            "consistency": consistency.item(),
            "soft_rate": 1.0 - soft.item() / self.total,
            "soft_ac_rate": 1.0 - soft_ac.item() / self.total,
            "hard_rate": 1.0 - kept / self.total,
            "learned_rate": 1.0 - effective / self.total,
            "hard_percent_ac": 100.0 * effective / kept if kept else math.nan,
        }
        return budget + consistency, logs

    def on_train_end(self, model: nn.Module) -> None:
        assert isinstance(model, AttentionGCN)
        with torch.no_grad():
            state = self.networks.evaluate()
            weights = {name: w.detach() for name, w in model.prunable().items()}
            crisp = {name: k > 0 for name, k in state.kept.items()}
            topology = analyze(crisp, model.config)
            learned = topology.effective_masks
            learned_rate = 1.0 - topology.total_effective / self.total
            target_rate = 1.0 - self.keep / self.total
            projected = abs(learned_rate - target_rate) > self.options.tolerance
            if projected:
                scores = {name: (w * state.factor(name)).abs() for name, w in weights.items()}
                masks, _ = greedy_tc_masks(scores, self.keep, model.config)
            else:
                masks = {name: m.cpu() for name, m in learned.items()}
            values = {
                name: torch.where(crisp[name], w * state.psi[name], w)
                for name, w in weights.items()
            }
        changed = sum(int((masks[n] != learned[n].cpu()).sum()) for n in PRUNABLE)
        detach(model, bake=False)
        with torch.no_grad():
            for name, w in model.prunable().items():
                w.copy_(values[name])
        device = next(model.parameters()).device
        attach(model, {name: FixedMask(masks[name].to(device)) for name in PRUNABLE})
        self.details = {
            "t0": self.t0,
            "t_end": self.t_end,
            "learned_rate": learned_rate,
            "learned_kept": float(topology.total_effective),
            "crisp_rate": topology.direct_sparsity,
            "crisp_percent_ac": topology.percent_ac,
            "projected": float(projected),
            "projection_changed_edges": float(changed),
        }


def consistent_threshold(model: AttentionGCN, keep: int) -> float:
    """Smallest magnitude kept by the greedy TC selection of ``keep`` weights of ``model``.

    Every weight at least this large, kept together, contains a topologically consistent
    network of ``keep`` weights; when the magnitude mask is itself consistent this is the
    ``keep``-th largest magnitude (the MP threshold).
    """
    magnitudes = {name: w.detach().abs() for name, w in model.prunable().items()}
    masks, _ = greedy_tc_masks(magnitudes, keep, model.config)
    return float(min(magnitudes[n].cpu()[masks[n]].min() for n in PRUNABLE if masks[n].any()))


class TCMP(PruningMethod):
    """Topologically consistent magnitude pruning trained on Eq. 3; see the module doc."""

    name = "tcmp"
    label = "TCMP (our)"
    options_class = TCMPOptions
    tc_by_design = True
    style = ("#0072B2", "D")

    def prune(self, job: Job) -> PruneResult:
        gcn, opts, keep, rate = job.model, job.options, job.keep, job.rate
        total = gcn.num_weights()
        if keep < 2:
            raise ValueError(
                f"rate: {rate} keeps {keep} of {total} weights; a topologically consistent "
                "network needs at least 2 (one wv and one fc weight)"
            )
        q = consistent_threshold(gcn, keep)
        t0 = initial_temperature(self.name, q, keep, opts.t0_scale)
        networks = AccessibilityNetworks(gcn.config, t0, opts.ste_tau)
        # Registering a parametrization evaluates it once, so the weights are bound first;
        # rebinding afterwards makes sure the cache reads the parametrizations' originals.
        networks.bind(gcn.prunable())
        attach(gcn, {name: AccessibilityMask(name, networks) for name in PRUNABLE})
        networks.bind(gcn.prunable())
        hook = _TCMPHook(networks, keep, total, t0, opts)
        handle = gcn.register_forward_pre_hook(networks.invalidate)
        try:
            trained = job.train(hook)
        finally:
            handle.remove()
        return job.result(trained, {**hook.details, "initial_threshold": q})
