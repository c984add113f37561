"""Choosing heads by data (llmcomp.app.head_choice): ``top:K:PATTERN`` reads the training split only."""

from __future__ import annotations

import json

import pytest
import torch

from llmcomp.app.head_choice import (
    HeadChoice,
    HeadChoiceConfig,
    HeadChoiceError,
    parse_top,
    resolve_heads,
)
from llmcomp.attention.base import PerSentenceSource
from llmcomp.text.corpus import Corpus, CorpusConfig

N = 40
CONFIG = CorpusConfig(val_fraction=0.6)  # validation is the majority: reading it would flip the choice


class SplitAware(PerSentenceSource):
    """Head L3.H1 points at the previous word in sentences starting "t", L5.H2 in those starting "v";
    every other row of both, and head L0.H0 always, attends to itself. Records what it is asked."""

    kind = "local"

    def __init__(self, asked: list[list[str]]):
        super().__init__(n_heads=3)
        self.asked = asked

    def matrix(self, words):
        self.asked.append(list(words))
        t = len(words)
        eye, prev = torch.eye(t), torch.eye(t)
        for i in range(1, t):
            prev[i] = 0.0
            prev[i, i - 1] = 1.0
        train_like = words[0].startswith("t")
        return torch.stack([eye, prev if train_like else eye, eye if train_like else prev])

    def head_labels(self):
        return ["L0.H0", "L3.H1", "L5.H2"]


def split_corpus() -> Corpus:
    """Training sentences start with "t", validation ones with "v" (the split depends on the count only)."""
    val = set(Corpus([["x"]] * N, config=CONFIG).val_idx)
    sentences = [[("v" if i in val else "t") + str(i), "a", "b", "c"] for i in range(N)]
    corpus = Corpus(sentences, config=CONFIG)
    assert set(corpus.val_idx) == val
    return corpus


def test_top_k_reads_only_training_sentences_and_picks_their_best_head():
    corpus, asked, described = split_corpus(), [], []

    def build(description):
        described.append(dict(description))
        return SplitAware(asked)

    resolved, choice = resolve_heads(corpus, {"kind": "local", "heads": "top:1:previous", "layers": "all"}, build=build)
    val = [corpus.sentences[i] for i in corpus.val_idx]
    assert asked and not [s for s in asked if s in val]
    assert len(asked) == len(corpus.train_idx)
    assert choice.labels == ["L3.H1"] and choice.scores == [pytest.approx(1.0)]
    assert resolved == {"kind": "local", "heads": "3.1", "layers": "all"}
    assert described == [{"kind": "local", "heads": "all", "layers": "all"}]
    assert choice.sentences == len(corpus.train_idx) and choice.split == "train"


def test_reading_every_sentence_would_have_chosen_the_other_head():
    """The corpus is built so that the choice depends on the split: the test above can fail."""
    from llmcomp.attention.atlas import head_atlas

    atlas = head_atlas(SplitAware([]), split_corpus().sentences, ["previous"])
    assert atlas.ranked("previous")[0][0] == "L5.H2"


def test_max_sentences_takes_the_first_training_sentences():
    corpus, asked = split_corpus(), []
    config = HeadChoiceConfig(max_sentences=5)
    _, choice = resolve_heads(corpus, {"kind": "local", "heads": "top:2:previous"}, build=lambda d: SplitAware(asked),
                              config=config)  # fmt: skip
    assert asked == [corpus.sentences[i] for i in corpus.train_idx[:5]] and choice.sentences == 5
    assert choice.heads == "3.1,0.0"  # ties keep head order


def test_other_descriptions_pass_through_unbuilt():
    def build(description):
        raise AssertionError("nothing is built without top:")

    for description in ({"kind": "local", "heads": "21.4"}, {"kind": "uniform", "n_heads": 2}):
        assert resolve_heads(split_corpus(), description, build=build) == (description, None)


@pytest.mark.parametrize(
    "heads, message",
    [("top:0:previous", "K >= 1"), ("top:x:previous", "top:K:PATTERN"), ("top:2:", "top:K:PATTERN")],
)
def test_malformed_top_is_refused(heads, message):
    with pytest.raises(HeadChoiceError, match=message):
        parse_top(heads)


