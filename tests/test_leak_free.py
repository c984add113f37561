"""Validation is leak-free (issue 12, item 1): a source whose rows may see later words is validated on the rows
generation sees (each row scored from its prefix alone), and that is the val loss reported.

The leaky source is real: an OpenAI-compatible ``sentence``-mode source over HTTP to the fake server's ``leak``
model, whose row i puts its weight on the earlier occurrence of the NEXT word.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from llmcomp.app.run_compare import runs_table
from llmcomp.app.scoring import estimate
from llmcomp.attention.base import PerSentenceSource
from llmcomp.attention.openai_source import OpenAISource
from llmcomp.attention.prefix_rows import score_prefix_rows, unique_prefixes
from llmcomp.attention.registry import make_source
from llmcomp.cli import main
from llmcomp.experiments.table_markdown import table_markdown
from llmcomp.experiments.tables import summarize_runs, summary_table
from llmcomp.generation.generator import Generator
from llmcomp.model.gpt import GPT, GPTConfig
from llmcomp.testing.behaviours import leak_answer
from llmcomp.text.corpus import CorpusConfig, parse_corpus
from llmcomp.text.vocab import Vocab
from llmcomp.training.config import TrainConfig
from llmcomp.training.data import prepare_data, sentences_to_score
from llmcomp.training.run_summary import SEEN_COLUMN
from llmcomp.training.trainer import Trainer
from llmcomp.ui.train_tab import leak_badge

BINDING = Path(__file__).resolve().parents[1] / "data" / "binding.txt"
SENTENCES = ["tina keeps a jar , dave keeps a boat ; tina : jar .", "bob owns a coat ; bob : coat ."]
#: Trained with the CLI's flags below, the leak-free val loss of the leaky source is at least this close to
#: uniform's (measured: uniform 1.77, leaky 2.26 leak-free, 1.39 under its training-time rows)
MARGIN = 0.05


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLMCOMP_OPENAI_MODEL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LLMCOMP_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)  # no .env from the developer's checkout
    return tmp_path


@pytest.fixture
def leaky(fake_openai, clean_env):
    src = OpenAISource(base_url=fake_openai.url, model="leak", api_key="dummy", mode="sentence", timeout=5.0)
    try:
        yield src
    finally:
        src.close()


def small_corpus(n: int = 40, val_fraction: float = 0.2):
    text = "\n".join(BINDING.read_text(encoding="utf-8").splitlines()[:n])
    return parse_corpus(text, "binding-small", CorpusConfig(val_fraction=val_fraction))


# --- the fake server's leak model --------------------------------------------------------------
def test_leak_model_weights_the_earlier_occurrence_of_the_next_word():
    words = ["a", "b", "c", "a", "b"]
    data = {"task": "sentence", "words": words, "heads": ["meaning"], "score_max": 9}
    rows = leak_answer(data)["meaning"]
    # row 2 (c) looks at the next word a: at 0; row 3 (a) at the next word b: at 1; row 0: next b unseen -> itself
    assert rows[2] == [9, 0, 0] and rows[3] == [0, 9, 0, 0] and rows[0] == [9] and rows[4] == [0, 0, 0, 0, 9]
    prefix = leak_answer({**data, "task": "prefix", "words": words[:3]})["meaning"]
    assert prefix == [0, 0, 9]  # a prefix has no next word to peek at


# --- one home for the rows generation sees -------------------------------------------------------
def test_prefix_rows_are_the_rows_generation_uses(leaky, fake_openai):
    words = SENTENCES[0].split()
    rows = score_prefix_rows(leaky, [words]).require_all()[0]
    vocab = Vocab.build([words])
    g = Generator(GPT(GPTConfig(vocab_size=len(vocab), n_external_heads=1, n_embd=16)), vocab, leaky)
    assert torch.allclose(rows, g._rows(words), atol=1e-6)
    # and they are not the training-time rows: the leak exists
    assert not torch.allclose(rows, leaky.score(words), atol=1e-3)


def test_prefixes_are_scored_once_in_one_call(leaky, fake_openai):
    """Every distinct prefix is one request (two sentences share 'bob owns a'... only as their own prefixes)."""
    sentences = [s.split() for s in SENTENCES] + [["bob", "owns", "a", "hat"]]
    fake_openai.reset_counts()
    result = score_prefix_rows(leaky, sentences)
    assert fake_openai.requests == len(unique_prefixes(sentences)) < sum(len(s) for s in sentences)
    assert all(m is not None for m in result.matrices) and not result.failures


def test_a_failed_prefix_fails_its_sentence_with_the_reason(leaky, fake_openai):
    fake_openai.add_fault("nan", times=None, match="coat", task="sentence")
    result = score_prefix_rows(leaky, [s.split() for s in SENTENCES])
    assert result.matrices[0] is not None and result.matrices[1] is None
    assert result.failures[1].startswith("prefix of 4 word(s):") and "not finite" in result.failures[1]


class PeekNext(PerSentenceSource):
    """A local non-prefix-causal source (row i on the latest earlier occurrence of word i+1), counting calls."""

    kind = "peek-next"
    prefix_causal = False
    calls = 0

    def score_many(self, sentences, progress=None):
        PeekNext.calls += 1
        return super().score_many(sentences, progress)

    def matrix(self, words):
        t = len(words)
        m = torch.zeros(1, t, t)
        for i in range(t):
            nxt = words[i + 1] if i + 1 < t else None
            m[0, i, max((j for j in range(i + 1) if words[j] == nxt), default=i)] = 1.0
        return m


def test_prepare_data_validates_on_prefix_rows_and_keeps_the_seen_ones():
    corpus = small_corpus()
    vocab = corpus.vocab()
    PeekNext.calls = 0
    source = PeekNext()
    data = prepare_data(corpus, source, vocab)
    assert PeekNext.calls == 1  # corpus and held-out prefixes in one bulk call
    assert data.val_scored_by_prefix and len(data.val_seen_examples) == len(data.val_examples) == len(corpus.val_idx)
    for k, i in enumerate(corpus.val_idx):
        words = corpus.sentences[i]
        expected = score_prefix_rows(source, [words]).require_all()[0]
        assert torch.equal(data.val_examples[k].att[:, 1:, 1:], expected)  # position 0 is <s>
        assert torch.equal(data.val_seen_examples[k].att[:, 1:, 1:], source.score(words))
    causal = prepare_data(corpus, make_source("uniform"), vocab)
    assert not causal.val_scored_by_prefix and causal.val_seen_examples == []


# --- the estimate counts the prefix requests ------------------------------------------------------
def test_training_estimate_counts_the_held_out_prefixes_and_matches_what_is_sent(leaky, fake_openai):
    corpus = small_corpus()
    sentences = sentences_to_score(corpus, leaky)
    extra = unique_prefixes([corpus.sentences[i] for i in corpus.val_idx], exclude=corpus.sentences)
    assert len(sentences) == len(corpus.sentences) + len(extra) and extra
    est = estimate(leaky, sentences)
    fake_openai.reset_counts()
    prepare_data(corpus, leaky, corpus.vocab())
    assert est.requests == fake_openai.requests == len(set(map(tuple, sentences)))
    prefix_mode = OpenAISource(dataclasses.replace(leaky.config, mode="prefix"))
    try:
        assert sentences_to_score(corpus, prefix_mode) == [list(s) for s in corpus.sentences]  # causal: no extra
    finally:
        prefix_mode.close()


# --- the reported number -------------------------------------------------------------------------
def test_trainer_reports_the_leak_free_loss_and_the_seen_one_beside_it():
    """Library level, no HTTP: a local source peeking at the next word reports val_loss on prefix rows (no
    better than uniform's) and val_loss_seen, the loss under its training-time rows, far lower."""
    corpus = small_corpus(80)
    mc, tc = GPTConfig(n_layer=1, n_embd=32), TrainConfig(steps=120, eval_every=120, batch_size=16, seed=0)
    uniform = Trainer(corpus, make_source("uniform"), mc, tc).run().metrics[-1]
    peek = Trainer(corpus, PeekNext(), mc, tc).run().metrics[-1]
    assert "val_loss_seen" not in uniform
    assert peek["val_loss"] >= uniform["val_loss"] - MARGIN, (peek, uniform)
    assert peek["val_loss_seen"] < peek["val_loss"] - 0.3, peek


def train_cli(args: list[str], run_dir: Path, capsys) -> tuple[dict, str]:
    common = ["--corpus", str(clean_corpus_file(run_dir.parents[1])), "--val-fraction", "0.2", "--no-cache",
              "--steps", "150", "--eval-every", "150", "--batch-size", "16", "--n-layer", "1", "--n-embd", "32",
              "--seed", "0", "--run-dir", str(run_dir)]  # fmt: skip
    assert main(["train", *common, *args]) == 0
    err = capsys.readouterr().err
    lines = (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return json.loads(lines[-1]), err


def clean_corpus_file(folder: Path) -> Path:
    path = folder / "binding-120.txt"
    if not path.exists():
        path.write_text("\n".join(BINDING.read_text(encoding="utf-8").splitlines()[:120]) + "\n", encoding="utf-8")
    return path


@pytest.mark.slow  # two CLI runs, one of ~600 requests over HTTP: 11-14 s on a shared 2-core machine
def test_reported_val_loss_of_a_leaky_source_is_leak_free(fake_openai, clean_env, capsys):
    """The leaky source reports a validation loss no better than uniform's (it is what generation gets), while
    its loss under the training-time rows, shown beside it, is far lower: the leak exists and is not reported."""
    uniform, err_u = train_cli(["--attention", "uniform"], clean_env / "runs" / "uniform", capsys)
    leak, err = train_cli(
        [
            "--attention",
            "openai",
            "--mode",
            "sentence",
            "--base-url",
            fake_openai.url,
            "--model",
            "leak",
            "--max-concurrency",
            "16",
        ],
        clean_env / "runs" / "leak",
        capsys,
    )
    assert "val_loss_seen" not in uniform and "prefix by prefix" not in err_u
    assert leak["val_loss"] >= uniform["val_loss"] - MARGIN, (leak, uniform)
    assert leak["val_loss_seen"] < uniform["val_loss"] - 0.2 and leak["val_loss_seen"] < leak["val_loss"] - 0.3
    warnings = [line for line in err.splitlines() if "prefix by prefix" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and "val_loss_seen" in warnings[0]
    # compare marks the row; the app's run table and badge show the seen loss beside the reported one
    runs = summarize_runs(clean_env / "runs")
    md = table_markdown(summary_table(runs))
    assert "| openai † |" in md and "| uniform |" in md and "prefix by prefix" in md.splitlines()[-1]
    from llmcomp.training.run_summary import read_run

    table = runs_table([read_run(clean_env / "runs" / n) for n in ("uniform", "leak")]).set_index("folder")
    assert table[SEEN_COLUMN]["uniform"] == "" and table[SEEN_COLUMN]["leak"] == f"{leak['val_loss_seen']:.3f}"
    assert leak_badge({"metrics": [uniform]}) == "" and "leak-free" in leak_badge({"metrics": [leak]})
