"""Attention from a file (issue 16, item 2): the ``file`` source reads what ``llmcomp score --out`` writes and a
plain format (words plus one lower-triangular matrix per head), through the one validator, and trains like any
other source. A file whose rows see later words is validated leak-free: from its prefixes' own lines, never from
the leaky rows.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmcomp.attention import file_source
from llmcomp.attention.base import AttentionError
from llmcomp.attention.registry import make_source
from llmcomp.cli import main
from llmcomp.text.corpus import CorpusConfig, parse_corpus
from llmcomp.text.vocab import Vocab
from llmcomp.training.data import prepare_data

CORPUS = [
    *("the cat sat on the mat .", "a dog ran to the park .", "the cat saw a dog .", "a bird sat on a tree ."),
    *("the dog sat on a mat .", "a cat ran to the tree .", "the bird saw the cat .", "a dog sat in the park ."),
    *("the cat ran to a mat .", "a bird saw the dog .", "the dog ran to a tree .", "a cat sat in the park ."),
]
TRAIN = ["--val-fraction", "0.25", "--n-layer", "1", "--n-embd", "16", "--no-cache"]


def write(path: Path, *lines: object) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines), encoding="utf-8")
    return path


def lower(m: torch.Tensor) -> list[list[list[float]]]:
    """(H, T, T) as the plain format's lower triangles: row i has i+1 numbers."""
    return [[row[: i + 1].tolist() for i, row in enumerate(head)] for head in m]


@pytest.fixture
def corpus_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    return path


def test_round_trip_from_score_out(corpus_file, tmp_path, capsys):
    """``score --out`` from gaussian (2 heads) read back as a file source gives the very same matrices."""
    out = tmp_path / "gaussian.jsonl"
    args = ["score", "--corpus", str(corpus_file), "--attention", "gaussian", "--heads", "2", "--sigma", "0.7"]
    assert main([*args, "--no-cache", "--out", str(out)]) == 0
    header = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert header["rows_see_later"] is False and header["source"]["kind"] == "gaussian"
    sentences = [s.split() for s in CORPUS]
    want = make_source("gaussian", n_heads=2, sigma=0.7).score_many(sentences).require_all()
    src = make_source("file", path=str(out))
    got = src.score_many(sentences).require_all()
    assert src.n_heads == 2 and src.prefix_causal and all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    again = make_source(**src.spec())  # a checkpoint's spec rebuilds it
    assert torch.equal(again.score(sentences[2]), want[2])


def test_plain_format_lower_triangle_or_whole_rows(tmp_path):
    words = ["the", "cat", "sat", "on", "the", "mat"]
    m = make_source("gaussian", n_heads=3).score(words)
    tri = write(tmp_path / "tri.jsonl", {"words": words, "heads": lower(m)})
    whole = write(tmp_path / "whole.jsonl", {"rows_see_later": False}, {"words": words, "heads": m.tolist()})
    for path in (tri, whole):
        src = make_source("file", path=str(path))
        assert src.n_heads == 3 and torch.allclose(src.score(words), m)
    assert make_source("file", path=str(tri)).describe() == "file tri.jsonl (3 heads)"


GOOD = {"words": ["a", "b"], "heads": [[[1], [0.5, 0.5]]]}


