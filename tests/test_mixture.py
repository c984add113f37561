"""A learned mixture over a bank of supplied heads (``GPTConfig.mix_heads``, ``--mix``): causal and row-stochastic,
learned toward the head that helps, kept by checkpoints and mixture.json, reachable from the CLI and the web form."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from llmcomp.attention import make_source
from llmcomp.attention.base import PerSentenceSource, validate_attention
from llmcomp.attention.baselines import PreviousSource, UniformSource
from llmcomp.attention.oracle import OracleSource
from llmcomp.cli import build_parser, main
from llmcomp.generation import GenerateConfig, Generator
from llmcomp.model import GPT, GPTConfig
from llmcomp.model.config import ModelConfigError
from llmcomp.text import Vocab, parse_corpus
from llmcomp.text.binding import generate_binding_corpus
from llmcomp.training import CheckpointError, TrainConfig, Trainer, load_checkpoint
from llmcomp.training.checkpoint import Checkpoint, save_checkpoint
from llmcomp.training.mixture import (
    Mixture,
    MixtureError,
    mixture_lines,
    model_mixture,
    read_mixture,
    write_mixture,
)
from llmcomp.training.state import new_optimizer

SENTENCE = "alice owns a cat , bob has a lamp ; bob : lamp , alice : cat .".split()  # noqa: SIM905


class Bank(PerSentenceSource):
    """Three real sources' heads stacked: oracle, uniform, previous (a test helper; each matrix is theirs)."""

    kind = "bank"

    def __init__(self, **kw):
        super().__init__(n_heads=3, **kw)
        self.parts = [OracleSource(), UniformSource(), PreviousSource()]

    def head_labels(self) -> list[str]:
        return ["oracle", "uniform", "previous"]

    def matrix(self, words):
        return torch.cat([p.matrix(words) for p in self.parts])


