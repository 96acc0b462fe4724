"""TCMP (Eq. 3) and greedy topologically consistent pruning.

Consistency is always checked with the exact topology analysis (:func:`tcmplib.topology.
analyze`), never with the methods' own bookkeeping.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import pytest
import torch

from tcmplib.model import PRUNABLE, GCNConfig
from tcmplib.profiles import get_profile
from tcmplib.pruning.base import PruneReport
from tcmplib.pruning.greedy import GreedyOptions, GreedyTC, greedy_tc_masks
from tcmplib.pruning.masks import attach, keep_count, topk_masks
from tcmplib.pruning.tcmp import TCMP, AccessibilityMask, AccessibilityNetworks, TCMPOptions
from tcmplib.topology import analyze, masks_from_model
from tcmplib.train import build_model

# Hand-worked networks: 2 nodes, 2 input features, 2 heads of width 1, 2 channels, 2 classes.
# fc rows are (node, head, channel): row = 4 n + 2 h + c.
TOY = GCNConfig(nodes=2, d_in=2, heads=2, qk_dim=1, channels=2, classes=2)
# Small enough for seconds-long runs, large enough that 99% keeps a few dozen weights.
SMALL = GCNConfig(nodes=6, d_in=8, heads=4, qk_dim=2, channels=16, classes=5)
SMALL_PER_HEAD = GCNConfig(
    nodes=6, d_in=8, heads=4, qk_dim=2, channels=4, classes=5, values="per-head"
)
SMALL_BILINEAR = replace(SMALL, attention="bilinear")
SMALL_PER_HEAD_BILINEAR = replace(SMALL_PER_HEAD, attention="bilinear")


def fc_row(n: int, h: int, c: int, config: GCNConfig = TOY) -> int:
    return (n * config.heads + h) * config.channels + c


def zeros(config: GCNConfig = TOY) -> dict[str, torch.Tensor]:
    return {name: torch.zeros(shape) for name, shape in config.weight_shapes().items()}


@dataclass(frozen=True)
class Split:
    """A learnable random data set in the trainer's format (labels from a linear rule)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def make_data(config: GCNConfig, n: int = 96, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * n, config.nodes, config.d_in, generator=g)
    rule = torch.randn(config.nodes * config.d_in, config.classes, generator=g)
    y = (x.reshape(2 * n, -1) @ rule).argmax(dim=1)
    return Split(x[:n], y[:n], x[n:], y[n:])


# --------------------------------------------------------------------------- phi_r / phi_l


def toy_kept() -> dict[str, torch.Tensor]:
    """wv: input 0 -> channel 0. fc: (n0,h0,c1) -> class 0 and (n1,h1,c0) -> class 1.
    Q: head 0 and head 1, column 0, input 0. K: head 0, column 0, input 1.

    By hand: channel 0 is accessible (wv edge), channel 1 is not; both are co-accessible.
    So fc rows of channel 0 are accessible, rows of channel 1 are not: the edge
    (n0,h0,c1) -> 0 is inconsistent, (n1,h1,c0) -> 1 is consistent, head 1 is live, head 0
    is not. Q/K of head 0: dead head. Q of head 1: its K column is empty. Effective: the
    wv edge and one fc edge, 2 of 6 kept.
    """
    kept = zeros()
    kept["wv"][0, 0] = 1
    kept["fc"][fc_row(0, 0, 1), 0] = 1
    kept["fc"][fc_row(1, 1, 0), 1] = 1
    kept["wq"][0, 0, 0] = 1
    kept["wq"][1, 0, 0] = 1
    kept["wk"][0, 1, 0] = 1
    return kept


