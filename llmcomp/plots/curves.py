"""Loss curves: one run's train and validation loss, and several runs' losses overlaid (one colour per
run, smoothed, against the step or the training time; or one colour per source for a comparison)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

if TYPE_CHECKING:
    from llmcomp.training.run_summary import RunSummary

TRAIN_COLOUR = "#60a5fa"
VAL_COLOUR = "#b91c1c"
#: qualitative colours for overlaid runs (colour-blind friendly, from Okabe and Ito)
RUN_COLOURS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000")


def _points(metrics: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    rows = [(int(m["step"]), float(m[key])) for m in metrics if key in m and m.get(key) is not None]
    return [s for s, _ in rows], [v for _, v in rows]


def loss_figure(
    metrics: Sequence[Mapping[str, Any]], title: str | None = None, total_steps: int | None = None
) -> go.Figure:
    """Train loss (line) and validation loss (line with markers) against the step."""
    fig = go.Figure()
    sx, sy = _points(metrics, "train_loss")
    vx, vy = _points(metrics, "val_loss")
    fig.add_trace(go.Scatter(x=sx, y=sy, name="train loss", mode="lines+markers", line={"color": TRAIN_COLOUR}))
    fig.add_trace(go.Scatter(x=vx, y=vy, name="val loss", mode="lines+markers", line={"color": VAL_COLOUR, "width": 3}))
    if total_steps is None and metrics:
        total_steps = metrics[-1].get("total_steps")
    last = max(sx + vx, default=0)
    # the whole run's span once the points fill a fair part of it; before that, the points so far
    fixed = bool(total_steps) and last >= 0.25 * total_steps
    fig.update_xaxes(title_text="step", range=[0, total_steps] if fixed else None, rangemode="tozero")
    fig.update_yaxes(title_text="cross-entropy (nats per word)", rangemode="tozero")
    fig.update_layout(
        title=title,
        height=380,
        margin={"l": 10, "r": 10, "t": 40 if title else 20, "b": 10},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 1, "xanchor": "right"},
        template="plotly_white",
    )
    if not metrics:
        fig.add_annotation(text="no points yet", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return fig


def val_curves_figure(runs: Mapping[str, Sequence[Mapping[str, Any]]], title: str | None = None) -> go.Figure:
    """Validation loss of several runs overlaid, one colour per run (label -> metrics)."""
    fig = go.Figure()
    for k, (label, metrics) in enumerate(runs.items()):
        x, y = _points(metrics, "val_loss")
        fig.add_trace(
            go.Scatter(x=x, y=y, name=label, mode="lines+markers", line={"color": RUN_COLOURS[k % len(RUN_COLOURS)]})
        )
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="validation loss (nats per word)")
    fig.update_layout(
        title=title,
        height=420,
        margin={"l": 10, "r": 10, "t": 40 if title else 20, "b": 10},
        legend={"orientation": "h", "y": -0.2, "yanchor": "top"},
        template="plotly_white",
    )
    if not runs:
        fig.add_annotation(text="no finished runs yet", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return fig


X_AXES = {"step": ("step", "step"), "time": ("elapsed", "training time (s)")}


def ema(values: Sequence[float], weight: float) -> list[float]:
    """Exponential moving average, debiased (as TensorBoard smooths): 0 leaves the values as they are,
    0.9 averages over roughly the last ten points. The first point is never pulled toward zero."""
    if not 0 <= weight < 1:
        raise ValueError(f"smoothing is a weight in [0, 1); got {weight}")
    out, acc, norm = [], 0.0, 0.0
    for v in values:
        acc, norm = weight * acc + (1 - weight) * v, weight * norm + (1 - weight)
        out.append(acc / norm)
    return out


def _series(metrics: Sequence[Mapping[str, Any]], key: str, x_key: str) -> tuple[list[float], list[float]]:
    rows = [(float(m[x_key]), float(m[key])) for m in metrics
            if isinstance(m.get(key), int | float) and isinstance(m.get(x_key), int | float)]  # fmt: skip
    return [x for x, _ in rows], [y for _, y in rows]


def runs_curves_figure(
    runs: Mapping[str, Sequence[Mapping[str, Any]]],
    smoothing: float = 0.0,
    x_axis: str = "step",
    train: bool = True,
    title: str | None = None,
) -> go.Figure:
    """Several runs overlaid (name -> metrics), one colour each: validation loss solid with markers, train
    loss dashed in the same colour (``train``), both smoothed by ``ema(smoothing)``; x is the step or the
    training time in seconds (``x_axis``: "step" or "time"). A legend click hides a run's two lines."""
    if x_axis not in X_AXES:
        raise ValueError(f"x_axis is one of {', '.join(X_AXES)}; got {x_axis!r}")
    x_key, x_title = X_AXES[x_axis]
    fig = go.Figure()
    for k, (name, metrics) in enumerate(runs.items()):
        colour = RUN_COLOURS[k % len(RUN_COLOURS)]
        lines = [("val_loss", "validation", {"color": colour, "width": 2.5}, "lines+markers")]
        if train:
            lines.append(("train_loss", "train", {"color": colour, "width": 1.2, "dash": "dash"}, "lines"))
        for key, split, line, mode in lines:
            x, y = _series(metrics, key, x_key)
            fig.add_trace(
                go.Scatter(x=x, y=ema(y, smoothing), name=f"{name} · {split}", legendgroup=name, mode=mode,
                           line=line, marker={"size": 5}, opacity=1.0 if split == "validation" else 0.75,
                           hovertemplate=f"{name} ({split})<br>{x_title} %{{x:,.4~f}}<br>loss %{{y:.3f}}<extra></extra>")
            )  # fmt: skip
    fig.update_xaxes(title_text=x_title, rangemode="tozero")
    fig.update_yaxes(title_text="loss (nats per word)")
    smoothed = f"smoothed (EMA {smoothing:g})" if smoothing else ""
    fig.update_layout(
        title=" · ".join(t for t in (title, smoothed) if t) or None,
        height=460,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend={"orientation": "h", "y": -0.2, "yanchor": "top", "groupclick": "togglegroup"},
        template="plotly_white",
    )
    if not runs:
        fig.add_annotation(text="no runs to show", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)
    return fig