def mixed_model(vocab_size: int, mix: int = 2, bank: int = 3, seed: int = 0) -> GPT:
    """A two-layer mixture model with random (not equal) mixture weights."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, n_external_heads=bank, mix_heads=mix, n_embd=32)).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.mix_logits.normal_(0, 2.0)
    return model


def test_a_mixture_of_causal_rows_is_causal_and_row_stochastic():
    bank = Bank().score(SENTENCE).unsqueeze(0)  # (1, 3, T, T), validated causal rows
    model = mixed_model(20, mix=2)
    for block in model.blocks:
        w = block.attn.mix_weights()
        assert w.shape == (2, 3) and torch.allclose(w.sum(-1), torch.ones(2))
        mixed = block.attn.supplied_heads(bank)[0]
        assert mixed.shape == (2, len(SENTENCE), len(SENTENCE))
        validate_attention(mixed, len(SENTENCE), 2)  # rows sum to 1, nothing above the diagonal, in [0, 1]
        expect = sum(w[1, k] * bank[0, k] for k in range(3))  # mixed head 1 = its weights times the bank
        assert torch.allclose(mixed[1], expect, atol=1e-6)


def test_mixture_weights_start_equal():
    model = GPT(GPTConfig(vocab_size=10, n_external_heads=4, mix_heads=3))
    for block in model.blocks:
        assert torch.allclose(block.attn.mix_weights(), torch.full((3, 4), 0.25))


def test_no_output_at_a_position_changes_when_a_later_word_changes():
    source, vocab = Bank(), Vocab.build([SENTENCE, ["dog"]])
    model = mixed_model(len(vocab))
    other = list(SENTENCE)
    j = SENTENCE.index(":") + 1  # the recalled noun: change it, and every row after it
    other[j] = "dog"

    def logits(words):
        idx = torch.tensor([vocab.encode(words)])
        return model(idx, source.score(words).unsqueeze(0))[0]

    a, b = logits(SENTENCE), logits(other)
    assert torch.equal(a[:j], b[:j])
    assert not torch.allclose(a[j:], b[j:])  # the change is seen from position j on


def test_a_mixture_needs_heads_to_mix_and_a_source_without_any_trains_without_one():
    with pytest.raises(ModelConfigError, match="mix_heads needs supplied heads"):
        GPTConfig(n_external_heads=0, mix_heads=1)
    with pytest.raises(ModelConfigError, match="mix_heads must be a whole number"):
        GPTConfig(mix_heads=-1)
    corpus = parse_corpus("\n".join(generate_binding_corpus(40, seed=2)), name="b")
    learned = Trainer(corpus, make_source("learned"), GPTConfig(n_layer=1, n_embd=16, mix_heads=2), TrainConfig())
    assert learned.model.config.mix_heads == 0 and learned.model.config.n_learned_heads == 4


def test_weight_decay_leaves_the_mixture_logits_alone():
    """Decay would pull the logits back to equal weights and bias which heads the run reports it chose."""
    model = mixed_model(20)
    opt = new_optimizer(model, lr=1e-3, weight_decay=0.1)
    logits = {id(b.attn.mix_logits) for b in model.blocks}
    for group in opt.param_groups:
        held = {id(p) for p in group["params"]} & logits
        assert not held or group["weight_decay"] == 0.0


@pytest.mark.slow
def test_training_on_the_binding_task_moves_the_weights_to_the_oracle_head():
    """From equal weights (1/3 each) the one layer's mixed head puts at least 0.5 on the oracle after 300
    steps, more than on either other head (measured: 0.59, previous 0.21, uniform 0.20; seeds 1-3: 0.55-0.61)."""
    corpus = parse_corpus("\n".join(generate_binding_corpus(400, seed=1)), name="binding")
    cfg = TrainConfig(steps=300, batch_size=32, lr=3e-3, eval_every=300, patience=0, seed=0)
    trainer = Trainer(corpus, Bank(), GPTConfig(n_layer=1, n_embd=32, mix_heads=1), cfg)
    trainer.run()
    mixture = model_mixture(trainer.model, trainer.source, trainer.step)
    assert mixture.labels == ["oracle", "uniform", "previous"]
    [[oracle, uniform, previous]] = mixture.layers[0]
    assert oracle >= 0.5 and oracle > max(uniform, previous), mixture.layers
    assert mixture_lines(mixture)[0].startswith("layer 1: oracle 0.")


def test_a_checkpoint_keeps_the_mixture_and_generation_mixes_the_sources_heads(tmp_path):
    source = make_source("gaussian", n_heads=2)
    vocab = Vocab.build([SENTENCE])
    model = mixed_model(len(vocab), mix=2, bank=2)
    folder = save_checkpoint(Checkpoint(model, vocab, 3, source.spec(), source.fingerprint(), {}), tmp_path / "ck")
    ck = load_checkpoint(folder)
    assert ck.model.config.mix_heads == 2
    for mine, saved in zip(model.blocks, ck.model.blocks, strict=True):
        assert torch.equal(mine.attn.mix_weights(), saved.attn.mix_weights())
    g = Generator.from_checkpoint(folder)  # rebuilds gaussian: the model mixes its two heads
    words = ["alice", "owns", "a"]
    assert torch.equal(g.next_logits(words)[0], Generator(model, vocab, source).next_logits(words)[0])
    out = g.generate("alice owns", GenerateConfig(seed=1, max_words=4, stop_at_sentence_end=False))
    assert len(out.words) == 4


def test_a_checkpoint_from_before_mixtures_loads_without_one(tmp_path):
    source = make_source("gaussian")
    vocab = Vocab.build([SENTENCE])
    model = GPT(GPTConfig(vocab_size=len(vocab), n_external_heads=2, n_embd=16))
    folder = save_checkpoint(Checkpoint(model, vocab, 1, source.spec(), source.fingerprint(), {}), tmp_path / "ck")
    meta = json.loads((folder / "checkpoint.json").read_text())
    del meta["model_config"]["mix_heads"]
    (folder / "checkpoint.json").write_text(json.dumps(meta))
    assert load_checkpoint(folder).model.config.mix_heads == 0


def test_a_crafted_mixture_size_is_refused_before_a_model_is_built(tmp_path):
    source = make_source("gaussian")
    vocab = Vocab.build([SENTENCE])
    model = mixed_model(len(vocab), mix=1, bank=2)
    folder = save_checkpoint(Checkpoint(model, vocab, 1, source.spec(), source.fingerprint(), {}), tmp_path / "ck")
    meta = json.loads((folder / "checkpoint.json").read_text())
    meta["model_config"]["n_external_heads"] = 10**9  # one mixed head over a billion-head bank
    (folder / "checkpoint.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="mix_heads asks for"):
        load_checkpoint(folder)


def test_mixture_json_round_trip_and_a_damaged_file_is_one_line(tmp_path):
    mixture = Mixture(["a", "b"], [[[0.25, 0.75]], [[1.0, 0.0]]], step=5)
    write_mixture(tmp_path, mixture)
    assert read_mixture(tmp_path) == mixture
    assert read_mixture(tmp_path / "nothing-here") is None
    for bad in ({"layers": [[[0.5, 0.6]]]}, {"layers": [[[0.5, 0.5, 0.0]]]}, {"labels": "ab"}, {"step": -1}):
        (tmp_path / "mixture.json").write_text(json.dumps({**mixture.to_dict(), **bad}))
        with pytest.raises(MixtureError, match="mixture.json cannot be read") as e:
            read_mixture(tmp_path)
        assert "\n" not in str(e.value)


def test_train_and_compare_take_mix_from_gpt_config():
    assert build_parser().parse_args(["train"]).mix == GPTConfig.mix_heads
    from llmcomp.cli.compare import config_from_args

    args = build_parser().parse_args(["compare", "--no-cache", "--mix", "2"])
    assert config_from_args(args).model.mix_heads == 2
    assert config_from_args(build_parser().parse_args(["compare", "--no-cache"])).model.mix_heads == 0


def test_cli_train_with_mix_reports_and_keeps_the_heads_it_chose(tmp_path, capsys):
    corpus = tmp_path / "b.txt"
    corpus.write_text("\n".join(generate_binding_corpus(60, seed=3)), encoding="utf-8")
    run = tmp_path / "run"
    common = ["--corpus", str(corpus), "--n-embd", "16", "--batch-size", "8", "--eval-every", "5", "--no-cache"]
    assert (
        main(["train", *common, "--attention", "gaussian", "--mix", "1", "--steps", "10", "--run-dir", str(run)]) == 0
    )
    out = capsys.readouterr().out
    assert "heads the model chose" in out and "layer 2: head " in out
    mixture = read_mixture(run)
    assert mixture.labels == ["head 0", "head 1"] and len(mixture.layers) == 2 and mixture.step == 10
    assert [len(layer) for layer in mixture.layers] == [1, 1] and mixture.layers[0][0] != [0.5, 0.5]
    assert load_checkpoint(run / "checkpoint").model.config.mix_heads == 1
    # resumed, the mixture and its optimizer moments carry on
    assert main(["train", *common, "--steps", "14", "--resume", str(run)]) == 0
    assert read_mixture(run).step == 14


def test_the_train_form_offers_mix_from_gpt_config():
    from llmcomp.ui import train_actions as act

    assert act.form_defaults()["mix_heads"] == GPTConfig.mix_heads


def test_the_train_status_shows_an_ended_runs_mixture(tmp_path):
    from llmcomp.app.jobs import JobSnapshot
    from llmcomp.ui.train_actions import mixture_note

    write_mixture(tmp_path, Mixture(["oracle", "uniform"], [[[0.8, 0.2]]], step=7))
    shown = mixture_note(JobSnapshot(status="finished", run_dir=str(tmp_path)))
    assert "layer 1: oracle 0.800, uniform 0.200" in shown
    assert mixture_note(JobSnapshot(status="training", run_dir=str(tmp_path))) == ""
    assert mixture_note(JobSnapshot(status="finished", run_dir=str(Path(tmp_path) / "none"))) == ""


def test_compare_with_mix_keeps_each_runs_mixture(tmp_path):
    corpus = tmp_path / "b.txt"
    corpus.write_text("\n".join(generate_binding_corpus(60, seed=4)), encoding="utf-8")
    out = tmp_path / "cmp"
    args = ["--corpus", str(corpus), "--sources", "gaussian,learned", "--seeds", "1", "--steps", "4", "--mix", "2"]
    assert main(["compare", *args, "--n-embd", "16", "--eval-every", "2", "--no-cache", "--out", str(out)]) == 0
    [gaussian] = out.glob("gaussian-seed0")
    mixture = read_mixture(gaussian)
    assert len(mixture.layers) == 1 and len(mixture.layers[0]) == 2 and mixture.step == 4
    [learned] = out.glob("learned-seed0")  # no heads to mix: trained without a mixture
    assert read_mixture(learned) is None and load_checkpoint(learned / "checkpoint").model.config.mix_heads == 0
