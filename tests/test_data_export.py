"""The data endpoints' records (llmcomp.app.data_export) built from real library objects, and the
CLI's ``generate --show-probs`` with its copy note, on a run trained here."""

from __future__ import annotations

import json
import math

import pytest

from llmcomp.app.data_export import attention_record, choose_heads, metrics_record, plain, run_record
from llmcomp.attention import make_source
from llmcomp.cli import main
from llmcomp.text import parse_corpus
from llmcomp.training.run_summary import read_run

PARROT = "\n".join(["the cat sat on the mat ."] * 12)  # one sentence, twelve times: a model learns it by heart
TINY = ["--n-layer", "1", "--n-embd", "16", "--batch-size", "8", "--no-cache"]


def test_attention_record_round_trips_as_json_with_stochastic_causal_rows():
    words = ["the", "cat", "sat", "on", "the", "mat", "."]
    source = make_source("gaussian", n_heads=2)
    m = source.score(words)
    record = json.loads(json.dumps(attention_record(m, words, ["head 0", "head 1"], [1], "g", {"kind": "gaussian"},
                                                    "c.txt", 4)))  # fmt: skip
    assert record["words"] == words and record["heads"] == ["head 1"] and record["head_indices"] == [1]
    assert record["sentence_index"] == 4 and record["source_spec"] == {"kind": "gaussian"}
    (matrix,) = record["matrices"]
    assert [v for row in matrix for v in row] == pytest.approx(m[1].flatten().tolist())
    for i, row in enumerate(matrix):
        assert sum(row) == pytest.approx(1.0, abs=1e-5) and all(v == 0 for v in row[i + 1 :])


def test_choose_heads_reads_all_numbers_and_labels_and_names_the_heads_there_are():
    labels = ["0 · meaning", "1 · syntax"]
    assert choose_heads("all", 2, labels) == choose_heads("", 2, labels) == choose_heads(-1, 2, labels) == [0, 1]
    assert choose_heads("1", 2, labels) == [1] and choose_heads("1 · syntax, 0", 2, labels) == [1, 0]
    with pytest.raises(ValueError, match=r"no head '2': this source has 2 head\(s\), 0 · meaning, 1 · syntax"):
        choose_heads("2", 2, labels)


def test_plain_leaves_only_json_types():
    assert plain({"a": (1, float("nan")), 2: [float("inf"), 0.5]}) == {"a": [1, None], "2": [None, 0.5]}


@pytest.fixture(scope="module")
def parrot_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parrot")
    corpus = tmp / "parrot.txt"
    corpus.write_text(PARROT, encoding="utf-8")
    run = tmp / "run"
    args = ["train", "--corpus", str(corpus), "--attention", "previous", "--run-dir", str(run), "--steps", "120"]
    assert main([*args, "--eval-every", "40", *TINY]) == 0
    return corpus, run


def test_run_and_metrics_records_carry_numbers_and_no_server_path(parrot_run):
    corpus, run = parrot_run
    summary = read_run(run)
    record = json.loads(json.dumps(run_record(summary)))
    assert record["name"] == "run" and record["kind"] == "previous" and record["steps"] == 120
    assert record["corpus"]["sha256"] == parse_corpus(PARROT, "parrot.txt").sha256
    assert isinstance(record["best_val_loss"], float) and math.isfinite(record["best_val_loss"])
    assert str(run) not in json.dumps(record)  # runs are named, never located
    metrics = json.loads(json.dumps(metrics_record(summary)))
    steps = [m["step"] for m in metrics["records"] if "val_loss" in m]
    assert metrics["run"] == "run" and steps[-1] == 120 and len(steps) >= 3


def test_cli_prints_probabilities_and_says_when_the_text_recites_a_training_sentence(parrot_run, capsys):
    corpus, run = parrot_run
    base = ["generate", "--checkpoint", str(run), "--prompt", "the cat", "--temperature", "0"]
    assert main([*base, "--show-probs", "--corpus", str(corpus)]) == 0
    out, err = capsys.readouterr()
    text, *rows = out.splitlines()
    assert text == "the cat sat on the mat."
    assert "copies training sentence" in err and "of parrot.txt word for word" in err
    assert len(rows) == 5 and rows[0].split()[:2] == ["2", "sat"] and "likeliest: sat" in rows[0]
    assert main(base) == 0  # without --corpus: no bundled corpus has its hash, so it says it could not check
    out, err = capsys.readouterr()
    assert "not checked for copies of training sentences: the training corpus (parrot.txt) is not at hand" in err
    assert "likeliest" not in out
