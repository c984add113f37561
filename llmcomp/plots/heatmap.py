"""Plotly heatmaps of word-by-word attention, and plain-data exports of the matrices.

Words repeat ("the ... the"), so axes are numeric positions labelled ``word (i)`` through
``tickvals``/``ticktext``; category axes would merge the repeats and shift every later row. The
future half (above the diagonal) is NaN with ``hoverongaps=False`` over a grey plot background, so
it reads as "not allowed" rather than "zero". Row i is word i (the query), read top to bottom.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

FUTURE_GREY = "#d4d4d4"
WEIGHTS_SCALE = "Blues"  # sequential, perceptually ordered; not a rainbow
DIFF_SCALE = "RdBu"  # diverging around 0 for differences
HOVER = "query: %{customdata[0]}<br>key: %{customdata[1]}<br>%{customdata[2]}: %{z:.4f}<extra></extra>"
HOVER_SCALED = (
    "query: %{customdata[0]}<br>key: %{customdata[1]}<br>%{customdata[2]}: %{customdata[3]}"
    "<br>share of the row's largest: %{z:.3f}<extra></extra>"
)


def _text(s: str | None) -> str | None:
    """Plotly reads a subset of HTML in titles and labels; names typed by a person must stay text."""
    return None if s is None else html.escape(s, quote=False)


def word_labels(words: Sequence[str]) -> list[str]:
    """``word (i)`` for every position, so that repeated words stay distinct."""
    return [f"{w} ({i})" for i, w in enumerate(words)]


def _plot_labels(words: Sequence[str]) -> list[str]:
    return [_text(label) for label in word_labels(words)]


def as_matrix(m: Any) -> np.ndarray:
    """A (T, T) float array from a tensor, array or nested list; raise ValueError for anything else."""
    if hasattr(m, "detach"):
        m = m.detach().cpu().numpy()
    a = np.asarray(m, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"expected a square (T, T) matrix, got shape {a.shape}")
    return a


def causal_masked(m: Any) -> np.ndarray:
    """Copy of ``m`` with the future (above the diagonal) set to NaN."""
    a = as_matrix(m).copy()
    a[np.triu_indices(a.shape[0], k=1)] = np.nan
    return a


def _hover_data(labels: list[str], value_name: str, true: np.ndarray | None = None) -> list[list[list[str]]]:
    if true is None:
        return [[[q, k, value_name] for k in labels] for q in labels]
    return [[[q, k, value_name, f"{true[i, j]:.4f}"] for j, k in enumerate(labels)] for i, q in enumerate(labels)]


def row_scaled(m: Any) -> np.ndarray:
    """Each row divided by its largest allowed weight (a row of zeros stays zero): row 0 always holds
    weight 1 and would wash every later row out of a shared colour scale."""
    a = causal_masked(m)
    if not a.size:
        return a
    top = np.nanmax(a, axis=1, keepdims=True)  # the diagonal is allowed: no row is all NaN
    return a / np.where(top > 0, top, 1.0)


def _trace(m: np.ndarray, labels: list[str], value_name: str, true: np.ndarray | None = None, **kw: Any) -> go.Heatmap:
    """``true``: the weights hover shows when the colours (``m``) are rescaled."""
    t = len(labels)
    # plain lists with None for the future (not numpy): plotly would ship numpy as base64 typed arrays,
    # which older plotly.js builds and API clients cannot read
    z = [[None if math.isnan(v) else v for v in row] for row in causal_masked(m).tolist()]
    return go.Heatmap(
        z=z,
        x=list(range(t)),
        y=list(range(t)),
        customdata=_hover_data(labels, value_name, true),
        hovertemplate=HOVER if true is None else HOVER_SCALED,
        hoverongaps=False,
        xgap=1,
        ygap=1,
        **kw,
    )


def _axes(fig: go.Figure, labels: list[str], row: int | None = None, col: int | None = None) -> None:
    t = len(labels)
    where = {"row": row, "col": col} if row is not None else {}
    fig.update_xaxes(
        tickvals=list(range(t)),
        ticktext=labels,
        tickangle=-60,
        showgrid=False,
        zeroline=False,
        range=[-0.5, t - 0.5],
        title_text="attended word (key)",
        **where,
    )
    fig.update_yaxes(
        tickvals=list(range(t)),
        ticktext=labels,
        autorange="reversed",
        showgrid=False,
        zeroline=False,
        title_text="word (query)",
        **where,
    )


def _size(t: int) -> int:
    return int(min(900, max(360, 160 + 26 * t)))


def _check(m: np.ndarray, words: Sequence[str]) -> None:
    if m.shape[0] != len(words):
        raise ValueError(f"matrix is {m.shape[0]}x{m.shape[0]} but there are {len(words)} words")


def attention_heatmap(
    matrix: Any,
    words: Sequence[str],
    title: str | None = None,
    generated_from: int | None = None,
    zmax: float | None = None,
    row_scale: bool = False,
) -> go.Figure:
    """One head's (T, T) attention over ``words``. ``generated_from``: first generated word (draws a divider).
    ``row_scale``: colour each row by its share of the row's largest weight (hover keeps the true weights)."""
    m = as_matrix(matrix)
    _check(m, words)
    labels = _plot_labels(words)
    rows = labels
    if generated_from is not None:  # mark the rows of generated words (hover and x axis keep plain labels)
        rows = [f"▸ {lab}" if i >= generated_from else lab for i, lab in enumerate(labels)]
    if row_scale:
        colour, true, top, bar = row_scaled(m), m, 1.0, "share of row max"
    else:
        colour, true, bar = m, None, "weight"
        top = zmax if zmax is not None else max(float(np.nanmax(m)) if m.size else 1.0, 1e-6)
    trace = _trace(colour, labels, "weight", true, colorscale=WEIGHTS_SCALE, zmin=0.0, zmax=top,
                   colorbar={"title": {"text": bar}})  # fmt: skip
    fig = go.Figure(trace)
    _axes(fig, labels)
    fig.update_yaxes(ticktext=rows)
    if generated_from is not None and 0 < generated_from < len(words):
        fig.add_hline(y=generated_from - 0.5, line_dash="dash", line_color="#b45309", line_width=2)
        fig.add_annotation(
            x=len(words) - 0.5,
            y=generated_from - 0.5,
            text="generated ▾",
            showarrow=False,
            xanchor="right",
            yanchor="top",
            font={"color": "#b45309"},
        )
    size = _size(len(words))
    fig.update_layout(
        title=_text(title),
        plot_bgcolor=FUTURE_GREY,
        height=size,
        margin={"l": 10, "r": 10, "t": 50 if title else 20, "b": 10},
    )
    return fig


