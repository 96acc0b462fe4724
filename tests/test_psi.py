"""The relaxed mask psi, fixed masks and exact top-k (Section 3 of the paper)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tcmplib.model import PRUNABLE, GCNConfig
from tcmplib.pruning.masks import FixedMask, attach, keep_count, psi, topk_masks
from tcmplib.train import build_model

weights = st.floats(min_value=-50.0, max_value=50.0, allow_nan=False)
temperatures = st.floats(min_value=1e-3, max_value=1e3)


@settings(max_examples=200, deadline=None)
@given(w=weights, t=temperatures)
def test_psi_is_symmetric_and_in_unit_interval(w: float, t: float) -> None:
    x = torch.tensor([w, -w], dtype=torch.float64)
    value = psi(x, t)
    assert value[0] == value[1]
    assert 0.0 <= float(value[0]) <= 1.0
    if w * w / t < 30:  # beyond that, 2 sigmoid - 1 rounds to 1.0 in float64
        assert float(value[0]) < 1.0


@given(t=temperatures)
def test_psi_is_zero_at_zero(t: float) -> None:
    assert float(psi(torch.zeros(1, dtype=torch.float64), t)) == 0.0


def test_psi_is_increasing_in_magnitude() -> None:
    w = torch.linspace(0, 3, 301, dtype=torch.float64)
    assert bool((psi(w, 0.5).diff() > 0).all())


def test_psi_becomes_crisp_as_temperature_falls() -> None:
    w = torch.tensor([1e-3, 1e-2, 0.1, -0.5, 2.0], dtype=torch.float64)
    assert float(psi(w, 1e-9).min()) > 1 - 1e-12  # every nonzero weight is kept
    assert float(psi(w, 1e3).max()) < 0.01  # and at high temperature nothing is
    gaps = [float((1 - psi(w, t)).max()) for t in (1e-4, 1e-6, 1e-8)]
    assert gaps == sorted(gaps, reverse=True)


def test_psi_is_one_half_at_t_ln3() -> None:
    """The documented switching point: psi(w) = 1/2 at w^2 = T ln 3."""
    t = 0.02
    assert float(psi(torch.tensor(math.sqrt(t * math.log(3)), dtype=torch.float64), t)) == (
        pytest.approx(0.5)
    )


def test_psi_rejects_a_non_positive_temperature() -> None:
    with pytest.raises(ValueError, match="temperature must be > 0"):
        psi(torch.ones(2), 0.0)


def test_fixed_mask_blocks_gradient_of_pruned_weights() -> None:
    model = build_model(GCNConfig(nodes=3, d_in=4, heads=2, qk_dim=2, channels=3, classes=5))
    masks = {name: torch.rand(w.shape) > 0.5 for name, w in model.prunable().items()}
    attach(model, {name: FixedMask(m) for name, m in masks.items()})
    model(torch.randn(6, 3, 4)).square().sum().backward()
    for name, w in model.prunable().items():
        assert w.grad is not None
        assert bool((w.grad[~masks[name]] == 0).all()), name
        assert bool((getattr(model, name)[~masks[name]] == 0).all()), name
    assert any(bool((w.grad != 0).any()) for w in model.prunable().values())
    assert tuple(model.prunable()) == PRUNABLE


def test_topk_keeps_the_largest_scores_across_tensors() -> None:
    scores = {"a": torch.tensor([[0.1, 5.0], [3.0, 0.2]]), "b": torch.tensor([4.0, 0.3, 2.0])}
    masks = topk_masks(scores, 3)
    assert masks["a"].tolist() == [[False, True], [True, False]]
    assert masks["b"].tolist() == [True, False, False]


def test_topk_breaks_ties_by_position_with_an_exact_count() -> None:
    scores = {"a": torch.ones(2, 3), "b": torch.ones(4)}
    for keep in range(11):
        masks = topk_masks(scores, keep)
        flat = torch.cat([masks["a"].reshape(-1), masks["b"]])
        assert int(flat.sum()) == keep
        assert flat.tolist() == [True] * keep + [False] * (10 - keep)  # earlier first
    again = topk_masks(scores, 7)
    assert all(torch.equal(again[n], topk_masks(scores, 7)[n]) for n in scores)


def test_keep_count_matches_the_papers_parameter_column() -> None:
    total = GCNConfig().num_weights()
    assert [keep_count(total, r) for r in (0.5, 0.75, 0.95, 0.99)] == [
        983_808,
        491_904,
        98_381,
        19_676,
    ]


def test_band_lr_ceiling_is_half_the_band_for_two_steps() -> None:
    from tcmplib.pruning.masks import band_lr_ceiling

    # psi(w) = 1/2 at w^2 = T ln 3: with T = 4 / ln 3 the band is |w| < 2.
    temperature = 4.0 / math.log(3.0)
    assert psi(torch.tensor([2.0]), temperature).item() == pytest.approx(0.5)
    assert band_lr_ceiling(temperature, 2.0) == pytest.approx(1.0)
    assert band_lr_ceiling(temperature, 4.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        band_lr_ceiling(0.0, 2.0)
    with pytest.raises(ValueError, match="band_steps must be > 0"):
        band_lr_ceiling(1.0, 0.0)