def source_curves_figure(runs: Sequence[RunSummary], title: str | None = None) -> go.Figure:
    """Validation loss against step, one line per run and one colour per source, so that the seeds
    of a source read as one band (``llmcomp compare``'s figure); a second panel shows the loss on
    decided positions when the runs measured it."""
    focus = any(r.final_val_focus_loss is not None for r in runs)
    keys = ["val_loss", "val_focus_loss"] if focus else ["val_loss"]
    fig = make_subplots(
        rows=1,
        cols=len(keys),
        subplot_titles=["validation loss", "validation loss on decided positions"] if focus else None,
    )
    labels = list(dict.fromkeys(r.label for r in runs))
    for r in runs:
        colour = RUN_COLOURS[labels.index(r.label) % len(RUN_COLOURS)]
        first_seed = r.seed == min(x.seed or 0 for x in runs if x.label == r.label)
        for col, key in enumerate(keys, start=1):
            x, y = _points(r.metrics, key)
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=y,
                    mode="lines",
                    name=r.label,
                    legendgroup=r.label,
                    showlegend=col == 1 and first_seed,
                    line={"color": colour, "width": 1.5},
                    hovertemplate=f"{r.label}, seed {r.seed}<br>step %{{x}}<br>loss %{{y:.4f}}<extra></extra>",
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="step")
    fig.update_yaxes(title_text="cross-entropy (nats per word)")
    fig.update_layout(title=title, template="plotly_white", height=460, legend={"title": "attention"})
    return fig


def metrics_frame(metrics: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Long table (step, loss, split) for ``gr.LinePlot(x="step", y="loss", color="split")``."""
    rows = []
    for split, key in (("train", "train_loss"), ("val", "val_loss")):
        xs, ys = _points(metrics, key)
        rows += [{"step": s, "loss": v, "split": split} for s, v in zip(xs, ys, strict=True)]
    return pd.DataFrame(rows, columns=["step", "loss", "split"])