def networks_for(kept: dict[str, torch.Tensor], config: GCNConfig = TOY) -> AccessibilityNetworks:
    """Accessibility networks whose crisp masks are ``kept``.

    At T = 1, w = 1.5 gives psi = 2 sigmoid(2.25) - 1 = 0.81 (kept) and w = 0.3 gives
    psi = 0.045 (pruned); neither saturates, so gradients flow through both.
    """
    nets = AccessibilityNetworks(config, temperature=1.0, tau=0.5)
    weights = {name: torch.where(m > 0, 1.5, 0.3).requires_grad_() for name, m in kept.items()}
    nets.bind(weights)
    return nets


def test_phi_on_the_hand_worked_toy() -> None:
    state = networks_for(toy_kept()).evaluate()
    gate = {name: g.detach().expand(TOY.weight_shapes()[name]) for name, g in state.gate.items()}
    # wv: every input is accessible, both channels co-accessible.
    assert gate["wv"].tolist() == [[1.0, 1.0], [1.0, 1.0]]
    # fc: rows of channel 0 accessible, of channel 1 not; all classes co-accessible.
    for n in range(2):
        for h in range(2):
            assert gate["fc"][fc_row(n, h, 0)].tolist() == [1.0, 1.0]
            assert gate["fc"][fc_row(n, h, 1)].tolist() == [0.0, 0.0]
    # Q: live heads [0, 1] times K columns kept [1, 0] -> nothing. K: live x Q columns [1, 1].
    assert gate["wq"].flatten().tolist() == [0.0, 0.0, 0.0, 0.0]
    assert gate["wk"][0].flatten().tolist() == [0.0, 0.0]
    assert gate["wk"][1].flatten().tolist() == [1.0, 1.0]
    effective = {name: state.kept[name].detach() * gate[name] for name in PRUNABLE}
    assert sum(int(m.sum()) for m in effective.values()) == 2


@pytest.mark.parametrize(
    "config",
    [SMALL, SMALL_PER_HEAD, SMALL_BILINEAR, SMALL_PER_HEAD_BILINEAR],
    ids=["shared", "per-head", "bilinear", "per-head-bilinear"],
)
@pytest.mark.parametrize("seed", range(6))
def test_phi_equals_the_exact_analysis_on_random_masks(seed: int, config: GCNConfig) -> None:
    g = torch.Generator().manual_seed(seed)
    density = [0.02, 0.1, 0.3][seed % 3]
    kept = {
        name: (torch.rand(shape, generator=g) < density).float()
        for name, shape in config.weight_shapes().items()
    }
    state = networks_for(kept, config).evaluate()
    exact = analyze(kept, config)
    for name in PRUNABLE:
        ours = (state.kept[name] * state.gate[name]).detach() > 0
        assert torch.equal(ours, exact.effective_masks[name]), name


def test_gradient_reaches_weights_through_phi_only() -> None:
    """fc's soft mass depends on wv only through the accessibility of the channels."""
    nets = networks_for(toy_kept())
    state = nets.evaluate()
    state.factor("fc").sum().backward()
    wv = nets._weights["wv"]
    assert wv.grad is not None and bool((wv.grad != 0).any())


def test_parametrized_model_computes_with_w_psi_gate_and_caches_per_step() -> None:
    model = build_model(TOY, seed=0)
    nets = AccessibilityNetworks(TOY, temperature=0.05, tau=0.5)
    nets.bind(model.prunable())
    attach(model, {name: AccessibilityMask(name, nets) for name in PRUNABLE})
    nets.bind(model.prunable())
    first = nets.evaluate()
    assert nets.evaluate() is first  # one evaluation shared by the four tensors and the loss
    for name, w in model.prunable().items():
        expected = w * first.psi[name] * first.gate[name]
        assert torch.allclose(getattr(model, name), expected)
    with torch.no_grad():
        model.prunable()["fc"].mul_(2.0)  # an in-place update (as an optimizer step) ...
    assert nets.evaluate() is not first  # ... invalidates the cache
    nets.temperature = 0.01
    assert nets.evaluate().psi["fc"] is not first.psi["fc"]


# --------------------------------------------------------------------------- greedy