def test_top_needs_the_local_source_a_known_pattern_and_enough_heads():
    corpus = split_corpus()
    with pytest.raises(HeadChoiceError, match="local LLM"):
        resolve_heads(corpus, {"kind": "openai", "heads": "top:1:previous"}, build=lambda d: SplitAware([]))
    with pytest.raises(Exception, match="unknown pattern"):
        resolve_heads(corpus, {"kind": "local", "heads": "top:1:nope"}, build=lambda d: SplitAware([]))
    with pytest.raises(HeadChoiceError, match="more heads than the 3"):
        resolve_heads(corpus, {"kind": "local", "heads": "top:4:previous"}, build=lambda d: SplitAware([]))
    assert parse_top("top:2:task:copy-after:the").pattern == "task:copy-after:the"


def test_heads_json_round_trip_and_rejection(tmp_path):
    _, choice = resolve_heads(
        split_corpus(), {"kind": "local", "heads": "top:2:previous"}, build=lambda d: SplitAware([])
    )
    assert HeadChoice.read(choice.write(tmp_path).parent) == choice
    assert HeadChoice.read(tmp_path / "nothing-here") is None
    data = json.loads((tmp_path / "heads.json").read_text())
    for change in (
        {"heads": "1.1,0.0"},
        {"split": "all"},
        {"scores": [1.5, 0.1]},
        {"labels": ["head 0", "L0.H0"]},
        {"k": 3},
        {"format": 2},
    ):
        with pytest.raises(HeadChoiceError):
            HeadChoice.from_json({**data, **change})


def test_start_training_writes_heads_json(tmp_path):
    from llmcomp.app.training import TrainRequest, start_training
    from llmcomp.attention import make_source
    from llmcomp.training.config import TrainConfig

    corpus = split_corpus()
    _, choice = resolve_heads(corpus, {"kind": "local", "heads": "top:1:previous"}, build=lambda d: SplitAware([]))
    req = TrainRequest(corpus, make_source("uniform"), train=TrainConfig(steps=2), run_dir=tmp_path / "run",
                       head_choice=choice)  # fmt: skip
    start_training(req)
    assert HeadChoice.read(tmp_path / "run") == choice
    start_training(TrainRequest(corpus, make_source("uniform"), train=TrainConfig(steps=2), run_dir=tmp_path / "r2"))
    assert not (tmp_path / "r2" / "heads.json").exists()


@pytest.mark.slow
def test_cli_train_with_top_heads_on_the_local_llm(tmp_path, capsys):
    from llmcomp.cli import main
    from llmcomp.text.binding import generate_binding_corpus

    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(generate_binding_corpus(24, seed=3)) + "\n")  # 22 training sentences
    run = tmp_path / "run"
    argv = ["train", "--corpus", str(corpus), "--attention", "local", "--llm-heads", "top:2:binding", "--steps", "2",
            "--eval-every", "1", "--run-dir", str(run), "--no-cache"]  # fmt: skip
    assert main(argv) == 0
    choice = HeadChoice.read(run)
    assert choice.k == 2 and choice.sentences == 22 and choice.pattern == "binding"
    assert "heads top:2:binding: L" in capsys.readouterr().out
    assert json.loads((run / "checkpoint" / "checkpoint.json").read_text())["source_spec"]["heads"] == choice.heads


@pytest.mark.slow
def test_compare_chooses_top_heads_on_the_training_split_for_every_seed(tmp_path):
    from llmcomp.experiments import CompareConfig, compare
    from llmcomp.text.binding import generate_binding_corpus
    from llmcomp.text.corpus import parse_corpus

    corpus = parse_corpus("\n".join(generate_binding_corpus(24, seed=3)), name="b.txt")  # 22 training sentences
    label = "local:layers=0-1:heads=top:2:previous"  # the atlas of layers 0-1: 18 heads
    cfg = CompareConfig(sources=[label], seeds=[0, 1], steps=2, out=tmp_path / "cmp", task="none")
    result = compare(corpus, cfg)
    assert not result.failures, result.failures
    choices = [HeadChoice.read(run.path) for run in result.runs]
    assert len(choices) == 2 and choices[0] == choices[1] and choices[0].k == 2 and choices[0].sentences == 22
    assert all(lab.startswith(("L0.", "L1.")) for lab in choices[0].labels)
    spec = json.loads((result.runs[0].path / "checkpoint" / "checkpoint.json").read_text())["source_spec"]
    assert spec["heads"] == choices[0].heads
