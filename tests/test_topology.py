"""Accessibility, co-accessibility and effective masks: hand-worked cases and properties.

The property tests compare :func:`tcmplib.topology.analyze` with an independent brute force
that enumerates every input-to-output path of the unit graph explicitly (for the attention
GCN, with the attention fan-out expanded into explicit edges).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.utils import parametrize

from tcmplib.model import ATTENTIONS, PRUNABLE, VALUES, AttentionGCN, GCNConfig
from tcmplib.topology import (
    EdgeClass,
    analyze,
    classify_edges,
    heaviside,
    magnitude_masks,
    magnitude_sweep,
    masks_from_model,
    path_count_matrices,
    reachability,
    time_analyze,
)

# --------------------------------------------------------------------------- helpers


def tensor(rows: list[list[int]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.bool)


def chain_paths(masks: list[torch.Tensor]) -> list[tuple[int, ...]]:
    """Every input-to-output path (one unit per layer) whose edges are all kept."""
    sizes = [masks[0].shape[0], *(m.shape[1] for m in masks)]
    return [
        units
        for units in itertools.product(*(range(s) for s in sizes))
        if all(bool(m[units[k], units[k + 1]]) for k, m in enumerate(masks))
    ]


def brute_force_chain(masks: list[torch.Tensor]) -> dict[str, object]:
    """Effective edges, accessible and co-accessible units by explicit path enumeration."""
    sizes = [masks[0].shape[0], *(m.shape[1] for m in masks)]
    effective = [torch.zeros_like(m, dtype=torch.bool) for m in masks]
    for units in chain_paths(masks):
        for layer in range(len(masks)):
            effective[layer][units[layer], units[layer + 1]] = True
    accessible = []
    coaccessible = []
    for k in range(len(sizes)):
        prefixes = chain_paths(masks[:k]) if k else [(i,) for i in range(sizes[0])]
        accessible.append({p[-1] for p in prefixes})
        suffixes = chain_paths(masks[k:]) if k < len(masks) else [(i,) for i in range(sizes[-1])]
        coaccessible.append({p[0] for p in suffixes})
    return {"effective": effective, "accessible": accessible, "coaccessible": coaccessible}


def brute_force_gcn(masks: dict[str, torch.Tensor], config: GCNConfig) -> dict[str, torch.Tensor]:
    """Effective masks of the attention GCN, enumerating paths x_i -> c -> (n,h,c) -> k.

    The fan-out is explicit: channel c has an edge to every dense-layer input (n, h, c) (with
    per-head filters, head h's channel c to the inputs (n, h, c) of head h only; with
    bilinear attention, of open heads only). Q/K edges follow the documented rule, checked
    entry by entry.
    """
    effective = {name: torch.zeros_like(masks[name], dtype=torch.bool) for name in PRUNABLE}
    live = [False] * config.heads
    # Bilinear attention: head h computes A_h = 0 unless a Q column and the K column of the
    # same index both keep an entry.
    open_head = [
        not config.silenceable
        or any(
            bool(masks["wq"][h, :, j].any()) and bool(masks["wk"][h, :, j].any())
            for j in range(config.qk_dim)
        )
        for h in range(config.heads)
    ]
    for i, c, n, h, k in itertools.product(
        range(config.d_in),
        range(config.channels),
        range(config.nodes),
        range(config.heads),
        range(config.classes),
    ):
        flat = (n * config.heads + h) * config.channels + c
        # Per-head filters: the path runs through head h's own channel c.
        value = (h, i, c) if config.per_head else (i, c)
        if masks["wv"][value] and masks["fc"][flat, k] and open_head[h]:
            effective["wv"][value] = True
            effective["fc"][flat, k] = True
            live[h] = True
    for h, i, j in itertools.product(range(config.heads), range(config.d_in), range(config.qk_dim)):
        partner_key = any(bool(masks["wk"][h, r, j]) for r in range(config.d_in))
        partner_query = any(bool(masks["wq"][h, r, j]) for r in range(config.d_in))
        effective["wq"][h, i, j] = bool(masks["wq"][h, i, j]) and live[h] and partner_key
        effective["wk"][h, i, j] = bool(masks["wk"][h, i, j]) and live[h] and partner_query
    return effective


@st.composite
def chains(draw: st.DrawFn) -> list[torch.Tensor]:
    depth = draw(st.integers(1, 4))
    widths = draw(st.lists(st.integers(1, 4), min_size=depth + 1, max_size=depth + 1))
    density = draw(st.sampled_from([0.2, 0.4, 0.6, 0.9]))
    masks = []
    for source, target in zip(widths[:-1], widths[1:], strict=True):
        bits = draw(
            st.lists(
                st.floats(0, 1).map(lambda u, d=density: u < d),
                min_size=source * target,
                max_size=source * target,
            )
        )
        masks.append(torch.tensor(bits, dtype=torch.bool).reshape(source, target))
    return masks


@st.composite
def tiny_gcns(draw: st.DrawFn) -> tuple[GCNConfig, dict[str, torch.Tensor]]:
    config = GCNConfig(
        nodes=draw(st.integers(1, 3)),
        d_in=draw(st.integers(1, 3)),
        heads=draw(st.integers(1, 2)),
        qk_dim=draw(st.integers(1, 2)),
        channels=draw(st.integers(1, 3)),
        classes=draw(st.integers(1, 2)),
        values=draw(st.sampled_from(VALUES)),
        attention=draw(st.sampled_from(ATTENTIONS)),
    )
    density = draw(st.sampled_from([0.1, 0.3, 0.6]))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    masks = {
        name: torch.rand(shape, generator=generator) < density
        for name, shape in config.weight_shapes().items()
    }
    return config, masks


# --------------------------------------------------------------------------- chains


# The chapter's example: input 1 also feeds hidden1 unit 2, which leads nowhere (a dangling
# unit on the input side); hidden2 unit 2 feeds output 1 but nothing reaches it (a dangling
# unit on the output side).
W1 = tensor([[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]])
W2 = tensor([[1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 1, 0]])
W3 = tensor([[1, 0], [0, 1], [0, 1]])


def test_toy_chain_sets_worked_by_hand() -> None:
    report = analyze([W1, W2, W3])
    assert report.graph.unit_names == ("input", "hidden1", "hidden2", "output")
    assert report.accessible["hidden1"].tolist() == [True, True, True, True]
    assert report.coaccessible["hidden1"].tolist() == [True, True, False, True]
    assert report.accessible["hidden2"].tolist() == [True, True, False]
    assert report.coaccessible["hidden2"].tolist() == [True, True, True]
    assert (
        report.effective_masks["W1"].tolist()
        == tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]).tolist()
    )
    assert report.effective_masks["W2"].tolist() == W2.tolist()
    assert report.effective_masks["W3"].tolist() == tensor([[1, 0], [0, 1], [0, 0]]).tolist()
    assert report.kept == {"W1": 4, "W2": 3, "W3": 3}
    assert report.effective == {"W1": 3, "W2": 3, "W3": 2}
    assert report.percent_ac == pytest.approx(80.0)
    assert report.dead_units == {"input": 0, "hidden1": 1, "hidden2": 1, "output": 0}
    assert not report.is_topologically_consistent
    assert report.direct_sparsity == pytest.approx(1 - 10 / 30)
    assert report.effective_sparsity == pytest.approx(1 - 8 / 30)


def test_edge_classes_name_the_failure() -> None:
    report = analyze([W1, W2, W3])
    assert classify_edges(report, "W1")[1, 2] == EdgeClass.NOT_COACCESSIBLE
    assert classify_edges(report, "W3")[2, 1] == EdgeClass.NOT_ACCESSIBLE
    assert classify_edges(report, "W3")[0, 0] == EdgeClass.CONSISTENT
    assert classify_edges(report, "W3")[0, 1] == EdgeClass.PRUNED


def test_fully_dead_layer_kills_everything() -> None:
    dead = torch.zeros(4, 3, dtype=torch.bool)
    report = analyze([W1, dead, W3])
    assert report.total_effective == 0
    assert report.percent_ac == 0.0
    assert not report.coaccessible["input"].any()
    assert not report.accessible["output"].any()
    assert report.dead_units == {"input": 3, "hidden1": 4, "hidden2": 3, "output": 2}


def test_nothing_kept_gives_nan_percent() -> None:
    report = analyze([torch.zeros(2, 2), torch.zeros(2, 1)])
    assert math.isnan(report.percent_ac)
    assert report.is_topologically_consistent


def test_chain_given_as_mapping_keeps_names_and_order() -> None:
    report = analyze({"first": W1, "second": W2, "third": W3})
    assert report.graph.tensor_names == ("first", "second", "third")
    assert report.effective == {"first": 3, "second": 3, "third": 2}


def test_path_count_matrices_match_the_paper_definition() -> None:
    to_units, from_units = path_count_matrices([W1, W2, W3])
    report = analyze([W1, W2, W3])
    for k, name in enumerate(report.graph.unit_names):
        # S_a: unit i of layer k is accessible iff column i is non-null (similarly S_c, rows).
        assert (to_units[k].sum(dim=0) > 0).tolist() == report.accessible[name].tolist()
        assert (from_units[k].sum(dim=1) > 0).tolist() == report.coaccessible[name].tolist()
    # One kept path from input 1 to hidden2 unit 1 (through hidden1 unit 1), and one from
    # input 2 (through hidden1 unit 3).
    assert to_units[2][1, 1] == 1 and to_units[2][2, 1] == 1


@given(chains())
@settings(max_examples=100, deadline=None)
def test_chain_matches_brute_force_path_search(masks: list[torch.Tensor]) -> None:
    report = analyze(masks)
    expected = brute_force_chain(masks)
    for layer, name in enumerate(report.graph.tensor_names):
        assert report.effective_masks[name].tolist() == expected["effective"][layer].tolist()
    for k, name in enumerate(report.graph.unit_names):
        accessible = set(report.accessible[name].nonzero().flatten().tolist())
        coaccessible = set(report.coaccessible[name].nonzero().flatten().tolist())
        assert accessible == expected["accessible"][k]
        assert coaccessible == expected["coaccessible"][k]


@given(chains())
@settings(max_examples=60, deadline=None)
def test_chain_effective_mask_is_a_fixed_point(masks: list[torch.Tensor]) -> None:
    report = analyze(masks)
    effective = list(report.effective_masks.values())
    for kept, eff in zip(report.kept_masks.values(), effective, strict=True):
        assert not (eff & ~kept).any()  # effective <= direct
    again = analyze(effective)
    assert again.is_topologically_consistent
    assert again.total_effective == report.total_effective
    if again.total_kept:
        assert again.percent_ac == 100.0


@given(chains())
@settings(max_examples=60, deadline=None)
def test_path_counts_agree_with_analyze(masks: list[torch.Tensor]) -> None:
    to_units, from_units = path_count_matrices(masks)
    report = analyze(masks)
    for k, name in enumerate(report.graph.unit_names):
        assert (to_units[k].sum(dim=0) > 0).tolist() == report.accessible[name].tolist()
        assert (from_units[k].sum(dim=1) > 0).tolist() == report.coaccessible[name].tolist()


# --------------------------------------------------------------------------- GCN

TOY = GCNConfig(nodes=3, d_in=4, heads=2, qk_dim=2, channels=3, classes=2)


def fc_row(config: GCNConfig, node: int, head: int, channel: int) -> int:
    return (node * config.heads + head) * config.channels + channel


def toy_gcn_masks() -> dict[str, torch.Tensor]:
    """Channel 0 live; channel 1 fed but unused; channel 2 used but not fed; head 1 dead.

    Head 0: Q column 0 pairs with K column 0; Q column 1 has no K partner.
    Head 1: Q/K kept but the head has no effective fc edge.
    """
    masks = {
        name: torch.zeros(shape, dtype=torch.bool) for name, shape in TOY.weight_shapes().items()
    }
    masks["wv"][0, 0] = masks["wv"][3, 0] = True  # inputs 0, 3 -> channel 0
    masks["wv"][1, 1] = True  # input 1 -> channel 1, which has no fc edge (dangling)
    masks["fc"][fc_row(TOY, 0, 0, 0), 0] = True  # (0,0,0) -> class 0: effective
    masks["fc"][fc_row(TOY, 2, 0, 0), 1] = True  # (2,0,0) -> class 1: effective
    masks["fc"][fc_row(TOY, 1, 1, 2), 1] = True  # channel 2 is not fed: disconnected
    masks["wq"][0, 0, 0] = masks["wq"][0, 2, 1] = True
    masks["wk"][0, 1, 0] = True
    masks["wq"][1, 0, 0] = masks["wk"][1, 0, 0] = True
    return masks


def test_toy_gcn_worked_by_hand() -> None:
    report = analyze(toy_gcn_masks())
    assert report.graph.attention == TOY
    assert report.accessible["channels"].tolist() == [True, True, False]
    assert report.coaccessible["channels"].tolist() == [True, False, True]
    assert report.live_heads.tolist() == [True, False]
    assert report.effective == {"wq": 1, "wk": 1, "wv": 2, "fc": 2}
    assert report.kept == {"wq": 3, "wk": 2, "wv": 3, "fc": 3}
    assert report.effective_masks["wq"][0, 0, 0]
    assert not report.effective_masks["wq"][0, 2, 1]  # no partner K column
    assert not report.effective_masks["wq"][1].any()  # dead head
    assert report.percent_ac == pytest.approx(100 * 6 / 11)
    assert report.dead_units == {
        "input": 2,  # inputs 1 (feeds a dangling channel) and 2 (feeds nothing)
        "channels": 2,
        "fc_inputs": TOY.fc_in - 2,
        "classes": 0,
        "heads": 1,
    }
    codes = classify_edges(report, "fc")
    assert codes[fc_row(TOY, 1, 1, 2), 1] == EdgeClass.NOT_ACCESSIBLE
    assert classify_edges(report, "wv")[1, 1] == EdgeClass.NOT_COACCESSIBLE
    assert classify_edges(report, "wq")[0, 2, 1] == EdgeClass.NOT_COACCESSIBLE


def test_head_without_query_key_weights_stays_live() -> None:
    masks = toy_gcn_masks()
    masks["wq"][0] = False
    masks["wk"][0] = False
    report = analyze(masks)
    assert report.live_heads.tolist() == [True, False]  # uniform attention still carries signal
    assert report.effective["fc"] == 2 and report.effective["wv"] == 2


def test_bilinear_head_without_a_query_key_pair_is_silenced() -> None:
    bilinear = replace(TOY, attention="bilinear")
    masks = toy_gcn_masks()  # head 0: Q columns {0, 1}, K column {0}: open
    report = analyze(masks, bilinear)
    assert report.live_heads.tolist() == [True, False]
    assert report.effective == analyze(masks).effective  # an open head changes nothing
    masks["wk"][0] = False
    masks["wk"][0, 2, 1] = True  # K column 1 only: no pair with Q column 0 ...
    masks["wq"][0, 2, 1] = False  # ... once Q column 1 is emptied
    report = analyze(masks, bilinear)
    assert report.live_heads.tolist() == [False, False]  # A_0 = 0: nothing reaches a class
    assert report.effective == {"wq": 0, "wk": 0, "wv": 0, "fc": 0}
    softmax = analyze(masks)  # the same masks, softmax attention: head 0 still carries signal
    assert softmax.live_heads.tolist() == [True, False] and softmax.effective["fc"] == 2


def test_per_head_filters_worked_by_hand() -> None:
    """Two heads, two filters each: a head's fc edges only see that head's own channels."""
    config = GCNConfig(nodes=2, d_in=2, heads=2, qk_dim=1, channels=2, classes=1, values="per-head")
    masks = {
        name: torch.zeros(shape, dtype=torch.bool) for name, shape in config.weight_shapes().items()
    }
    masks["wv"][0, 0, 0] = True  # input 0 -> head 0's channel 0
    masks["wv"][1, 1, 0] = True  # input 1 -> head 1's channel 0, which no fc edge reads
    masks["fc"][fc_row(config, 1, 0, 0), 0] = True  # (1, 0, 0): effective
    masks["fc"][fc_row(config, 0, 1, 1), 0] = True  # head 1's channel 1 is not fed
    report = analyze(masks)
    assert report.graph.attention == config
    # Channel units are (head, channel) = 0..3 as h * C + c.
    assert report.accessible["channels"].tolist() == [True, False, True, False]
    assert report.coaccessible["channels"].tolist() == [True, False, False, True]
    assert report.live_heads.tolist() == [True, False]
    assert report.effective == {"wq": 0, "wk": 0, "wv": 1, "fc": 1}
    assert report.effective_masks["wv"][0, 0, 0] and not report.effective_masks["wv"][1, 1, 0]
    assert classify_edges(report, "wv")[1, 1, 0] == EdgeClass.NOT_COACCESSIBLE
    assert classify_edges(report, "fc")[fc_row(config, 0, 1, 1), 0] == EdgeClass.NOT_ACCESSIBLE


@given(tiny_gcns())
@settings(max_examples=100, deadline=None)
def test_gcn_matches_brute_force_path_search(
    case: tuple[GCNConfig, dict[str, torch.Tensor]],
) -> None:
    config, masks = case
    report = analyze(masks, config)
    expected = brute_force_gcn(masks, config)
    for name in PRUNABLE:
        assert report.effective_masks[name].tolist() == expected[name].tolist(), name


@given(tiny_gcns())
@settings(max_examples=60, deadline=None)
def test_gcn_effective_mask_is_a_fixed_point(
    case: tuple[GCNConfig, dict[str, torch.Tensor]],
) -> None:
    config, masks = case
    report = analyze(masks, config)
    for name in PRUNABLE:
        assert not (report.effective_masks[name] & ~masks[name]).any()
    again = analyze(report.effective_masks, config)
    assert again.is_topologically_consistent
    assert again.effective == report.effective
    assert again.live_heads.tolist() == report.live_heads.tolist()


def test_config_is_inferred_and_checked() -> None:
    masks = toy_gcn_masks()
    assert analyze(masks, TOY).graph.attention == TOY
    with pytest.raises(ValueError, match=r"masks\['fc'\]: expected shape"):
        analyze(masks, GCNConfig(nodes=4, d_in=4, heads=2, qk_dim=2, channels=3, classes=2))
    bad = dict(masks, fc=torch.zeros(TOY.fc_in + 1, 2))
    with pytest.raises(ValueError, match=r"masks\['fc'\]: expected a multiple of heads\*channels"):
        analyze(bad)


# --------------------------------------------------------------------------- bad input


def test_masks_that_do_not_chain_are_named() -> None:
    with pytest.raises(
        ValueError, match=r"'W2' \(layer 2\) has 5 rows but the previous mask has 4"
    ):
        analyze([torch.ones(3, 4), torch.ones(5, 2)])


def test_non_matrix_chain_mask_is_named() -> None:
    with pytest.raises(ValueError, match=r"masks\['W1'\]: expected a 2-D"):
        analyze([torch.ones(3, 4, 2)])


def test_wrong_container_is_named() -> None:
    with pytest.raises(TypeError, match="masks: expected a mapping"):
        analyze(torch.ones(3, 3))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="masks: expected at least one"):
        analyze([])


def test_config_with_chain_is_refused() -> None:
    with pytest.raises(ValueError, match="config: given, but the masks"):
        analyze([W1], TOY)


def test_reachability_wants_float_masks() -> None:
    with pytest.raises(ValueError, match="expected floating-point tensors"):
        reachability([W1, W2])


# --------------------------------------------------------------------------- differentiable


def straight_through(x: torch.Tensor) -> torch.Tensor:
    """Heaviside forwards, sigmoid gradient backwards (what TCMP plugs in)."""
    surrogate = torch.sigmoid(4 * x)
    return heaviside(x).detach() + surrogate - surrogate.detach()


def test_straight_through_step_gives_exact_values_and_gradients() -> None:
    generator = torch.Generator().manual_seed(0)
    soft = {
        name: torch.rand(shape, generator=generator).mul(0.3).requires_grad_(True)
        for name, shape in TOY.weight_shapes().items()
    }
    reach = reachability(soft, straight_through)
    exact = analyze({name: mask.detach() > 0.25 for name, mask in soft.items()})
    thresholded = reachability(
        {n: (m.detach() > 0.25).float() for n, m in soft.items()}, straight_through
    )
    for name in exact.accessible:
        assert (thresholded.accessible[name] > 0).tolist() == exact.accessible[name].tolist()
    for name in PRUNABLE:
        assert torch.equal(reach.effective[name], soft[name] * reach.gates[name])
    assert torch.equal(
        reach.gates["fc"], torch.outer(reach.accessible["fc_inputs"], reach.coaccessible["classes"])
    )
    budget = sum(mask.sum() for mask in reach.effective.values())
    budget.backward()
    for name in PRUNABLE:
        assert soft[name].grad is not None and torch.isfinite(soft[name].grad).all()
    # The fc mask's gradient flows back through phi_r into wv as well as directly.
    assert soft["wv"].grad.abs().sum() > 0


# --------------------------------------------------------------------------- models


def test_magnitude_masks_keep_exactly_k_with_ties_broken_by_position() -> None:
    weights = [torch.ones(2, 3), torch.ones(3, 2)]
    masks = magnitude_masks(weights, 0.5)
    assert isinstance(masks, list)
    assert masks[0].tolist() == [[True, True, True], [True, True, True]]
    assert not masks[1].any()
    graded = {"a": torch.tensor([[0.1, -3.0], [2.0, 0.0]]), "b": torch.tensor([[-0.5], [0.7]])}
    kept = magnitude_masks(graded, 0.5)
    assert kept["a"].tolist() == [[False, True], [True, False]] and kept["b"].tolist() == [
        [False],
        [True],
    ]
    assert not magnitude_masks(graded, 1.0)["a"].any()
    assert magnitude_masks(graded, 0.0)["a"].all()


def test_magnitude_masks_count_on_the_full_gcn() -> None:
    torch.manual_seed(0)
    model = AttentionGCN()
    masks = magnitude_masks(model, 0.95)
    assert sum(int(m.sum()) for m in masks.values()) == round(0.05 * model.num_weights())
    assert list(masks) == list(PRUNABLE)


def test_magnitude_masks_reject_bad_rate() -> None:
    with pytest.raises(ValueError, match=r"rate: expected a number in \[0, 1\]"):
        magnitude_masks([torch.ones(2, 2)], 1.5)


def test_masks_from_model_reads_parametrized_weights() -> None:
    torch.manual_seed(1)
    model = AttentionGCN(TOY)
    masks = toy_gcn_masks()

    class Mask(torch.nn.Module):
        def __init__(self, mask: torch.Tensor) -> None:
            super().__init__()
            self.register_buffer("mask", mask.float())

        def forward(self, weight: torch.Tensor) -> torch.Tensor:
            return weight * self.mask

    for name in PRUNABLE:
        parametrize.register_parametrization(model, name, Mask(masks[name]))
    read = masks_from_model(model)
    for name in PRUNABLE:
        assert read[name].tolist() == masks[name].tolist()


def test_sweep_rows_and_full_gcn_speed() -> None:
    torch.manual_seed(0)
    model = AttentionGCN()
    rows = magnitude_sweep(model, [0.5, 0.99])
    assert [row["pruning rate"] for row in rows] == [0.5, 0.99]
    assert rows[0]["kept"] == round(0.5 * model.num_weights())
    # Meant to run every epoch (about 10-40 ms here). The bound is loose on purpose: it
    # catches an accidental dense S_a product, not a busy machine.
    assert time_analyze(magnitude_masks(model, 0.9), repeats=3) < 1.0