def side_by_side(
    matrix_a: Any, matrix_b: Any, words: Sequence[str], title_a: str = "A", title_b: str = "B"
) -> go.Figure:
    """Two sources' attention on the same sentence, one shared colour scale."""
    a, b = as_matrix(matrix_a), as_matrix(matrix_b)
    _check(a, words)
    _check(b, words)
    labels = _plot_labels(words)
    top = max(float(np.nanmax(a)) if a.size else 1.0, float(np.nanmax(b)) if b.size else 1.0, 1e-6)
    fig = make_subplots(rows=1, cols=2, subplot_titles=(_text(title_a), _text(title_b)), horizontal_spacing=0.18)
    for col, m in ((1, a), (2, b)):
        fig.add_trace(_trace(m, labels, "weight", coloraxis="coloraxis"), row=1, col=col)
        _axes(fig, labels, row=1, col=col)
    fig.update_layout(
        coloraxis={"colorscale": WEIGHTS_SCALE, "cmin": 0.0, "cmax": top, "colorbar": {"title": {"text": "weight"}}},
        plot_bgcolor=FUTURE_GREY,
        height=_size(len(words)),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig


def difference_heatmap(matrix_a: Any, matrix_b: Any, words: Sequence[str], title: str = "A − B") -> go.Figure:
    """``A - B`` on a diverging scale centred on 0 (red: A attends more, blue: B attends more)."""
    a, b = as_matrix(matrix_a), as_matrix(matrix_b)
    _check(a, words)
    if a.shape != b.shape:
        raise ValueError(f"cannot subtract matrices of shapes {a.shape} and {b.shape}")
    d = a - b
    lim = max(float(np.nanmax(np.abs(np.tril(d)))) if d.size else 0.0, 1e-6)
    labels = _plot_labels(words)
    fig = go.Figure(
        _trace(
            d,
            labels,
            "difference",
            colorscale=DIFF_SCALE,
            reversescale=True,
            zmin=-lim,
            zmax=lim,
            zmid=0.0,
            colorbar={"title": {"text": "A − B"}},
        )
    )
    _axes(fig, labels)
    fig.update_layout(
        title=_text(title),
        plot_bgcolor=FUTURE_GREY,
        height=_size(len(words)),
        margin={"l": 10, "r": 10, "t": 50, "b": 10},
    )
    return fig


def _heads(matrix: Any) -> np.ndarray:
    if hasattr(matrix, "detach"):
        matrix = matrix.detach().cpu().numpy()
    a = np.asarray(matrix, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[1] != a.shape[2]:
        raise ValueError(f"expected (T, T) or (heads, T, T), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("the matrix has NaN or infinite values")
    return a


def matrix_to_csv(matrix: Any, words: Sequence[str]) -> str:
    """Wide CSV: one row per (head, query word), one column per key word labelled ``word (j)``."""
    a = _heads(matrix)
    if a.shape[1] != len(words):
        raise ValueError(f"matrix is {a.shape[1]}x{a.shape[1]} but there are {len(words)} words")
    labels = word_labels(words)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["head", "query", *labels])
    for h in range(a.shape[0]):
        for i, lab in enumerate(labels):
            w.writerow([h, lab, *(f"{x:.6g}" for x in a[h, i])])
    return buf.getvalue()


def matrix_to_json(matrix: Any, words: Sequence[str], meta: dict[str, Any] | None = None) -> str:
    """``{"words": [...], "heads": H, "matrix": [[[...]]], ...meta}``; row i of head h is ``matrix[h][i]``."""
    a = _heads(matrix)
    if a.shape[1] != len(words):
        raise ValueError(f"matrix is {a.shape[1]}x{a.shape[1]} but there are {len(words)} words")
    doc = {
        **(meta or {}),
        "words": list(words),
        "heads": int(a.shape[0]),
        "matrix": [[[round(float(x), 7) for x in row] for row in head] for head in a],
    }
    return json.dumps(doc, ensure_ascii=False, allow_nan=False)