@pytest.mark.parametrize(
    ("lines", "line", "message"),
    [
        ([GOOD, "{not json"], 2, "not JSON"),
        (["[1, 2]"], 1, "must be a JSON object"),
        ([GOOD, {**GOOD, "colour": 1}], 2, "unknown field(s) colour"),
        ([{"rows_see_latter": True}, GOOD], 1, "unknown field(s) rows_see_latter"),
        ([GOOD, {"rows_see_later": True}], 2, "header"),
        ([{"words": ["a"], "heads": [[[1]]], "attention": [[[1]]]}], 1, "exactly one of"),
        ([{"words": ["a", "b"], "heads": [[[1], [0.5, 0.2, 0.3]]]}], 1, "head 0 row 1 must be 2"),
        ([{"words": ["a", "b"], "heads": [[[1]]]}], 1, "head 0 must have 2 rows"),
        ([{"words": ["a", "b"], "heads": [[[1], ["x", 1]]]}], 1, "row 1"),
        ([{"words": [], "heads": []}], 1, "'words' must be"),
        ([GOOD, {"words": ["c"], "heads": [[[1]], [[1]]]}], 2, "2 heads, but line 1 has 1"),
        ([{"rows_see_later": "yes"}, GOOD], 1, "true or false"),
        ([{"rows_see_later": True}, {**GOOD, "rows_see_later": False}], 2, "disagrees with line 1"),
        ([GOOD, {"words": ["a", "b"], "heads": [[[1], [0.25, 0.75]]]}], 2, "another matrix on line 1"),
    ],
)  # fmt: skip
def test_malformed_lines_are_one_line_errors_with_the_line_number(tmp_path, lines, line, message):
    path = write(tmp_path / "bad.jsonl", *lines)
    with pytest.raises(AttentionError) as caught:
        make_source("file", path=str(path))
    text = str(caught.value)
    assert f"{path} line {line}: " in text and message in text and "\n" not in text, text


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([[0.5, 0.5], [0.5, 0.5]], "later words"),  # row 0 gives weight to word 1
        ([[1, 0], [0.6, 0.6]], "do not sum to 1"),
        ([[1], [1.5, -0.5]], "negative"),
        ([[1], [float("nan"), 1]], "NaN"),
    ],
)
def test_causal_violations_and_broken_rows_are_rejected_by_the_one_validator(tmp_path, rows, message):
    path = write(tmp_path / "x.jsonl", GOOD, {"words": ["c", "d"], "heads": [rows]})
    with pytest.raises(AttentionError, match=message) as caught:
        make_source("file", path=str(path))
    assert "line 2" in str(caught.value)


def test_a_missing_sentence_fails_with_one_line_naming_the_file_and_the_sentence(tmp_path):
    path = write(tmp_path / "f.jsonl", GOOD, {"words": ["z"], "attention": None})
    src = make_source("file", path=str(path))
    result = src.score_many([["a", "b"], ["a", "c"], ["z"]])
    assert result.matrices[0] is not None and result.matrices[1] is None and result.matrices[2] is None
    assert result.failures[1] == f"sentence 'a c' is not in attention file {path}"
    assert "'z' has no matrix" in result.failures[2] and str(path) in result.failures[2]
    with pytest.raises(AttentionError, match="'a c' is not in attention file"):
        src.score(["a", "c"])
    filled = make_source("file", path=str(path), fallback=make_source("uniform")).score_many([["a", "c"]])
    assert torch.equal(filled.matrices[0], torch.ones(1, 2, 2).tril() / torch.tensor([[1.0], [2.0]]))


def test_the_fingerprint_is_the_content_not_the_name(tmp_path):
    one = make_source("file", path=str(write(tmp_path / "one.jsonl", GOOD)))
    two = make_source("file", path=str(write(tmp_path / "two.jsonl", GOOD)))
    other = make_source("file", path=str(write(tmp_path / "three.jsonl", GOOD, {"words": ["q"], "heads": [[[1]]]})))
    assert one.cache_key(["a", "b"]) == two.cache_key(["a", "b"]) != other.cache_key(["a", "b"])
    assert one.spec()["path"] != two.spec()["path"]


def test_reading_is_bounded(tmp_path, monkeypatch):
    path = write(tmp_path / "big.jsonl", GOOD, GOOD)
    monkeypatch.setattr(file_source, "MAX_FILE_BYTES", path.stat().st_size - 1)
    with pytest.raises(AttentionError, match="larger than"):
        make_source("file", path=str(path))
    monkeypatch.setattr(file_source, "MAX_FILE_BYTES", path.stat().st_size)
    assert make_source("file", path=str(path)).n_heads == 1
    with pytest.raises(AttentionError, match="cannot read attention file"):
        make_source("file", path=str(tmp_path / "nowhere.jsonl"))


# --- rows that see later words ---------------------------------------------------------------------
def peeking(words: list[str]) -> torch.Tensor:
    """A whole-sentence matrix that breaks nothing the validator can see but leaks: the last row is uniform,
    every other row puts all its weight on word 0 (a stand-in for any leaky model's rows)."""
    t = len(words)
    m = torch.zeros(1, t, t)
    m[0, :, 0] = 1.0
    m[0, t - 1, :] = 1.0 / t
    return m