def test_greedy_completes_the_dangling_largest_weight_and_trims_the_smallest() -> None:
    """The largest weight feeds channel 1, which MP leaves without an fc edge.

    MP's top 4: wv[1,1] = 10, fc (n0,h0,c0)->0 = 9, wv[0,0] = 8, wv[0,1] = 0.6: channel 1 is
    dangling (50% A-C). Greedy completes it with its best fc edge, (n1,h1,c1)->1 = 0.5, then
    removes the smallest unprotected edge, wv[0,1]: the answer is the two 2-edge paths.
    """
    scores = {name: torch.full(shape, 0.01) for name, shape in TOY.weight_shapes().items()}
    scores["wv"][1, 1] = 10.0
    scores["fc"][fc_row(0, 0, 0), 0] = 9.0
    scores["wv"][0, 0] = 8.0
    scores["wv"][0, 1] = 0.6
    scores["fc"][fc_row(1, 1, 1), 1] = 0.5
    mp = analyze({n: s >= 0.6 for n, s in scores.items()}, TOY)
    assert mp.percent_ac == 50.0
    masks, stats = greedy_tc_masks(scores, 4, TOY)
    expected = zeros()
    expected["wv"][1, 1] = expected["fc"][fc_row(0, 0, 0), 0] = expected["wv"][0, 0] = 1
    expected["fc"][fc_row(1, 1, 1), 1] = 1
    for name in PRUNABLE:
        assert torch.equal(masks[name], expected[name].bool()), name
    assert (stats.completed, stats.trimmed, stats.refilled) == (1, 1, 0)


def qk_scores() -> dict[str, torch.Tensor]:
    """The largest weight is a query weight of head 1, whose head has no fc edge in MP."""
    scores = {name: torch.full(shape, 0.01) for name, shape in TOY.weight_shapes().items()}
    scores["wq"][1, 0, 0] = 20.0
    scores["fc"][fc_row(0, 0, 0), 0] = 9.0
    scores["wv"][0, 0] = 8.0
    scores["wv"][1, 0] = 7.0
    scores["fc"][fc_row(0, 0, 0), 1] = 6.5
    scores["fc"][fc_row(1, 0, 0), 1] = 1.0
    scores["wk"][1, :, 0] = torch.tensor([0.3, 0.2])
    scores["fc"][fc_row(1, 1, 0), 0] = 0.4  # best fc edge of head 1 from channel 0
    scores["fc"][fc_row(1, 1, 1), 0] = 0.45  # larger, but channel 1 is not active
    return scores


def test_greedy_makes_a_query_weight_count() -> None:
    """MP's top 6 keep Q[1,0,0] = 20 with no live head 1 and no K partner.

    Completion adds head 1's best fc edge from the active channel 0, (n1,h1,c0)->0 = 0.4,
    and the partner K[1,0,0] = 0.3; the two smallest unprotected edges (fc 1.0 and 6.5) go.
    """
    masks, stats = greedy_tc_masks(qk_scores(), 6, TOY)
    expected = zeros()
    expected["wq"][1, 0, 0] = expected["wk"][1, 0, 0] = 1
    expected["fc"][fc_row(0, 0, 0), 0] = expected["fc"][fc_row(1, 1, 0), 0] = 1
    expected["wv"][0, 0] = expected["wv"][1, 0] = 1
    for name in PRUNABLE:
        assert torch.equal(masks[name], expected[name].bool()), name
    assert (stats.completed, stats.trimmed) == (2, 2)


def test_greedy_falls_back_to_the_best_path_for_a_tiny_budget() -> None:
    """keep = 2: only a single path fits; the best one is wv[0,0] = 8 with fc 9 (sum 17)."""
    masks, stats = greedy_tc_masks(qk_scores(), 2, TOY)
    expected = zeros()
    expected["wv"][0, 0] = expected["fc"][fc_row(0, 0, 0), 0] = 1
    for name in PRUNABLE:
        assert torch.equal(masks[name], expected[name].bool()), name
    assert stats.start_budget == 0


