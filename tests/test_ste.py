"""The straight-through Heaviside: binary forward, sigmoid-surrogate backward (Section 4.3)."""

from __future__ import annotations

import pytest
import torch

from tcmplib.pruning.ste import heaviside_ste, ste_step, surrogate, surrogate_grad
from tcmplib.topology import heaviside, reachability

# sigmoid(-2) = 0.11920292, sigmoid(4) = 0.98201379 (by hand, from 1 / (1 + e^-x)).
# d/dx sigmoid(x / tau) = s (1 - s) / tau with s = sigmoid(x / tau); tau = 0.5:
#   x = -1: 0.11920292 * 0.88079708 / 0.5 = 0.20998717
#   x =  0: 0.5 * 0.5 / 0.5             = 0.5
#   x =  2: 0.98201379 * 0.01798621 / 0.5 = 0.03532541
X = [-1.0, 0.0, 2.0]
EXPECTED_GRAD = [0.20998717, 0.5, 0.03532541]


def test_forward_is_exactly_binary() -> None:
    x = torch.tensor([-3.0, -1e-9, 0.0, 1e-9, 0.25, 7.0], dtype=torch.float64)
    out = heaviside_ste(x, 0.5)
    assert out.dtype == torch.float64
    assert out.tolist() == [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert torch.equal(out, heaviside(x))


def test_backward_is_the_sigmoid_derivative_hand_checked() -> None:
    x = torch.tensor(X, requires_grad=True)
    heaviside_ste(x, 0.5).sum().backward()
    assert x.grad is not None
    assert x.grad.tolist() == pytest.approx(EXPECTED_GRAD, abs=1e-7)
    assert surrogate_grad(torch.tensor(X), 0.5).tolist() == pytest.approx(EXPECTED_GRAD, abs=1e-7)


def test_backward_follows_the_chain_rule() -> None:
    x = torch.tensor(X, requires_grad=True)
    (3.0 * heaviside_ste(x, 0.5)).sum().backward()
    assert x.grad is not None
    assert x.grad.tolist() == pytest.approx([3 * g for g in EXPECTED_GRAD], abs=1e-6)


def test_surrogate_is_the_smooth_sigmoid() -> None:
    assert surrogate(torch.tensor([0.0, 2.0]), 0.5).tolist() == pytest.approx(
        [0.5, 0.98201379], abs=1e-7
    )


def test_step_plugs_into_the_topology_analysis() -> None:
    """Same binary answer as the exact analysis, but differentiable w.r.t. the masks."""
    masks = [torch.tensor([[1.0, 0.0], [0.0, 0.0]], requires_grad=True), torch.ones(2, 1)]
    exact = reachability([m.detach() for m in masks])
    soft = reachability(masks, ste_step(0.5))
    for name in exact.accessible:
        assert torch.equal(exact.accessible[name], soft.accessible[name].detach())
    soft.accessible["hidden1"].sum().backward()
    assert masks[0].grad is not None and bool((masks[0].grad != 0).any())


@pytest.mark.parametrize("tau", [0, -1.0, float("nan"), float("inf"), True])
def test_bad_tau_names_the_parameter(tau: object) -> None:
    with pytest.raises(ValueError, match="tau: expected a positive finite number"):
        heaviside_ste(torch.zeros(1), tau)  # type: ignore[arg-type]
