"""Heatmaps of words, loss curves, matrix export and run summaries (llmcomp.plots)."""

from __future__ import annotations

import csv
import io
import json
import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from llmcomp.app.jobs import owner_tag
from llmcomp.app.run_compare import runs_table
from llmcomp.attention import make_source
from llmcomp.attention.registry import describe_spec
from llmcomp.model import GPTConfig
from llmcomp.plots import (
    attention_heatmap,
    difference_heatmap,
    histogram_svg,
    loss_figure,
    matrix_to_csv,
    matrix_to_json,
    metrics_frame,
    side_by_side,
    source_curves_figure,
    val_curves_figure,
    word_labels,
)
from llmcomp.text import parse_corpus
from llmcomp.text.binding import generate_binding_corpus
from llmcomp.training import TrainConfig, Trainer
from llmcomp.training.run_summary import list_runs, read_run, summarise

WORDS = ["the", "cat", "saw", "the", "dog", "."]


def matrix(t: int = len(WORDS), kind: str = "previous") -> torch.Tensor:
    return make_source(kind).score([f"w{i}" for i in range(t)])[0]


def test_repeated_words_get_distinct_labels_at_numeric_positions():
    fig = attention_heatmap(matrix(), WORDS)
    labels = word_labels(WORDS)
    assert labels[0] == "the (0)" and labels[3] == "the (3)"
    assert len(set(labels)) == len(WORDS)
    trace = fig.data[0]
    assert list(trace.x) == list(range(6)) and list(trace.y) == list(range(6))
    assert list(fig.layout.xaxis.ticktext) == labels
    assert list(fig.layout.yaxis.ticktext) == labels
    assert list(fig.layout.yaxis.tickvals) == list(range(6))
    assert fig.layout.yaxis.autorange == "reversed"


def test_future_half_is_nan_with_no_hover_over_grey():
    m = matrix()
    fig = attention_heatmap(m, WORDS)
    z = np.array(fig.data[0].z, dtype=float)
    upper = np.triu_indices(6, k=1)
    assert np.isnan(z[upper]).all()
    lower = np.tril_indices(6)
    assert np.allclose(z[lower], m.numpy()[lower])
    assert fig.data[0].hoverongaps is False
    assert fig.layout.plot_bgcolor.lower() in ("#d4d4d4", "lightgrey")


def test_hover_names_both_words_both_indices_and_value():
    fig = attention_heatmap(matrix(), WORDS)
    t = fig.data[0]
    q, k, what = t.customdata[4][3]
    assert (q, k, what) == ("dog (4)", "the (3)", "weight")
    assert "%{customdata[0]}" in t.hovertemplate and "%{customdata[1]}" in t.hovertemplate
    assert "%{z" in t.hovertemplate


def test_colour_scale_is_sequential_not_rainbow():
    """Weights read as one ordered quantity: the lightness of the scale must change one way only from 0
    to the top (a rainbow such as Jet or a diverging scale such as RdBu goes up and down), over a wide
    range, and 0 must sit at the scale's end. Same for the shared scale of the side-by-side view."""
    from plotly.colors import hex_to_rgb, unlabel_rgb

    def luminance(colour: str) -> float:
        """WCAG relative luminance of an 'rgb(r,g,b)' or '#rrggbb' colour, 0 (black) to 1 (white)."""
        rgb = hex_to_rgb(colour) if colour.startswith("#") else unlabel_rgb(colour)
        lin = [c / 255 / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in rgb[:3]]
        return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]

    fig = attention_heatmap(matrix(), WORDS)
    pair = side_by_side(matrix(kind="previous"), matrix(kind="uniform"), WORDS, "A", "B")
    assert fig.data[0].zmin == 0.0 and pair.layout.coloraxis.cmin == 0.0
    for scale in (fig.data[0].colorscale, pair.layout.coloraxis.colorscale):
        stops = [float(at) for at, _ in scale]
        assert stops == sorted(stops) and stops[0] == 0.0 and stops[-1] == 1.0
        lum = np.array([luminance(c) for _, c in scale])
        steps = np.diff(lum)
        assert (steps < 0).all() or (steps > 0).all(), f"lightness goes both ways along the scale: {lum.round(3)}"
        assert abs(lum[-1] - lum[0]) > 0.5  # Blues: about 0.96 -> 0.03; a faint scale would hide the weights


def test_generated_words_are_marked_and_divided():
    fig = attention_heatmap(matrix(), WORDS, generated_from=2)
    ticks = list(fig.layout.yaxis.ticktext)
    assert ticks[:2] == ["the (0)", "cat (1)"]
    assert all(t.startswith("▸ ") for t in ticks[2:])
    assert any(s.type == "line" and s.y0 == 1.5 for s in fig.layout.shapes)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="6 words"):
        attention_heatmap(matrix(5), WORDS)
    with pytest.raises(ValueError, match="square"):
        attention_heatmap(torch.zeros(3, 4), WORDS[:3])