@pytest.mark.parametrize("rate", [0.5, 0.75, 0.95, 0.99])
@pytest.mark.parametrize("seed", range(3))
def test_greedy_selection_is_exact_and_consistent_on_random_weights(rate: float, seed: int) -> None:
    model = build_model(SMALL, seed=seed)
    scores = {name: w.detach().abs() for name, w in model.prunable().items()}
    keep = keep_count(SMALL.num_weights(), rate)
    masks, _ = greedy_tc_masks(scores, keep, SMALL)
    report = analyze(masks, SMALL)
    assert report.total_kept == keep
    assert report.is_topologically_consistent


def test_greedy_scales_to_the_papers_gcn() -> None:
    config = GCNConfig()
    g = torch.Generator().manual_seed(0)
    scores = {n: torch.rand(s, generator=g) for n, s in config.weight_shapes().items()}
    scores["fc"] *= 0.05  # fc weights are an order of magnitude smaller, as after Glorot init
    keep = keep_count(config.num_weights(), 0.99)
    start = time.perf_counter()
    masks, stats = greedy_tc_masks(scores, keep, config)
    elapsed = time.perf_counter() - start
    report = analyze(masks, config)
    assert report.total_kept == keep and report.is_topologically_consistent
    assert stats.completed > 0  # MP alone keeps almost no fc edge here
    assert elapsed < 30.0


def test_greedy_rejects_bad_input() -> None:
    scores = {name: torch.ones(shape) for name, shape in TOY.weight_shapes().items()}
    with pytest.raises(ValueError, match=r"keep: expected an integer in \[2, 28\]"):
        greedy_tc_masks(scores, 1, TOY)
    with pytest.raises(ValueError, match="non-negative"):
        greedy_tc_masks({**scores, "wv": -scores["wv"]}, 4, TOY)
    with pytest.raises(ValueError, match="expected the tensors"):
        greedy_tc_masks({"fc": scores["fc"]}, 4, TOY)
    with pytest.raises(ValueError, match="dense_fraction"):
        GreedyOptions(dense_fraction=1.0)


# --------------------------------------------------------------------------- full methods


def run(method: str, rate: float, seed: int = 0, network: GCNConfig = SMALL) -> PruneReport:
    config = get_profile("smoke").train_config(seed=seed, device="cpu")
    model = build_model(network, seed=seed)
    cls = TCMP if method == "tcmp" else GreedyTC
    result = cls().run(model, make_data(network), rate, train_config=config, progress=False)
    exact = analyze(masks_from_model(result.model), network)  # type: ignore[arg-type]
    assert exact.is_topologically_consistent, f"{method} at {rate}: {exact.percent_ac}% A-C"
    assert result.report.percent_ac == 100.0
    assert result.report.kept_weights == exact.total_kept
    return result.report


@pytest.mark.parametrize("method", ["tcmp", "greedy-tc"])
@pytest.mark.parametrize("rate", [0.5, 0.75, 0.95, 0.99])
def test_methods_reach_the_rate_and_are_consistent(method: str, rate: float) -> None:
    report = run(method, rate)
    assert abs(report.achieved_rate - rate) <= 0.005
    assert math.isfinite(report.class_avg_accuracy)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("keep", [2, 5, 40, 300])
