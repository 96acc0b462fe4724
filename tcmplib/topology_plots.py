"""Pictures of accessibility: hand-sized networks drawn as layered graphs.

Each kept connection is coloured by its :class:`~tcmplib.topology.EdgeClass` (consistent,
not accessible, not co-accessible); pruned connections are drawn faint so the reader sees
what the mask removed. Units that are accessible and co-accessible are filled, dead units
hollow. Colours come from the Okabe-Ito palette, which stays distinct for colour-blind
readers and in greyscale print.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from tcmplib.model import GCNConfig
from tcmplib.topology import EdgeClass, MaskedLink, Masks, TopologyReport, analyze, classify_edges

__all__ = ["EDGE_STYLE", "draw_chain", "draw_gcn", "draw_ac_by_rate"]

#: Colour, line width, alpha and label of each edge class.
EDGE_STYLE: dict[int, tuple[str, float, float, str]] = {
    EdgeClass.PRUNED: ("#bbbbbb", 0.7, 0.6, "pruned"),
    EdgeClass.CONSISTENT: ("#0072B2", 2.2, 1.0, "kept, accessible and co-accessible"),
    EdgeClass.NOT_ACCESSIBLE: ("#E69F00", 2.2, 1.0, "kept, not accessible (disconnected)"),
    EdgeClass.NOT_COACCESSIBLE: ("#CC79A7", 2.2, 1.0, "kept, not co-accessible (dangling)"),
}
FAN_OUT_COLOUR = "#009E73"
# Fill of a unit, alive or dead, in the drawing and its legend.
_UNIT_FILL = {True: "#333333", False: "white"}


def _positions(
    sizes: Sequence[int], gaps: Sequence[Sequence[float]] | None = None
) -> list[list[tuple[float, float]]]:
    """Unit coordinates: layer ``k`` at ``x = k``, units centred vertically (top first)."""
    layers = []
    for k, size in enumerate(sizes):
        offsets = gaps[k] if gaps is not None else [0.0] * size
        span = size - 1 + offsets[-1] if size else 0.0
        layers.append([(float(k), span / 2 - (i + offsets[i])) for i in range(size)])
    return layers


def _draw_link(
    ax: Axes,
    codes: torch.Tensor,
    sources: list[tuple[float, float]],
    targets: list[tuple[float, float]],
) -> None:
    # Faint pruned edges first so that kept edges are drawn over them.
    for code in (
        EdgeClass.PRUNED,
        EdgeClass.NOT_ACCESSIBLE,
        EdgeClass.NOT_COACCESSIBLE,
        EdgeClass.CONSISTENT,
    ):
        colour, width, alpha, _ = EDGE_STYLE[code]
        for i, j in (codes == code).nonzero().tolist():
            (x0, y0), (x1, y1) = sources[i], targets[j]
            ax.plot([x0, x1], [y0, y1], "-", color=colour, lw=width, alpha=alpha, zorder=1)


def _draw_units(
    ax: Axes,
    report: TopologyReport,
    layers: list[list[tuple[float, float]]],
    labels: Sequence[Sequence[str]] | None,
) -> None:
    top = max(y for layer in layers for _, y in layer) + 1.0
    bottom = min(y for layer in layers for _, y in layer) - 0.5
    for k, name in enumerate(report.graph.unit_names):
        alive = report.alive[name].tolist()
        for i, (x, y) in enumerate(layers[k]):
            ax.scatter(
                [x],
                [y],
                s=260,
                zorder=3,
                edgecolors="black",
                linewidths=1.2,
                facecolors=_UNIT_FILL[bool(alive[i])],
            )
            if labels is not None:
                ax.annotate(
                    labels[k][i],
                    (x, y),
                    xytext=(0, 13),
                    textcoords="offset points",
                    ha="center",
                    fontsize=8,
                    zorder=4,
                )
        ax.text(k, top, name, ha="center", va="center", fontsize=10, fontweight="bold")
    # Text does not enter matplotlib's autoscaling: make room for the layer names.
    ax.set_ylim(bottom, top + 0.5)


def _unit_handle(alive: bool) -> Line2D:
    """The legend entry of an alive or a dead unit."""
    return Line2D(
        [],
        [],
        marker="o",
        ls="",
        markerfacecolor=_UNIT_FILL[alive],
        markeredgecolor="black",
        markersize=10,
        label="alive unit" if alive else "dead unit",
    )


def _legend(ax: Axes, fan_out: bool) -> None:
    handles = [
        Line2D([], [], color=c, lw=w, alpha=a, label=label)
        for c, w, a, label in EDGE_STYLE.values()
    ]
    if fan_out:
        handles.append(
            Line2D(
                [], [], color=FAN_OUT_COLOUR, lw=1.2, ls="--", label="attention fan-out (no weight)"
            )
        )
    handles += [_unit_handle(alive=True), _unit_handle(alive=False)]
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.02),
        ncol=2,
        frameon=False,
        fontsize=9,
    )


def draw_chain(masks: Masks, title: str | None = None) -> Figure:
    """A plain chain drawn as a layered graph, every edge coloured by its class."""
    report = analyze(masks)
    if report.graph.attention is not None:
        raise ValueError("masks: expected a plain chain; use draw_gcn for the attention GCN")
    layers = _positions(report.graph.unit_sizes)
    height = max(report.graph.unit_sizes)
    fig, ax = plt.subplots(figsize=(2.2 * len(layers) + 1, 0.75 * height + 2.4))
    for index, link in enumerate(report.graph.links):
        assert isinstance(link, MaskedLink)
        _draw_link(ax, classify_edges(report, link.tensor), layers[index], layers[index + 1])
    _draw_units(ax, report, layers, None)
    _legend(ax, fan_out=False)
    ax.set_title(title or f"% A-C = {report.percent_ac:.1f}")
    ax.axis("off")
    fig.tight_layout()
    return fig


def _gcn_gaps(config: GCNConfig) -> list[list[float]]:
    """Extra vertical space between the heads of the dense-layer inputs, for legibility."""
    fc_gaps = [
        0.6 * (n * config.heads + h)
        for n in range(config.nodes)
        for h in range(config.heads)
        for _ in range(config.channels)
    ]
    return [[0.0] * config.d_in, [0.0] * config.channels, fc_gaps, [0.0] * config.classes]


def draw_gcn(masks: Mapping[str, torch.Tensor], title: str | None = None) -> Figure:
    """A hand-sized attention GCN: its unit graph (left) and its Q/K masks per head (right).

    Dense-layer inputs are labelled ``n,h,c``. In the Q/K panel, a cell is coloured like an
    edge: consistent (head live and partner column kept), not co-accessible, or pruned.
    """
    report = analyze(masks)
    config = report.graph.attention
    if config is None:
        raise ValueError("masks: expected the attention GCN's wq, wk, wv, fc; got a plain chain")
    if config.fc_in > 64:
        raise ValueError(
            f"masks: expected a hand-sized GCN (<= 64 dense inputs), got {config.fc_in}"
        )
    gaps = _gcn_gaps(config)
    sizes = report.graph.unit_sizes
    layers = _positions(sizes, gaps)
    labels = [
        [f"x{i}" for i in range(config.d_in)],
        [f"c{c}" for c in range(config.channels)],
        [
            f"{n},{h},{c}"
            for n in range(config.nodes)
            for h in range(config.heads)
            for c in range(config.channels)
        ],
        [f"k{k}" for k in range(config.classes)],
    ]
    fig = plt.figure(
        figsize=(12, 0.42 * (sizes[2] + 0.6 * config.nodes * config.heads) + 2.6),
        layout="constrained",
    )
    grid = fig.add_gridspec(2, 2, width_ratios=[3, 1.3])
    ax = fig.add_subplot(grid[:, 0])
    _draw_link(ax, classify_edges(report, "wv"), layers[0], layers[1])
    channels_ok = report.accessible["channels"].tolist()
    fc_ok = report.coaccessible["fc_inputs"].tolist()
    for target, (x1, y1) in enumerate(layers[2]):
        source = target % config.channels
        x0, y0 = layers[1][source]
        carries = channels_ok[source] and fc_ok[target]
        ax.plot(
            [x0, x1],
            [y0, y1],
            "--",
            color=FAN_OUT_COLOUR if carries else "#bbbbbb",
            lw=1.2 if carries else 0.6,
            zorder=1,
        )
    _draw_link(ax, classify_edges(report, "fc"), layers[2], layers[3])
    _draw_units(ax, report, layers, labels)
    _legend(ax, fan_out=True)
    ax.set_title(title or f"% A-C = {report.percent_ac:.1f}")
    ax.axis("off")

    # Pruned cells are left almost white so the kept entries stand out.
    palette = ["#f2f2f2", *(EDGE_STYLE[code][0] for code in sorted(EDGE_STYLE)[1:])]
    cmap = ListedColormap(palette)
    live = report.live_heads.tolist() if report.live_heads is not None else []
    for row, tensor in enumerate(("wq", "wk")):
        codes = classify_edges(report, tensor)  # (heads, d_in, qk_dim)
        side = fig.add_subplot(grid[row, 1])
        image = torch.cat([codes[h] for h in range(config.heads)], dim=1)
        side.imshow(image, cmap=cmap, vmin=0, vmax=len(palette) - 1)
        for h in range(1, config.heads):
            side.axvline(h * config.qk_dim - 0.5, color="black", lw=2)
        side.set_xticks(
            range(config.heads * config.qk_dim),
            [f"j{j}" for _ in range(config.heads) for j in range(config.qk_dim)],
            fontsize=8,
        )
        side.set_yticks(range(config.d_in), [f"x{i}" for i in range(config.d_in)], fontsize=8)
        state = " | ".join(f"head {h} {'live' if ok else 'dead'}" for h, ok in enumerate(live))
        side.set_title(f"{tensor}: {state}", fontsize=9)
    return fig


def draw_ac_by_rate(sweeps: Mapping[str, Sequence[Mapping[str, float]]]) -> Figure:
    """% A-C against the share of kept weights, one line per weight set.

    ``sweeps`` maps a label to rows of :func:`tcmplib.topology.magnitude_sweep`. The kept
    share is on a log scale, reversed, so that high pruning rates get the room they need.
    """
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for label, rows in sweeps.items():
        kept = [100 * (1 - row["pruning rate"]) for row in rows]
        ax.plot(kept, [row["% A-C"] for row in rows], "o-", label=label)
    ax.set_xscale("log")
    ticks = [50, 25, 10, 5, 2, 1, 0.5]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.invert_xaxis()
    ax.set_xlabel("kept weights (% of all, log scale)")
    ax.set_ylabel("% A-C (effective / kept)")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend(frameon=False)
    fig.tight_layout()
    return fig
