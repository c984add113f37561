"""The head atlas as a picture: one heatmap per pattern (a dropdown switches), layer x head.

A source whose heads are the local LLM's pairs (``L21.H4``) gets a layers-by-heads grid, so heads
that do the same job show as bands; any other source (relation heads, baselines) gets one row of
its named heads. Scores are in [0, 1] on the house sequential colour scale (never a rainbow).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import plotly.graph_objects as go

from llmcomp.plots.export import write_figure
from llmcomp.plots.heatmap import WEIGHTS_SCALE

if TYPE_CHECKING:
    from llmcomp.attention.atlas import Atlas


def _trace(atlas: Atlas, pattern: str, visible: bool) -> go.Heatmap:
    name = html.escape(pattern, quote=False)
    grid = atlas.grid(pattern)
    common = dict(zmin=0.0, zmax=1.0, colorscale=WEIGHTS_SCALE, visible=visible, name=name, xgap=1, ygap=1,
                  hoverongaps=False, colorbar={"title": "score"})  # fmt: skip
    if grid is not None:
        layers, heads, values = grid
        return go.Heatmap(
            z=values,
            x=heads,
            y=layers,
            hovertemplate=f"layer %{{y}}, head %{{x}}<br>{name}: %{{z:.3f}}<extra></extra>",
            **common,
        )
    p = atlas.patterns.index(pattern)
    labels = [html.escape(label, quote=False) for label in atlas.labels]
    return go.Heatmap(
        z=[[float(v) for v in atlas.scores[p].tolist()]],
        x=list(range(len(labels))),
        y=[0],
        customdata=[labels],
        hovertemplate=f"%{{customdata}}<br>{name}: %{{z:.3f}}<extra></extra>",
        **common,
    )


def atlas_figure(atlas: Atlas, title: str | None = None) -> go.Figure:
    """Heatmaps of ``atlas.scores``, the first pattern shown, a dropdown for the others."""
    fig = go.Figure([_trace(atlas, p, i == 0) for i, p in enumerate(atlas.patterns)])
    first = atlas.grid(atlas.patterns[0])
    grid = first is not None
    buttons = [
        {"label": html.escape(p, quote=False), "method": "update",
         "args": [{"visible": [j == i for j in range(len(atlas.patterns))]}]}
        for i, p in enumerate(atlas.patterns)
    ]  # fmt: skip
    head = title or f"head atlas: {atlas.sentences} sentences"
    fig.update_layout(
        title=html.escape(head, quote=False),
        updatemenus=[{"buttons": buttons, "x": 1.0, "y": 1.12, "xanchor": "right", "yanchor": "top"}],
        plot_bgcolor="#d4d4d4",
        height=max(320, 22 * len(first[0]) + 160) if first is not None else 320,
    )
    if grid:
        fig.update_xaxes(title="head", dtick=1)
        fig.update_yaxes(title="layer", dtick=1, autorange="reversed")
    else:
        fig.update_xaxes(
            title="head", tickvals=list(range(len(atlas.labels))),
            ticktext=[html.escape(x, quote=False) for x in atlas.labels],
        )  # fmt: skip
        fig.update_yaxes(visible=False)
    return fig


def write_atlas_figure(atlas: Atlas, out: str | Path, title: str | None = None) -> dict[str, Path]:
    """``atlas.html`` (plotly inline: it opens offline) and ``atlas.png`` when kaleido is installed."""
    return write_figure(atlas_figure(atlas, title), out, "atlas")
