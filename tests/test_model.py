"""The baseline GCN: the paper's weight count and a loop-by-loop reference of its forward."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from tcmplib.model import PRUNABLE, AttentionGCN, GCNConfig, neighbourhood_mask
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


def test_bilinear_attention_is_the_scores_averaged_over_the_attended_joints() -> None:
    config = GCNConfig(nodes=21, d_in=5, heads=2, qk_dim=3, channels=4, classes=3,
                       attention="bilinear", neighbourhood=1)  # fmt: skip
    model = build_model(config, seed=0).double()
    x = torch.randn(2, 21, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        attention = model.attention(x)
        q, k = x @ model.wq[1], x @ model.wk[1]
        scores = q @ k.transpose(-1, -2) / math.sqrt(3)
        near = neighbourhood_mask(1).double()  # joints within one bone, self included
        torch.testing.assert_close(attention[:, 1], scores * near / near.sum(1, keepdim=True))
        model.wk[0, :, 1:] = 0.0  # head 0: K column 0 only ...
        model.wq[0, :, 0] = 0.0  # ... and Q columns 1, 2 only: no pair, silenced
        assert not model.attention(x)[:, 0].any()
        softmax = build_model(replace(config, attention="softmax"), seed=0).double()
        softmax.load_state_dict(model.state_dict())
        assert (softmax.attention(x)[:, 0] > 0).any()  # uniform within the bones, not silent


def test_attention_option_is_checked() -> None:
    with pytest.raises(ValueError, match="GCNConfig.attention: expected one of softmax, bilinear"):
        GCNConfig(attention="linear")


def test_build_model_is_seeded_and_leaves_global_rng_alone() -> None:
    state = torch.get_rng_state()
    a, b, c = build_model(TINY, seed=0), build_model(TINY, seed=0), build_model(TINY, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.fc, c.fc)