def test_a_file_whose_rows_see_later_words_is_validated_from_its_prefix_lines(tmp_path):
    corpus = parse_corpus("\n".join(CORPUS), "c", CorpusConfig(val_fraction=0.25))
    val = [corpus.sentences[i] for i in corpus.val_idx]
    lines = [{"words": s, "heads": lower(peeking(s))} for s in corpus.sentences]
    prefixes = [{"words": v[: k + 1], "heads": lower(peeking(v[: k + 1]))} for v in val for k in range(len(v) - 1)]
    full = make_source("file", path=str(write(tmp_path / "full.jsonl", {"rows_see_later": True}, *lines, *prefixes)))
    assert not full.prefix_causal and "rows see later words" in full.describe()
    data = prepare_data(corpus, full, Vocab.build(corpus.sentences))
    assert data.val_scored_by_prefix and len(data.val_examples) == len(val) and not data.failures
    for ex, words in zip(data.val_examples, val, strict=True):  # each row its prefix's last row: uniform, no peek
        t = len(words)
        assert torch.allclose(ex.att[0, 1:, 1:], make_source("uniform").score(words)[0]), words
        assert not torch.allclose(ex.att[0, 1:, 1:], peeking(words)[0]) and t > 1
    seen = data.val_seen_examples[0].att[0, 1:, 1:]  # the training-time rows, kept only for val_loss_seen
    assert torch.equal(seen, peeking(val[0])[0])
    without = make_source("file", path=str(write(tmp_path / "bare.jsonl", {"rows_see_later": True}, *lines)))
    bare = prepare_data(corpus, without, Vocab.build(corpus.sentences))
    assert not bare.val_examples and set(bare.failures) == set(corpus.val_idx)
    reason = bare.failures[corpus.val_idx[0]]
    assert "prefix of 1 word(s)" in reason and "is not in attention file" in reason and str(tmp_path) in reason


def test_score_out_from_a_leaky_source_declares_it(corpus_file, tmp_path, fake_openai, monkeypatch):
    """OpenAI ``sentence`` mode (rows see later words) over HTTP: ``score --out`` says so in its header, and the
    file source read back from it is leaky too, so training and generation score prefixes."""
    monkeypatch.setenv("OPENAI_API_KEY", "dummy")
    monkeypatch.setenv("LLMCOMP_ALLOW_PRIVATE_URLS", "1")
    out = tmp_path / "leak.jsonl"
    args = ["score", "--corpus", str(corpus_file), "--attention", "openai", "--mode", "sentence", "--model", "leak"]
    assert main([*args, "--base-url", fake_openai.url, "--heads", "syntax", "--no-cache", "--out", str(out)]) == 0
    assert json.loads(out.read_text(encoding="utf-8").splitlines()[0])["rows_see_later"] is True
    src = make_source("file", path=str(out))
    assert not src.prefix_causal and src.score(CORPUS[0].split()).shape == (1, 7, 7)


def test_train_and_compare_with_a_file_source(corpus_file, tmp_path, capsys):
    out = tmp_path / "prev.jsonl"
    assert (
        main(["score", "--corpus", str(corpus_file), "--attention", "previous", "--no-cache", "--out", str(out)]) == 0
    )
    common = ["--corpus", str(corpus_file), *TRAIN, "--steps", "4", "--eval-every", "4"]
    assert main(["train", *common, "--attention", f"file:{out}", "--run-dir", str(tmp_path / "run")]) == 0
    assert "attention: file prev.jsonl (1 head)" in capsys.readouterr().out
    folder = tmp_path / "cmp"
    assert main(["compare", *common, "--sources", f"uniform,file:{out}", "--seeds", "1", "--out", str(folder)]) == 0
    table = capsys.readouterr().out
    assert "file" in table and "uniform" in table
    bad = tmp_path / "bad.jsonl"
    write(bad, {"words": ["the"], "heads": [[[1]]]})  # holds none of the corpus's sentences
    assert (
        main(["compare", *common, "--sources", f"file:path={bad}", "--seeds", "1", "--out", str(tmp_path / "x")]) != 0
    )
    assert "is not in attention file" in capsys.readouterr().err