def test_side_by_side_shares_one_scale_and_difference_is_a_minus_b():
    a, b = matrix(kind="previous"), matrix(kind="uniform")
    fig = side_by_side(a, b, WORDS, "A", "B")
    assert len(fig.data) == 2
    assert fig.data[0].coloraxis == fig.data[1].coloraxis == "coloraxis"
    assert fig.layout.yaxis.autorange == "reversed" and fig.layout.yaxis2.autorange == "reversed"
    d = difference_heatmap(a, b, WORDS)
    z = np.array(d.data[0].z, dtype=float)
    lower = np.tril_indices(6)
    assert np.allclose(z[lower], (a - b).numpy()[lower])
    assert d.data[0].zmid == 0.0 and d.data[0].zmin == -d.data[0].zmax
    with pytest.raises(ValueError, match="subtract"):
        difference_heatmap(a, matrix(5), WORDS)


def test_csv_export_round_trips_every_head_and_cell():
    m = torch.stack([matrix(kind="previous"), matrix(kind="uniform")])
    rows = list(csv.reader(io.StringIO(matrix_to_csv(m, WORDS))))
    assert rows[0] == ["head", "query", *word_labels(WORDS)]
    assert len(rows) == 1 + 2 * 6
    back = np.array([[float(x) for x in r[2:]] for r in rows[1:]]).reshape(2, 6, 6)
    assert np.allclose(back, m.numpy(), atol=1e-6)
    assert rows[7][:2] == ["1", "the (0)"]


