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
cheap first pass that says which configurations are worth training. :func:`mp_against_tcmp`
then reads the trained runs (relaxed MP and TCMP, seeds averaged) of each network variant
side by side: where MP disconnects, does TCMP's accuracy pull ahead?
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from torch import Tensor

from tcmplib.model import PRUNABLE, GCNConfig
from tcmplib.pruning.masks import SCOPES, scoped_topk_masks
from tcmplib.topology import analyze

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "one_shot_connectivity",
    "load_one_shot",
    "summarize_one_shot",
    "one_shot_across",
    "across_numbers",
    "plot_one_shot",
    "mp_against_tcmp",
    "describe_runs",
    "tcmp_lead",
    "kept_by_tensor",
    "loss_range",
    "untrained_connectivity",
    "per_head_numbers",
]


def one_shot_connectivity(
    weights: Mapping[str, Tensor],
    config: GCNConfig,
    rates: Iterable[float] = (0.75, 0.95, 0.99),
    scopes: Iterable[str] = SCOPES,
) -> pd.DataFrame:
    """% A-C of one-shot magnitude pruning of ``weights`` (the four tensors of a trained
    :class:`~tcmplib.model.AttentionGCN`) at every rate and scope.

    One row per (scope, rate): the kept weights in all and per tensor, the effective ones
    (kept, accessible and co-accessible) per tensor, % A-C (NaN when nothing is kept), and
    the convolution channels and attention heads that are still on an input-to-output path.
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
            alive = report.accessible["channels"] & report.coaccessible["channels"]
            assert report.live_heads is not None  # the attention GCN always has heads
            row: dict[str, object] = {
                "scope": scope,
                "rate (%)": 100.0 * rate,
                "kept": report.total_kept,
                "% A-C": round(report.percent_ac, 2),
                "live channels": int(alive.sum()),
                "live heads": int(report.live_heads.sum()),
            }
            for name in PRUNABLE:
                row[f"{name} kept"] = report.kept[name]
                row[f"{name} effective"] = report.effective[name]
            rows.append(row)
    return pd.DataFrame(rows)


def load_one_shot(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The rows that ``tcmp disconnect --json`` wrote (one per network, scope and rate)."""
    source = Path(path)
    try:
        document = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        detail = " ".join(str(error).split())
        raise ValueError(f"{source}: expected the JSON of tcmp disconnect ({detail})") from None
    rows = document.get("rows") if isinstance(document, dict) else None
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{source}: expected a non-empty list 'rows' (tcmp disconnect --json)")
    return pd.DataFrame(rows)


def summarize_one_shot(rows: pd.DataFrame) -> pd.DataFrame:
    """% A-C per scope and rate over networks: mean, std, min, max (and the network count)."""
    grouped = rows.groupby(["scope", "rate (%)"])["% A-C"]
    table = grouped.agg(["mean", "std", "min", "max", "count"]).round(2)
    return table.rename(columns={"count": "networks"}).reset_index()


def one_shot_across(files: Mapping[str, str | os.PathLike[str]]) -> pd.DataFrame:
    """The study's one-shot table: mean % A-C over the trained networks of each variant
    (label -> ``tcmp disconnect --json`` file), one row per scope and rate, one column per
    variant, with the number of networks behind each in the header. A variant whose file
    does not exist yet is left out."""
    columns = {}
    for label, path in files.items():
        if not Path(path).is_file():
            continue
        summary = summarize_one_shot(load_one_shot(path)).set_index(["scope", "rate (%)"])
        networks = int(summary["networks"].min())
        columns[f"{label} ({networks} network{'s' if networks > 1 else ''})"] = summary["mean"]
    if not columns:
        raise ValueError(f"files: none of {', '.join(map(str, files.values()))} exists yet")
    return pd.DataFrame(columns)


def across_numbers(across: pd.DataFrame, paper: float = 21.20) -> dict[str, str]:
    """Chapter 4b's sentence on :func:`one_shot_across` at 99%: the range of the variants'
    mean % A-C per scope, and whether any falls under half (and under the paper's MP)."""
    at_99 = across.xs(99.0, level="rate (%)")
    parts = []
    for scope, row in at_99.iterrows():
        parts.append(f"{row.min():.2f} to {row.max():.2f}% with a {scope} budget")
    (scope, variant), lowest = at_99.stack().idxmin(), float(at_99.stack().min())
    if lowest >= 50.0:
        verdict = (
            "none of them falls under half, let alone to the paper's "
            f"{paper:.2f}%: trained magnitudes line up along paths whatever the attention "
            "and the filters, and what disconnects is pruning while training"
        )
    else:
        verdict = (
            f"the lowest, {variant} with a {scope} budget, keeps {lowest:.2f}% "
            f"(the paper's MP: {paper:.2f}%)"
        )
    sentence = (
        f"At 99%, the {at_99.shape[1]} variants' one-shot MP keeps "
        f"{' and '.join(parts)} of its kept weights A-C; {verdict}."
    )
    return {"across_sentence": sentence}


