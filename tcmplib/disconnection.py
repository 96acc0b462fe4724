"""When does magnitude pruning disconnect a GCN? The one-shot part of the study.

The paper's thesis is that magnitude pruning at high rates leaves most kept connections off
every input-to-output path (MP at 99%: 21.20% A-C), and that topologically consistent
pruning fixes it. Whether MP disconnects depends on where its budget applies:

* ``"global"``: one magnitude ranking over all weights (Eq. 1; Table 1's MP). Small tensors
  with large weights (the attention's and the value projection's, whose Glorot scale is
  ~15x the dense layer's) keep many of their weights, so every unit keeps a path;
* ``"per-tensor"``: the same rate in every tensor (``torch.nn.utils.prune``, Han et al.).
  At 99% the value projection keeps 1% of its 12,288 weights, too few for all 128
  convolution channels, and the dense layer's weights on the channels that lose every
  input are kept but dead.

:func:`one_shot_connectivity` measures % A-C of one-shot MP on trained dense weights at each
rate and scope, exactly (:func:`tcmplib.topology.analyze`), in milliseconds per case: the
cheap first pass that says which configurations are worth training.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pandas as pd
from torch import Tensor

from tcmplib.model import PRUNABLE, GCNConfig
from tcmplib.pruning.masks import SCOPES, scoped_topk_masks
from tcmplib.topology import analyze

__all__ = ["one_shot_connectivity"]


def one_shot_connectivity(
    weights: Mapping[str, Tensor],
    config: GCNConfig,
    rates: Iterable[float] = (0.75, 0.95, 0.99),
    scopes: Iterable[str] = SCOPES,
) -> pd.DataFrame:
    """% A-C of one-shot magnitude pruning of ``weights`` (the four tensors of a trained
    :class:`~tcmplib.model.AttentionGCN`) at every rate and scope.

    One row per (scope, rate): the kept weights in all and per tensor, the effective ones
    (kept, accessible and co-accessible) per tensor, and % A-C.
    """
    missing = [name for name in PRUNABLE if name not in weights]
    if missing:
        raise ValueError(f"weights: expected the tensors {list(PRUNABLE)}, missing {missing}")
    magnitudes = {name: weights[name].detach().abs() for name in PRUNABLE}
    rows = []
    for scope in scopes:
        for rate in rates:
            masks = scoped_topk_masks(magnitudes, rate, scope)
            report = analyze({name: weights[name].detach() * masks[name] for name in PRUNABLE},
                             config)  # fmt: skip
            row: dict[str, object] = {
                "scope": scope,
                "rate (%)": 100.0 * rate,
                "kept": report.total_kept,
                "% A-C": round(report.percent_ac, 2),
            }
            for name in PRUNABLE:
                row[f"{name} kept"] = report.kept[name]
                row[f"{name} effective"] = report.effective[name]
            rows.append(row)
    return pd.DataFrame(rows)