def test_greedy_selection_with_per_head_filters_is_exact_and_consistent(
    keep: int, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    scores = {
        n: torch.rand(shape, generator=g) for n, shape in SMALL_PER_HEAD.weight_shapes().items()
    }
    if seed % 2:  # attention and filters an order of magnitude larger, as after training
        scores = {n: s * (10.0 if n != "fc" else 1.0) for n, s in scores.items()}
    masks, _ = greedy_tc_masks(scores, keep, SMALL_PER_HEAD)
    report = analyze(masks, SMALL_PER_HEAD)
    assert report.is_topologically_consistent and report.total_kept == keep
    assert masks["wv"].shape == SMALL_PER_HEAD.weight_shapes()["wv"]
    # When the magnitude mask is itself consistent, it is the selection (seeds 1-3 at 300).
    magnitude = topk_masks(scores, keep)
    if analyze(magnitude, SMALL_PER_HEAD).is_topologically_consistent:
        assert all(torch.equal(masks[n], magnitude[n]) for n in PRUNABLE)


@pytest.mark.parametrize("config", [SMALL_BILINEAR, SMALL_PER_HEAD_BILINEAR])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("keep", [4, 5, 40, 300])
def test_greedy_selection_with_bilinear_attention_is_exact_and_consistent(
    keep: int, seed: int, config: GCNConfig
) -> None:
    g = torch.Generator().manual_seed(seed)
    scores = {n: torch.rand(shape, generator=g) for n, shape in config.weight_shapes().items()}
    if seed % 2:  # attention and filters an order of magnitude larger, as after training
        scores = {n: s * (10.0 if n != "fc" else 1.0) for n, s in scores.items()}
    masks, _ = greedy_tc_masks(scores, keep, config)
    report = analyze(masks, config)
    assert report.is_topologically_consistent and report.total_kept == keep
    assert bool(report.live_heads.any())


def test_greedy_needs_a_query_key_pair_under_bilinear_attention() -> None:
    scores = {n: torch.ones(shape) for n, shape in SMALL_BILINEAR.weight_shapes().items()}
    with pytest.raises(ValueError, match=r"keep: expected an integer in \[4, .*one wq and one wk"):
        greedy_tc_masks(scores, 3, SMALL_BILINEAR)


@pytest.mark.parametrize("method", ["tcmp", "greedy-tc"])
@pytest.mark.parametrize("rate", [0.95, 0.99])
def test_methods_keep_bilinear_attention_consistent(method: str, rate: float) -> None:
    report = run(method, rate, network=SMALL_PER_HEAD_BILINEAR)
    assert abs(report.achieved_rate - rate) <= 0.005


@pytest.mark.parametrize("rate", [0.95, 0.99])
def test_tcmp_keeps_per_head_filters_consistent(rate: float) -> None:
    report = run("tcmp", rate, network=SMALL_PER_HEAD)
    assert abs(report.achieved_rate - rate) <= 0.005


def test_tcmp_reports_the_learned_mask_before_projection() -> None:
    report = run("tcmp", 0.95)
    details = report.details
    assert {"learned_rate", "crisp_percent_ac", "projected", "t0", "t_end"} <= set(details)
    assert 0.0 <= details["learned_rate"] <= 1.0
    if details["projected"] == 0.0:
        assert abs(details["learned_rate"] - report.achieved_rate) < 1e-12
    for key in ("temperature", "budget", "consistency", "learned_rate", "soft_rate"):
        assert key in report.history[0]
    temps = [row["temperature"] for row in report.history]
    assert temps == sorted(temps, reverse=True)


@pytest.mark.parametrize("method", ["tcmp", "greedy-tc"])
def test_same_seed_same_report(method: str) -> None:
    first, second = run(method, 0.95, seed=3), run(method, 0.95, seed=3)
    a, b = first.to_dict(), second.to_dict()
    for key in ("wall_time_s", "device"):
        a.pop(key), b.pop(key)
    assert a == b


def test_tcmp_rejects_bad_options() -> None:
    with pytest.raises(ValueError, match="TCMPOptions.ste_tau: expected a positive number"):
        TCMPOptions(ste_tau=0.0)
    with pytest.raises(ValueError, match="TCMPOptions.t_end_ratio"):
        TCMPOptions(t_end_ratio=2.0)
    config = get_profile("smoke").train_config(seed=0, device="cpu")
    with pytest.raises(ValueError, match="unknown option"):
        TCMP().run(build_model(SMALL), make_data(SMALL), 0.9, train_config=config, lambda_=1.0)
