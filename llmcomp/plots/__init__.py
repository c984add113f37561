"""Figures for the web app and reports: attention heatmaps of words, loss curves, a light SVG bar
chart, matrix export."""

from llmcomp.plots.bars import histogram_svg
from llmcomp.plots.curves import loss_figure, metrics_frame, source_curves_figure, val_curves_figure
from llmcomp.plots.heatmap import (
    attention_heatmap,
    difference_heatmap,
    matrix_to_csv,
    matrix_to_json,
    side_by_side,
    word_labels,
)

__all__ = [
    "attention_heatmap",
    "difference_heatmap",
    "histogram_svg",
    "loss_figure",
    "matrix_to_csv",
    "matrix_to_json",
    "metrics_frame",
    "side_by_side",
    "source_curves_figure",
    "val_curves_figure",
    "word_labels",
]