def plot_one_shot(summary: pd.DataFrame, reference: pd.DataFrame | None = None) -> Figure:
    """% A-C against the rate, one line per scope (mean, min-max band); ``reference`` (rows
    of :func:`one_shot_connectivity`) adds dashed lines, e.g. an untrained network."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    # Rates as evenly spaced categories: 95 and 99% are where the scopes part.
    rates = sorted(set(summary["rate (%)"]))
    where = {rate: position for position, rate in enumerate(rates)}
    for scope, rows in summary.groupby("scope", sort=False):
        x = rows["rate (%)"].map(where)
        line = ax.plot(x, rows["mean"], marker="o", label=f"{scope} (trained)")
        ax.fill_between(x, rows["min"], rows["max"], alpha=0.2, color=line[0].get_color())
    if reference is not None:
        for scope, rows in reference.groupby("scope", sort=False):
            x = rows["rate (%)"].map(where)
            ax.plot(x, rows["% A-C"], "--", marker="x", label=f"{scope} (untrained)")
    ax.set_xticks(range(len(rates)), [f"{rate:g}" for rate in rates])
    ax.set_xlabel("pruning rate (%)")
    ax.set_ylabel("% A-C of the kept weights")
    ax.set_ylim(-2, 102)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def mp_against_tcmp(
    folders: Mapping[str, str | os.PathLike[str]],
    rates: Iterable[float] = (0.95, 0.99),
    methods: Iterable[str] = ("mp", "tcmp"),
) -> pd.DataFrame:
    """The trained runs of each network variant (``{variant: results folder}``), side by side.

    One row per (variant, rate, method) that has runs, rates in %: the seeds, the mean and
    range of % A-C, and the mean class-averaged accuracy with its standard deviation over
    seeds (NaN for one seed). (Variant, rate, method) without runs are left out; a folder
    that does not exist is an error.
    """
    from tcmplib.tables import load_results

    wanted = [float(rate) for rate in rates]
    methods = list(methods)
    rows = []
    for variant, folder in folders.items():
        if not Path(folder).is_dir():
            raise ValueError(f"{folder}: expected a results folder for the variant {variant!r}")
        results = load_results(folder)
        for rate in wanted:
            for method in methods:
                runs = results[(results["method"] == method) & (results["target_rate"] == rate)]
                if runs.empty:
                    continue
                accuracy = runs["class_avg_accuracy"]
                rows.append({
                    "variant": variant,
                    "rate (%)": 100.0 * rate,
                    "method": method,
                    "seeds": len(runs),
                    "% A-C": float(runs["percent_ac"].mean()),
                    "% A-C min": float(runs["percent_ac"].min()),
                    "% A-C max": float(runs["percent_ac"].max()),
                    "accuracy (%)": float(accuracy.mean()),
                    "± std": float(accuracy.std(ddof=1)) if len(runs) > 1 else float("nan"),
                })  # fmt: skip
    columns = ["variant", "rate (%)", "method", "seeds", "% A-C", "% A-C min", "% A-C max",
               "accuracy (%)", "± std"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns).round(2)


def _row(table: pd.DataFrame, variant: str, rate: float, method: str) -> pd.Series | None:
    found = table[
        (table["variant"] == variant) & (table["rate (%)"] == rate) & (table["method"] == method)
    ]
    return None if found.empty else found.iloc[0]


def _seeds(count: int) -> str:
    return "1 seed" if count == 1 else f"{count} seeds"


def describe_runs(table: pd.DataFrame, variant: str, rate: float, method: str) -> str:
    """One row of :func:`mp_against_tcmp` in words (rate in %): its % A-C (with the range
    over seeds when there are several) and accuracy, or that it has not been run."""
    row = _row(table, variant, rate, method)
    if row is None:
        return "not run yet"
    seeds = int(row["seeds"])
    ac = f"{row['% A-C']:.2f}% A-C"
    if seeds > 1 and row["% A-C min"] != row["% A-C max"]:
        ac += f" ({row['% A-C min']:.2f} to {row['% A-C max']:.2f})"
    spread = "" if seeds == 1 else f" ± {row['± std']:.2f}"
    return f"{ac} and {row['accuracy (%)']:.2f}{spread}% accuracy ({_seeds(seeds)})"


def tcmp_lead(table: pd.DataFrame, variant: str, rate: float) -> str:
    """TCMP's accuracy minus MP's at ``rate`` (%) for ``variant``, in words, next to the seed
    spreads it has to exceed; or what is missing."""
    mp, tcmp = _row(table, variant, rate, "mp"), _row(table, variant, rate, "tcmp")
    if mp is None or tcmp is None:
        return "not measured yet (one of the two methods has no run)"
    lead = tcmp["accuracy (%)"] - mp["accuracy (%)"]
    spreads = [row["± std"] for row in (mp, tcmp) if row["seeds"] > 1]
    spread = max(spreads) if len(spreads) == 2 else math.nan
    text = f"{lead:+.2f} points"
    if math.isnan(spread):
        return f"{text} (a single seed on one side at least: no spread to compare it with)"
    beyond = "beyond" if abs(lead) > spread else "within"
    return f"{text}, {beyond} the larger seed spread ({spread:.2f})"


def kept_by_tensor(
    folders: Mapping[str, str | os.PathLike[str]], rate: float = 0.99, method: str = "mp"
) -> pd.DataFrame:
    """Where ``method``'s runs at ``rate`` keep their weights, per variant and tensor: kept
    and A-C weights summed over seeds, and the tensor's % A-C (from the records' per-tensor
    breakdown, :func:`tcmplib.findings.ac_by_tensor`)."""
    from tcmplib.findings import ac_by_tensor

    frames = []
    for variant, folder in folders.items():
        rows = ac_by_tensor(folder, methods=(method,))
        rows = rows[rows["rate (%)"] == 100.0 * rate]
        if rows.empty:
            continue
        summed = rows.groupby("tensor", sort=False)[["weights", "kept", "A-C"]].sum()
        summed["seeds"] = rows.groupby("tensor", sort=False)["seed"].nunique()
        summed["% A-C"] = (100.0 * summed["A-C"] / summed["kept"]).round(2)
        frames.append(summed.reset_index().assign(variant=variant))
    columns = ["variant", "tensor", "seeds", "weights", "kept", "A-C", "% A-C"]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


def loss_range(results_dir: str | os.PathLike[str], method: str, rate: float) -> str:
    """The lowest and highest training loss that ``method``'s runs at ``rate`` recorded
    (every evaluated epoch, all seeds), in words; or that there is no such run."""
    from tcmplib.records import read_folder

    losses = [
        row["loss"]
        for _, record in read_folder(results_dir)
        if record.config.method == method and record.config.rate == rate
        for row in record.report.history
        if "loss" in row
    ]
    if not losses:
        return f"(no {method} run at {100 * rate:g}% yet)"
    return f"{min(losses):.2f} and {max(losses):.2f}"


def untrained_connectivity(config: GCNConfig, seed: int = 0) -> pd.DataFrame:
    """:func:`one_shot_connectivity` of a freshly initialized network (Glorot, ``seed``):
    the first mask of a method that ties its start to the initial magnitudes."""
    import torch

    from tcmplib.model import AttentionGCN

    torch.manual_seed(seed)
    network = AttentionGCN(config)
    return one_shot_connectivity(
        {name: w.detach() for name, w in network.prunable().items()}, config
    )


def per_head_numbers(config: GCNConfig, fresh: pd.DataFrame) -> dict[str, str]:
    """What chapter 4b quotes of a per-head network: its sizes, the ratio of the Glorot
    bounds of its filters and its dense layer, how many times the filters outnumber the
    budget at 99%, and what the global first mask at 99% (``fresh``, rows of
    :func:`untrained_connectivity`) keeps of each."""
    first = fresh.set_index(["scope", "rate (%)"]).loc[("global", 99.0)]
    filters = config.heads * config.d_in * config.channels
    fc_bound = math.sqrt(6 / (config.fc_in + config.classes))
    wv_bound = math.sqrt(6 / (config.d_in + config.channels))
    return {
        "per_head_channels": f"{config.channels}",
        "per_head_weights": f"{config.num_weights():,}",
        "per_head_wv": f"{filters:,}",
        "per_head_columns": f"{config.value_columns:,}",
        "per_head_fc_in": f"{config.fc_in:,}",
        "per_head_scale_ratio": f"{wv_bound / fc_bound:.1f}",
        "per_head_wv_budget": f"{filters / round(0.01 * config.num_weights()):.1f}",
        "per_head_first_fc": f"{int(first['fc kept']):,}",
        "per_head_first_wv": f"{int(first['wv kept']):,}",
    }
