"""Random pruned networks for the tests of compact networks, their files and their export."""

from __future__ import annotations

import torch

from tcmplib.compact import CompactGCN, compact_model
from tcmplib.model import AttentionGCN, GCNConfig


def random_compact(config: GCNConfig, seed: int, keep: float) -> tuple[AttentionGCN, CompactGCN]:
    """A network with Glorot weights, each kept with probability ``keep``, and its compaction."""
    torch.manual_seed(seed)
    model = AttentionGCN(config)
    generator = torch.Generator().manual_seed(seed)
    masks = {
        name: torch.rand(shape, generator=generator) < keep
        for name, shape in config.weight_shapes().items()
    }
    return model, compact_model(model, masks)
