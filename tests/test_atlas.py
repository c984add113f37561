"""The head atlas (llmcomp.attention.atlas): scores, its file format, the figure and ``llmcomp heads``."""

from __future__ import annotations

import json
import math

import pytest
import torch

from llmcomp.attention import make_source
from llmcomp.attention.atlas import Atlas, AtlasError, head_atlas, pattern_targets
from llmcomp.attention.base import PerSentenceSource, normalize_scores
from llmcomp.cli import main
from llmcomp.text.binding import generate_binding_corpus
from llmcomp.text.tokenizer import tokenize

SENTENCES = [f"w{i} " * n for i, n in enumerate([1, 3, 5, 8, 12])]
WORDS = [s.split() for s in SENTENCES]


class PreviousAndUniform(PerSentenceSource):
    """Head 0: all on the previous word (row 0 on itself); head 1: uniform over the prefix."""

    kind = "test-previous"

    def __init__(self, **kw):
        super().__init__(n_heads=2, **kw)
        self.asked: list[list[str]] = []

    def matrix(self, words):
        self.asked.append(list(words))
        t = len(words)
        prev = torch.zeros(t, t)
        prev[0, 0] = 1.0
        for i in range(1, t):
            prev[i, i - 1] = 1.0
        return torch.stack([prev, normalize_scores(torch.ones(t, t))])

    def head_labels(self):
        return ["L0.H0", "L0.H1"]


def test_previous_head_scores_one_and_uniform_head_its_share():
    atlas = head_atlas(PreviousAndUniform(), WORDS, ["previous", "self", "first", "spread"])
    p = atlas.patterns.index("previous")
    assert atlas.scores[p, 0].item() == pytest.approx(1.0)
    assert atlas.argmax[p, 0].item() == pytest.approx(1.0)
    rows = [1 / (i + 1) for w in WORDS for i in range(1, len(w))]  # uniform row i puts 1/(i+1) on i-1
    assert atlas.rows[p] == len(rows)
    assert atlas.scores[p, 1].item() == pytest.approx(sum(rows) / len(rows), abs=1e-5)
    assert atlas.scores[atlas.patterns.index("self"), 0].item() == pytest.approx(5 / 29)  # row 0 of each sentence
    spread = atlas.patterns.index("spread")
    assert atlas.scores[spread].tolist() == pytest.approx([0.0, 1.0], abs=1e-5)
    assert math.isnan(atlas.argmax[spread, 0].item())
    assert atlas.ranked("previous")[0] == ("L0.H0", pytest.approx(1.0))
    assert atlas.sentences == len(WORDS)


def test_uniform_ties_share_the_argmax_hit():
    """A uniform row ties every column: the target's hit is 1/(i+1), not 1 (argmax would always say column 0)."""
    atlas = head_atlas(make_source("uniform"), WORDS, ["first", "previous"])
    assert atlas.argmax[0, 0].item() == pytest.approx(atlas.scores[0, 0].item(), abs=1e-5)
    assert atlas.argmax[0, 0].item() < 0.5


def test_batches_go_through_score_many_and_do_not_change_scores():
    src = PreviousAndUniform()
    one = head_atlas(src, WORDS, ["previous", "spread"], batch=1)
    assert len(src.asked) == len(WORDS)
    many = head_atlas(PreviousAndUniform(), WORDS, ["previous", "spread"], batch=32)
    assert torch.allclose(one.scores, many.scores)


def test_oracle_scores_one_on_binding_and_shifted_oracle_does_not():
    sentences = [tokenize(line) for line in generate_binding_corpus(40, seed=0)]
    atlas = head_atlas(make_source("oracle"), sentences, ["binding", "task:binding", "previous"])
    assert atlas.rows[0] > 0
    assert atlas.scores[0, 0].item() == pytest.approx(1.0)
    assert atlas.scores[1, 0].item() == pytest.approx(1.0)
    shifted = head_atlas(make_source("oracle", shift=1), sentences, ["binding"])
    assert shifted.scores[0, 0].item() < 0.5


def test_unknown_pattern_is_one_line_error():
    with pytest.raises(AtlasError, match="unknown pattern 'nope'"):
        pattern_targets("nope")
    assert pattern_targets("previous")(["a", "b", "c"]) == {1: 0, 2: 1}
    assert pattern_targets("first")(["a", "b", "c"]) == {1: 0, 2: 0}


def test_grid_for_layer_head_labels_only():
    atlas = head_atlas(PreviousAndUniform(), WORDS, ["previous"])
    layers, heads, values = atlas.grid("previous")
    assert (layers, heads) == ([0], [0, 1])
    assert values[0][0] == pytest.approx(1.0)
    assert head_atlas(make_source("gaussian", n_heads=2), WORDS, ["previous"]).grid("previous") is None


