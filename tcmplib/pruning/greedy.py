"""Greedy topologically consistent magnitude pruning (the paper's "TCMP (greedy)" rows).

The ICIP 2022 method ([35] in the paper) is known to us from its abstract only: it "parses
and selects subnetworks with the highest magnitudes while guaranteeing their topological
consistency", keeping only accessible and co-accessible (A-C) connections. The selection
rule below is therefore ours. It follows that sentence literally: magnitude decides, and
whenever the largest weights would leave a connection dangling, the cheapest
highest-magnitude completion is added instead of dropping the connection.

Selection (:func:`greedy_tc_masks`), for a budget of ``c`` weights
------------------------------------------------------------------
The unit graph of the attention GCN (:mod:`tcmplib.topology`) makes consistency a matter of
a few unit-level conditions: a ``wv`` edge into channel ``x`` is A-C iff some kept ``fc``
edge leaves an input ``(n, h, x)``; an ``fc`` edge from ``(n, h, x)`` is A-C iff some kept
``wv`` edge enters ``x``; a Q (K) edge of head ``h`` and column ``j`` is A-C iff head ``h``
is live and column ``j`` of K (Q) keeps an entry. Hence:

1. **Magnitude.** Start from the global top-``c`` of ``|w|`` (exactly the MP mask).
2. **Best-path completion.** Every dangling kept edge gets the single highest-magnitude
   edge that makes it A-C: a channel with kept inputs but no kept output gets its largest
   ``fc`` edge (and conversely its largest ``wv`` edge); a head with kept Q/K but no kept
   ``fc`` edge gets its largest ``fc`` edge from an active channel (or, when no channel is
   active yet, its best two-edge path input -> channel -> class); a Q column without its
   K partner gets the partner's largest entry (and conversely). Each completion is the
   best path through the dangling edge, so the mask is now topologically consistent with
   at most ``2 C + H + 2 H q`` (528 for the paper's GCN) edges over budget.
3. **Trim to the budget.** Every active unit keeps its largest supporting edge (its
   *protected* edge); removing any set of unprotected edges keeps the mask consistent,
   so the excess is removed from the smallest unprotected edges.
4. **Refill (MP + repair).** When the completions outnumber the unprotected edges (tiny
   networks at extreme rates), step 1 is redone with fewer top edges (down to none, in
   which case the seed is the single best two-edge path input -> channel -> class), and
   the remaining budget is filled with the largest *admissible* edges: those whose source
   is accessible and whose target is co-accessible in the current mask, which keeps it
   consistent.

With bilinear attention (``GCNConfig.attention == "bilinear"``) a head carries signal only
while a Q column and its K partner both keep an entry (:mod:`tcmplib.topology`): the
completion also gives every head with kept ``fc`` edges its best Q/K pair, the seed path
includes that pair (4 edges), and refilling admits ``fc`` edges of open heads only.

The result keeps exactly ``c`` weights (ties broken by position, so reruns agree), all
A-C; it takes a few seconds on the full GCN (a few sorts and reductions over 2M scores).
Why completion rather than the "MP + repair" variant that drops dangling edges: at high
rates MP keeps thousands of large attention and ``wv`` weights whose channels lost every
``fc`` edge; dropping them throws away the largest magnitudes of the network, while one
``fc`` edge per channel makes them count.

Method (``"greedy-tc"``)
------------------------
Train the dense network for ``dense_fraction`` of the profile's epochs, select the mask
above on ``|W|``, then retrain the kept weights under a :class:`FixedMask` for the rest of
the epochs (the two-phase template :class:`~tcmplib.pruning.base.TwoPhaseMethod`, shared
with one-shot MP). Selection and weight training are decoupled, as in classic magnitude pruning;
whether the ICIP method retrains is not in its abstract, and we retrain so that it gets
the same number of epochs as every other method. The
report's ``details`` give the dense and just-pruned accuracies, the % A-C that plain MP
would have had on the same weights, and how many edges the completion added and trimmed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from tcmplib.model import PRUNABLE, GCNConfig
from tcmplib.pruning.base import Job, TwoPhaseMethod, TwoPhaseOptions
from tcmplib.pruning.masks import FixedMask, attach, topk_masks
from tcmplib.topology import analyze, value_tensor, value_view

__all__ = ["GreedyOptions", "GreedyStats", "GreedyTC", "greedy_tc_masks"]


#: Greedy TC's hyperparameters: how the profile's epochs are split (as one-shot MP).
GreedyOptions = TwoPhaseOptions


@dataclass(frozen=True)
class GreedyStats:
    """What the selection did, for reports: edges added by completion, trimmed, refilled."""

    completed: int  # edges added in step 2 (last pass)
    trimmed: int  # unprotected edges removed in step 3
    refilled: int  # admissible edges added in step 4
    start_budget: int  # the top-k size step 1 finally used (the budget unless lowered)


class _Selection:
    """Boolean masks of the attention GCN with views that expose its unit structure."""

    def __init__(self, scores: Mapping[str, Tensor], config: GCNConfig) -> None:
        cfg = config
        self.config = cfg
        self.scores = {name: scores[name] for name in PRUNABLE}
        # fc rows are (node, head, channel): a 4-D view makes channels and heads axes.
        self.fc_view = (cfg.nodes, cfg.heads, cfg.channels, cfg.classes)
        self.sf = self.scores["fc"].view(self.fc_view)
        self.kept: dict[str, Tensor] = {}

    def load(self, masks: Mapping[str, Tensor]) -> None:
        self.kept = {name: masks[name].clone() for name in PRUNABLE}

    @property
    def mf(self) -> Tensor:
        return self.kept["fc"].view(self.fc_view)

    def count(self) -> int:
        return sum(int(m.sum()) for m in self.kept.values())

    # ------------------------------------------------------------- unit-level facts
    def channels_in(self) -> Tensor:
        return self.kept["wv"].any(dim=0)

    def channels_out(self) -> Tensor:
        return self.mf.any(dim=3).any(dim=1).any(dim=0)

    def heads_fc(self) -> Tensor:
        return self.mf.any(dim=3).any(dim=2).any(dim=0)

    def heads_qk(self) -> Tensor:
        return self.kept["wq"].flatten(1).any(dim=1) | self.kept["wk"].flatten(1).any(dim=1)

    def heads_open(self) -> Tensor:
        """Heads whose attention can carry signal: all of them with softmax attention; with
        bilinear attention, those where a Q column and its K partner both keep an entry."""
        if not self.config.silenceable:
            return torch.ones(self.config.heads, dtype=torch.bool)
        return (self.kept["wq"].any(dim=1) & self.kept["wk"].any(dim=1)).any(dim=1)

    def open_head(self, h: int) -> None:
        """Bilinear attention: keep the best Q/K pair of head ``h`` (largest sum of the two
        entries' scores, one column), so that its attention is not 0."""
        sq, sk = self.scores["wq"][h], self.scores["wk"][h]  # (d_in, qk_dim)
        j = int((sq.max(dim=0).values + sk.max(dim=0).values).argmax())
        self.kept["wq"][h, int(sq[:, j].argmax()), j] = True
        self.kept["wk"][h, int(sk[:, j].argmax()), j] = True

    # ------------------------------------------------------------- step 2: completion
    def complete(self) -> int:
        """Add the best completing edge of every dangling unit; returns how many were added."""
        before = self.count()
        sv, sf = self.scores["wv"], self.sf
        fc_in, fc_out = self.channels_in(), self.channels_out()
        for c in torch.nonzero(fc_in & ~fc_out).flatten().tolist():
            n, h, k = _argmax(sf[:, :, c, :])
            self.mf[n, h, c, k] = True
        for c in torch.nonzero(fc_out & ~fc_in).flatten().tolist():
            self.kept["wv"][int(sv[:, c].argmax()), c] = True

        needy = self.heads_qk() & ~self.heads_fc()
        if bool(needy.any()) and not bool(self.channels_in().any()):
            self.best_path(int(torch.nonzero(needy)[0]))
            needy = self.heads_qk() & ~self.heads_fc()
        if bool(needy.any()):
            active = self.channels_in()  # == channels_out() after the channel completion
            masked = sf.masked_fill(~active.view(1, 1, -1, 1), float("-inf"))
            for h in torch.nonzero(needy).flatten().tolist():
                if bool(torch.isinf(masked[:, h].max())):  # per-head filters: none active
                    self.best_path(h)
                    continue
                n, c, k = _argmax(masked[:, h])
                self.mf[n, h, c, k] = True

        # Bilinear attention: a head with dense-layer edges must be open to carry them.
        for h in torch.nonzero(self.heads_fc() & ~self.heads_open()).flatten().tolist():
            self.open_head(h)
        q_cols = self.kept["wq"].any(dim=1)  # (heads, qk_dim)
        k_cols = self.kept["wk"].any(dim=1)
        for mine, partner, partner_cols in (("wq", "wk", k_cols), ("wk", "wq", q_cols)):
            own_cols = self.kept[mine].any(dim=1)
            for h, j in torch.nonzero(own_cols & ~partner_cols).tolist():
                self.kept[partner][h, int(self.scores[partner][h, :, j].argmax()), j] = True
        return self.count() - before

    def best_path(self, head: int | None = None) -> int:
        """Add the best two-edge path input -> channel -> class (through ``head`` if given).

        "Best" is the largest sum of the two scores. Returns the number of edges added.
        """
        before = self.count()
        sv, sf = self.scores["wv"], self.sf
        heads = sf if head is None else sf[:, head : head + 1]
        per_channel = sv.max(dim=0).values + heads.amax(dim=(0, 1, 3))  # (channels,)
        c = int(per_channel.argmax())
        self.kept["wv"][int(sv[:, c].argmax()), c] = True
        n, h, k = _argmax(heads[:, :, c, :])
        h = h if head is None else head
        self.mf[n, h, c, k] = True
        if not bool(self.heads_open()[h]):  # bilinear attention: and the head's best Q/K pair
            self.open_head(h)
        return self.count() - before

    # ------------------------------------------------------------- step 3: trim
    def protected(self) -> dict[str, Tensor]:
        """The largest kept supporting edge of every active unit (see the module doc)."""
        sv, sf = self.scores["wv"], self.sf
        prot = {name: torch.zeros_like(m) for name, m in self.kept.items()}
        neg = float("-inf")
        active = self.channels_in() & self.channels_out()
        kept_v = sv.masked_fill(~self.kept["wv"], neg)
        for c in torch.nonzero(active).flatten().tolist():
            prot["wv"][int(kept_v[:, c].argmax()), c] = True
        kept_f = sf.masked_fill(~self.mf, neg)
        pf = prot["fc"].view(self.fc_view)
        for c in torch.nonzero(active).flatten().tolist():
            n, h, k = _argmax(kept_f[:, :, c, :])
            pf[n, h, c, k] = True
        for h in torch.nonzero(self.heads_qk()).flatten().tolist():
            n, c, k = _argmax(kept_f[:, h])
            pf[n, h, c, k] = True
        for name in ("wq", "wk"):
            kept_s = self.scores[name].masked_fill(~self.kept[name], neg)
            for h, j in torch.nonzero(self.kept[name].any(dim=1)).tolist():
                prot[name][h, int(kept_s[h, :, j].argmax()), j] = True
        return prot

    def trim(self, excess: int, protected: Mapping[str, Tensor]) -> None:
        """Remove the ``excess`` smallest-score kept edges that are not protected."""
        removable = {
            name: torch.where(m & ~protected[name], -self.scores[name], float("-inf"))
            for name, m in self.kept.items()
        }
        drop = topk_masks(removable, excess)
        self.kept = {name: m & ~drop[name] for name, m in self.kept.items()}

    # ------------------------------------------------------------- step 4: refill
    def admissible(self) -> dict[str, Tensor]:
        """Unkept edges whose addition keeps the mask consistent (source A, target C)."""
        cfg = self.config
        active = self.channels_in() & self.channels_out()
        live = self.heads_fc()
        pairs = self.kept["wq"].any(dim=1) & self.kept["wk"].any(dim=1)  # (heads, qk_dim)
        qk_ok = (live.view(-1, 1) & pairs).unsqueeze(1).expand(cfg.heads, cfg.d_in, cfg.qk_dim)
        open_heads = self.heads_open().view(1, -1, 1, 1)
        fc_ok = (active.view(1, 1, -1, 1) & open_heads).expand(self.fc_view)
        fc_ok = fc_ok.reshape(cfg.fc_in, cfg.classes)
        return {
            "wq": qk_ok & ~self.kept["wq"],
            "wk": qk_ok & ~self.kept["wk"],
            "wv": active.view(1, -1).expand(cfg.d_in, cfg.channels) & ~self.kept["wv"],
            "fc": fc_ok & ~self.kept["fc"],
        }

    def refill(self, deficit: int) -> None:
        # Edges scored -inf do not exist (per-head filters, see _shared_embedding).
        allowed = {
            name: m & torch.isfinite(self.scores[name]) for name, m in self.admissible().items()
        }
        available = sum(int(m.sum()) for m in allowed.values())
        if available < deficit:
            raise ValueError(
                f"greedy_tc_masks: keep: the consistent sub-network grown from the largest "
                f"weights has room for {self.count() + available} weights, fewer than "
                f"{self.count() + deficit}; use a lower rate for this network size"
            )
        candidates = {
            name: torch.where(allowed[name], self.scores[name], float("-inf")) for name in PRUNABLE
        }
        add = topk_masks(candidates, deficit)
        self.kept = {name: m | add[name] for name, m in self.kept.items()}


def _argmax(t: Tensor) -> tuple[int, ...]:
    """Coordinates of the largest entry of ``t`` (the first one in row-major order on ties)."""
    index = int(t.argmax())
    coords = []
    for size in reversed(t.shape):
        coords.append(index % size)
        index //= size
    return tuple(reversed(coords))


def _check_scores(
    scores: Mapping[str, Tensor], config: GCNConfig | None
) -> tuple[dict[str, Tensor], GCNConfig]:
    if set(scores) != set(PRUNABLE):
        raise ValueError(f"scores: expected the tensors {list(PRUNABLE)}, got {sorted(scores)}")
    if config is None:
        heads, d_in, qk_dim = scores["wq"].shape
        channels = scores["wv"].shape[-1]
        config = GCNConfig(
            nodes=scores["fc"].shape[0] // (heads * channels),
            d_in=d_in,
            heads=heads,
            qk_dim=qk_dim,
            channels=channels,
            classes=scores["fc"].shape[1],
            values="per-head" if scores["wv"].dim() == 3 else "shared",
        )
    checked: dict[str, Tensor] = {}
    for name, shape in config.weight_shapes().items():
        s = scores[name].detach().to("cpu", torch.float64)
        if tuple(s.shape) != shape:
            raise ValueError(f"scores[{name!r}]: expected shape {shape}, got {tuple(s.shape)}")
        if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
            raise ValueError(f"scores[{name!r}]: expected finite non-negative values (e.g. |w|)")
        checked[name] = s.contiguous()
    return checked, config


def _shared_embedding(
    scores: Mapping[str, Tensor], config: GCNConfig
) -> tuple[dict[str, Tensor], GCNConfig]:
    """Per-head filters as the shared-filter network with ``heads * channels`` channels in
    which the dense-layer input ``(n, h, u)`` exists only when channel ``u`` is head ``h``'s.

    The missing inputs are scored ``-inf``: never among the largest, never a completion, never
    admissible, so the selection keeps only edges of the per-head network and every path it
    checks is one of that network's paths.
    """
    shared = replace(config, values="shared", channels=config.value_columns)
    nodes, heads, channels, classes = config.nodes, config.heads, config.channels, config.classes
    fc = torch.full((nodes, heads, heads * channels, classes), float("-inf"), dtype=torch.float64)
    own = scores["fc"].view(nodes, heads, channels, classes)
    for h in range(heads):
        fc[:, h, h * channels : (h + 1) * channels] = own[:, h]
    embedded = {
        "wq": scores["wq"],
        "wk": scores["wk"],
        "wv": value_view(scores["wv"], config).contiguous(),
        "fc": fc.reshape(shared.fc_in, classes),
    }
    return embedded, shared


def _from_shared_embedding(masks: Mapping[str, Tensor], config: GCNConfig) -> dict[str, Tensor]:
    """The per-head network's masks back from :func:`_shared_embedding`'s."""
    nodes, heads, channels, classes = config.nodes, config.heads, config.channels, config.classes
    fc = masks["fc"].view(nodes, heads, heads * channels, classes)
    own = torch.stack([fc[:, h, h * channels : (h + 1) * channels] for h in range(heads)], dim=1)
    return {
        "wq": masks["wq"],
        "wk": masks["wk"],
        "wv": value_tensor(masks["wv"], config).contiguous(),
        "fc": own.reshape(config.fc_in, classes),
    }


def greedy_tc_masks(
    scores: Mapping[str, Tensor],
    keep: int,
    config: GCNConfig | None = None,
) -> tuple[dict[str, Tensor], GreedyStats]:
    """A topologically consistent mask of exactly ``keep`` weights, greedy by ``scores``.

    ``scores`` are non-negative per-weight scores of the attention GCN's tensors (``|w|``
    for magnitude pruning), keyed like :data:`tcmplib.model.PRUNABLE`; ``config`` defaults
    to the sizes read from their shapes. Returns boolean masks (on the CPU) and what each
    step did; see the module doc for the algorithm.
    """
    checked, original = _check_scores(scores, config)
    total = original.num_weights()
    # The smallest consistent network: one wv and one fc weight, and with bilinear attention
    # a Q/K pair that opens their head.
    least, what = (4, "one wv, one fc, one wq and one wk weight") if original.silenceable else (
        2, "one wv and one fc weight")  # fmt: skip
    if isinstance(keep, bool) or not isinstance(keep, int) or not least <= keep <= total:
        raise ValueError(
            f"keep: expected an integer in [{least}, {total}] (a consistent network needs at "
            f"least {what}), got {keep!r}"
        )
    cfg = original
    if original.per_head:
        checked, cfg = _shared_embedding(checked, original)
    sel = _Selection(checked, cfg)
    start = keep
    while True:
        sel.load(topk_masks(checked, start))
        completed = sel.complete() if start > 0 else sel.best_path()
        excess = sel.count() - keep
        if excess <= 0:
            trimmed = 0
            break
        protected = sel.protected()
        free = sum(int((m & ~protected[name]).sum()) for name, m in sel.kept.items())
        if free >= excess:
            sel.trim(excess, protected)
            trimmed = excess
            break
        # Fewer top edges, fewer completions. Strictly decreasing; at 0 the seed is the
        # single best path (2 edges, 4 with bilinear attention), which fits any allowed keep.
        start = max(0, start - (excess - free))
    deficit = keep - sel.count()
    if deficit > 0:
        sel.refill(deficit)
    stats = GreedyStats(
        completed=completed, trimmed=trimmed, refilled=max(deficit, 0), start_budget=start
    )
    masks = _from_shared_embedding(sel.kept, original) if original.per_head else sel.kept
    report = analyze(masks, original)
    if not report.is_topologically_consistent or report.total_kept != keep:
        raise RuntimeError(
            f"greedy_tc_masks: internal error: selected {report.total_kept} weights "
            f"({report.percent_ac:.2f}% A-C) for keep={keep}"
        )
    return masks, stats


class GreedyTC(TwoPhaseMethod):
    """Train dense, select a TC mask greedily by magnitude, retrain; see the module doc."""

    name = "greedy-tc"
    label = "TCMP (greedy)"
    tc_by_design = True
    style = ("#009E73", "s")

    def select(self, job: Job) -> dict[str, float]:
        model, keep = job.model, job.keep
        weights = model.prunable()
        magnitudes = {name: w.detach().abs() for name, w in weights.items()}
        mp_topology = analyze(topk_masks(magnitudes, keep), model.config)
        masks, stats = greedy_tc_masks(magnitudes, keep, model.config)
        device = next(iter(weights.values())).device
        attach(model, {name: FixedMask(mask.to(device)) for name, mask in masks.items()})
        return {
            "mp_percent_ac": mp_topology.percent_ac,
            "completed_edges": float(stats.completed),
            "trimmed_edges": float(stats.trimmed),
            "refilled_edges": float(stats.refilled),
        }