def test_json_export_round_trips_and_refuses_nan():
    m = matrix()
    doc = json.loads(matrix_to_json(m, WORDS, {"source": "previous"}))
    assert doc["words"] == WORDS and doc["heads"] == 1 and doc["source"] == "previous"
    assert np.allclose(np.array(doc["matrix"]), m.numpy()[None], atol=1e-6)
    bad = m.clone()
    bad[2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        matrix_to_json(bad, WORDS)


METRICS = [
    {"step": 10, "train_loss": 4.0, "total_steps": 40},
    {"step": 20, "train_loss": 3.5, "val_loss": 3.6, "total_steps": 40},
    {"step": 30, "train_loss": 3.0, "total_steps": 40},
    {"step": 40, "train_loss": 2.5, "val_loss": 2.9, "total_steps": 40},
]


def test_loss_figure_plots_train_and_val_points():
    fig = loss_figure(METRICS)
    train, val = fig.data
    assert list(train.x) == [10, 20, 30, 40] and list(train.y) == [4.0, 3.5, 3.0, 2.5]
    assert list(val.x) == [20, 40] and list(val.y) == [3.6, 2.9]
    assert list(fig.layout.xaxis.range) == [0, 40]  # the run's span once the points fill enough of it
    early = loss_figure(METRICS[:1], total_steps=100_000)
    assert early.layout.xaxis.range is None  # not squashed against the left edge
    empty = loss_figure([])
    assert len(empty.data[0].x) == 0 and empty.layout.annotations


def test_val_curves_overlay_one_trace_per_run_and_frame_is_long():
    fig = val_curves_figure({"uniform": METRICS, "previous": METRICS[:2]})
    assert [t.name for t in fig.data] == ["uniform", "previous"]
    assert list(fig.data[1].y) == [3.6]
    assert fig.data[0].line.color != fig.data[1].line.color
    df = metrics_frame(METRICS)
    assert list(df.columns) == ["step", "loss", "split"]
    assert (df["split"] == "val").sum() == 2 and (df["split"] == "train").sum() == 4


def test_source_curves_colour_by_source_with_one_legend_entry_and_a_focus_panel():
    def run(label: str, seed: int, metrics: list[dict]) -> object:
        return summarise(metrics, name=f"{label}-{seed}", path=None, kind=label, label=label, source=label,
                         seed=seed, steps=40, total_steps=40, attention=None)  # fmt: skip

    focus = [{**m, "val_focus_loss": m["val_loss"] / 2} for m in METRICS if "val_loss" in m]
    runs = [run("uniform", 0, METRICS), run("uniform", 1, METRICS), run("oracle", 0, focus)]
    fig = source_curves_figure(runs)
    per_panel = [t for t in fig.data if t.xaxis == "x"]
    assert [t.name for t in per_panel] == ["uniform", "uniform", "oracle"]
    assert per_panel[0].line.color == per_panel[1].line.color != per_panel[2].line.color
    assert [t.showlegend for t in per_panel] == [True, False, True]
    assert list(per_panel[0].y) == [3.6, 2.9]
    assert [list(t.y) for t in fig.data if t.xaxis == "x2" and t.name == "oracle"] == [[1.8, 1.45]]
    assert len(source_curves_figure(runs[:2]).data) == 2  # no focus loss measured: one panel


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    corpus = parse_corpus("\n".join(generate_binding_corpus(40, seed=3)))
    cfg = TrainConfig(steps=12, batch_size=8, eval_every=6, log_every=3)
    for name, kind in (("a-uniform", "uniform"), ("b-previous", "previous")):
        Trainer(corpus, make_source(kind), GPTConfig(n_layer=1, n_embd=16), cfg, run_dir=root / name).run()
    (root / "b-previous" / "job.json").write_text(
        json.dumps(
            {"owner": owner_tag("alice"), "status": "finished", "attention": {"requests": 7, "prompt_tokens": 5}}
        )
    )
    (root / "c-broken" / "checkpoint").mkdir(parents=True)
    (root / "c-broken" / "checkpoint" / "checkpoint.json").write_text("{not json")
    return root


def test_read_run_summarises_final_loss_perplexity_and_speed(two_runs):
    r = read_run(two_runs / "a-uniform")
    metrics = [
        json.loads(x) for x in (two_runs / "a-uniform" / "checkpoint" / "metrics.jsonl").read_text().splitlines()
    ]
    vals = [m["val_loss"] for m in metrics if "val_loss" in m]
    assert r.final_val_loss == vals[-1]
    assert r.final_val_ppl == pytest.approx(math.exp(vals[-1]))
    assert r.steps == r.total_steps == 12
    assert r.tokens_per_s > 0
    assert r.api_requests is None and r.owner is None  # made outside the app
    assert r.source == "uniform (1 head)"
    assert read_run(two_runs / "c-broken") is None


def test_list_runs_hides_other_owners_and_table_has_the_columns(two_runs):
    everyone = list_runs(two_runs)
    assert [r.name for r in everyone] == ["a-uniform", "b-previous"]  # broken run skipped
    alice = list_runs(two_runs, visible_to=owner_tag("alice"))
    bob = list_runs(two_runs, visible_to=owner_tag("bob"))
    assert {r.name for r in alice} == {"a-uniform", "b-previous"}
    assert {r.name for r in bob} == {"a-uniform"}
    assert list_runs(two_runs, visible_to=owner_tag("alice"), everyone=False)[0].name == "b-previous"
    table = runs_table(everyone)
    assert {"run", "source", "steps", "best val loss", "best step", "final val loss", "val perplexity", "tokens/s",
            "API requests", "status"} <= set(table.columns)  # fmt: skip
    row = table.set_index("folder").loc["b-previous"]
    assert row["API requests"] == "7"
    assert float(row["final val loss"]) == pytest.approx(everyone[1].final_val_loss, abs=1e-3)


def test_describe_spec_names_sources_without_secrets():
    spec = {"kind": "openai", "model": "m", "mode": "prefix", "heads": ["meaning", "syntax"], "n_heads": 2}
    assert describe_spec(spec) == "openai m (prefix mode; meaning, syntax)"
    assert describe_spec({"kind": "gaussian", "n_heads": 2, "sigma": 1.0}) == "gaussian (2 heads, sigma 1.0)"


def test_runs_of_a_comparison_folder_are_found_one_level_down(two_runs, tmp_path):
    import shutil

    shutil.copytree(two_runs / "a-uniform", tmp_path / "cmp1" / "uniform-seed0")
    shutil.copytree(two_runs / "a-uniform", tmp_path / "solo")
    names = [r.name for r in list_runs(tmp_path)]
    assert sorted(names) == ["cmp1/uniform-seed0", "solo"]


def test_words_that_look_like_markup_stay_text_in_plots_but_raw_in_exports():
    words = ["<b>", "x"]
    m = matrix(2)
    fig = attention_heatmap(m, words, title="<i>model</i>")
    assert fig.layout.yaxis.ticktext[0] == "&lt;b&gt; (0)" and fig.data[0].customdata[0][0][0] == "&lt;b&gt; (0)"
    assert fig.layout.title.text == "&lt;i&gt;model&lt;/i&gt;"
    assert matrix_to_csv(m, words).splitlines()[0] == "head,query,<b> (0),x (1)"


def _bars(svg: str) -> list[tuple[float, str]]:
    """(height, tooltip) of every bar in a histogram_svg chart, parsed as XML."""
    ns = {"s": "http://www.w3.org/2000/svg"}
    root = ET.fromstring(svg)
    return [(float(r.get("height")), r.find("s:title", ns).text) for r in root.iter("{http://www.w3.org/2000/svg}rect")]


def test_histogram_svg_has_a_bar_per_length_with_gaps_as_zero_and_exact_tooltips():
    svg = histogram_svg({3: 10, 5: 40, 6: 20}, "Sentence length", "words per sentence", "sentences", unit="words")
    bars = _bars(svg)
    assert [tip for _, tip in bars] == [
        "3 words: 10 sentences",
        "4 words: 0 sentences",
        "5 words: 40 sentences",
        "6 words: 20 sentences",
    ]
    heights = [h for h, _ in bars]
    assert (
        heights[1] == 0 and heights[2] == pytest.approx(4 * heights[0]) and heights[2] == pytest.approx(2 * heights[3])
    )
    assert "Sentence length" in svg and "words per sentence" in svg


def test_histogram_svg_escapes_labels_and_survives_no_data():
    svg = histogram_svg({}, "<b>t</b>", "x & y", "n")
    ET.fromstring(svg)  # well-formed: the labels were escaped
    assert "<b>" not in svg and "&lt;b&gt;" in svg and "x &amp; y" in svg