def test_json_round_trip_and_csv(tmp_path):
    atlas = head_atlas(PreviousAndUniform(), WORDS, ["previous", "spread"])
    back = Atlas.read_json(atlas.write_json(tmp_path / "atlas.json"))
    assert back.labels == atlas.labels and back.patterns == atlas.patterns and back.rows == atlas.rows
    assert torch.allclose(back.scores, atlas.scores, atol=1e-6)
    assert math.isnan(back.argmax[1, 0].item()) and back.argmax[0, 0].item() == pytest.approx(1.0)
    lines = atlas.write_csv(tmp_path / "atlas.csv").read_text().splitlines()
    assert lines[0] == "pattern,head,score,argmax,rows,rank" and len(lines) == 1 + 2 * 2
    assert lines[1].startswith("previous,L0.H0,1.000000,1.000000,")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.update(format="other"), "not an atlas"),
        (lambda d: d["scores"][0].append(0.5), "scores must be"),
        (lambda d: d["scores"][0].__setitem__(0, 1.5), r"scores\[0\]\[0\]"),
        (lambda d: d["scores"][0].__setitem__(0, None), r"scores\[0\]\[0\]"),
        (lambda d: d["scores"][0].__setitem__(0, True), r"scores\[0\]\[0\]"),
        (lambda d: d.update(rows=[1]), "rows must be"),
        (lambda d: d.update(labels=[1, 2]), "labels must be"),
        (lambda d: d.update(sentences=-1), "sentences must be"),
    ],
)
def test_malformed_json_is_rejected(tmp_path, change, message):
    data = head_atlas(PreviousAndUniform(), WORDS, ["previous", "spread"]).to_json()
    change(data)
    with pytest.raises(AtlasError, match=message):
        Atlas.from_json(data)


def test_nan_constant_in_file_is_rejected(tmp_path):
    path = head_atlas(PreviousAndUniform(), WORDS, ["previous"]).write_json(tmp_path / "atlas.json")
    path.write_text(path.read_text().replace("1.0", "NaN", 1))
    with pytest.raises(AtlasError, match="NaN"):
        Atlas.read_json(path)


def test_cli_heads_writes_three_files(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(generate_binding_corpus(30, seed=1)) + "\n")
    out = tmp_path / "atlas"
    argv = ["heads", "--corpus", str(corpus), "--attention", "gaussian", "--heads", "2", "--no-cache"]
    assert main([*argv, "--pattern", "previous", "--pattern", "binding", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {"atlas.json", "atlas.csv", "atlas.html"}
    text = capsys.readouterr().out
    assert "previous (" in text and "1. head 0" in text
    atlas = Atlas.read_json(out / "atlas.json")
    assert atlas.patterns == ["previous", "binding"] and atlas.labels == ["head 0", "head 1"]
    assert "plotly" in (out / "atlas.html").read_text()[:5000].lower()
    assert main([*argv, "--pattern", "nope", "--out", str(out)]) == 2
    assert "unknown pattern" in capsys.readouterr().err


@pytest.mark.slow
def test_local_llm_all_heads_atlas(tmp_path):
    words = [s.split() for s in ("alice owns a cat . bob owns a dog . alice : cat", "the old man walked home .")]
    src = make_source("local", heads="all")
    atlas = head_atlas(src, words * 3, ["previous", "binding"])
    assert len(atlas.labels) == 270 and atlas.labels[0] == "L0.H0" and atlas.labels[-1] == "L29.H8"
    layers, heads, _ = atlas.grid("previous")
    assert (len(layers), len(heads)) == (30, 9)
    assert atlas.scores.min() >= 0.0 and atlas.scores.max() <= 1.0
    one = head_atlas(make_source("local", heads="21.4"), words * 3, ["previous", "binding"])  # the same head alone
    assert torch.allclose(one.scores[:, 0], atlas.scores[:, atlas.labels.index("L21.H4")], atol=1e-4)
    assert json.loads(atlas.write_json(tmp_path / "a.json").read_text())["labels"][5] == "L0.H5"


class FailsOnLong(PreviousAndUniform):
    def matrix(self, words):
        if len(words) > 6:
            from llmcomp.attention.base import AttentionError

            raise AttentionError("too long")
        return super().matrix(words)


def test_sentences_the_source_fails_on_are_left_out():
    atlas = head_atlas(FailsOnLong(), WORDS, ["previous"])
    assert atlas.sentences == 3 and atlas.rows == [0 + 2 + 4]
    with pytest.raises(AtlasError, match="scored none"):
        head_atlas(FailsOnLong(), WORDS[3:], ["previous"])
