"""The baseline GCN: the paper's weight count and a loop-by-loop reference of its forward."""

from __future__ import annotations

import math

import pytest
import torch

from tcmplib.model import PRUNABLE, AttentionGCN, GCNConfig
from tcmplib.train import build_model

TINY = GCNConfig(nodes=4, d_in=5, heads=3, qk_dim=2, channels=6, classes=7)


def test_default_config_has_the_papers_weight_count() -> None:
    assert GCNConfig().num_weights() == 1_967_616
    model = AttentionGCN()
    assert model.num_weights() == 1_967_616
    assert sum(p.numel() for p in model.parameters()) == 1_967_616
    assert tuple(model.prunable()) == PRUNABLE


def test_output_shape() -> None:
    model = build_model(TINY, seed=0)
    assert model(torch.randn(9, TINY.nodes, TINY.d_in)).shape == (9, TINY.classes)


def test_bad_input_shape_names_the_expected_shape() -> None:
    model = build_model(TINY, seed=0)
    with pytest.raises(ValueError, match=r"expected \(batch, 4, 5\)"):
        model(torch.randn(2, TINY.d_in, TINY.nodes))


def reference_forward(model: AttentionGCN, x: torch.Tensor) -> torch.Tensor:
    """The module doc's equations, one sample and one head at a time."""
    cfg = model.config
    rows = []
    for sample in x:  # (nodes, d_in)
        heads = []
        for k in range(cfg.heads):
            q = sample @ model.wq[k]
            key = sample @ model.wk[k]
            attn = torch.softmax(q @ key.T / math.sqrt(cfg.qk_dim), dim=1)
            heads.append(torch.relu(attn @ sample @ model.wv))  # (nodes, channels)
        per_node = torch.stack(heads, dim=1)  # (nodes, heads, channels)
        features = torch.cat([per_node[n].reshape(-1) for n in range(cfg.nodes)])
        rows.append(features @ model.fc)
    return torch.stack(rows)


def test_forward_matches_per_head_loop_reference() -> None:
    model = build_model(TINY, seed=3).double()
    x = torch.randn(
        5, TINY.nodes, TINY.d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference_forward(model, x), rtol=1e-12, atol=1e-12)


def test_build_model_is_seeded_and_leaves_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a, b, c = build_model(TINY, seed=0), build_model(TINY, seed=0), build_model(TINY, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.fc, c.fc)
