"""The oracle end to end: it must beat uniform on the binding task, lose that edge when misaligned,
and survive checkpoint, reload in a new process and generation with its rows still on the right words.

If rows were off by one anywhere between the source, the batches, the checkpoint and the
generator, the oracle would point at the wrong word and behave like its shifted controls.
Also: ``learned`` and ``local`` checkpoints generate from a new process (``llmcomp generate``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llmcomp.attention import make_source
from llmcomp.experiments.compare import binding_focus
from llmcomp.model import GPTConfig
from llmcomp.settings import DATA_DIR, EXAMPLE_CORPUS
from llmcomp.text import Corpus, load_corpus, tokenize
from llmcomp.text.binding import decided_positions
from llmcomp.training import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[1]

# Small and short on purpose (a shared 2-core CPU): one layer is enough to copy the word a supplied
# head points at. Measured with these settings (800 sentences, 250 steps, seed 0):
#   uniform   overall 1.653, decided positions 3.628
#   oracle    overall 1.363, decided positions 0.045
#   shift +1  overall 1.653, decided positions 3.622;  shift -1  overall 1.649, decided positions 3.625
MODEL = GPTConfig(n_layer=1, n_embd=64)
TRAIN = TrainConfig(steps=250, batch_size=32, lr=1e-2, eval_every=250, log_every=50, seed=0)
N_SENTENCES = 800
# The margins by which an attention must beat uniform, in nats per word on the validation sentences:
FOCUS_MARGIN = 2.0  # on the decided positions (the noun after "name :"); measured: 3.6
OVERALL_MARGIN = 0.15  # on every predicted word; measured: 0.29

PROMPTS = [  # unseen combinations; the answer is the noun bound to the name before ":"
    ("tina keeps a jar, dave keeps a boat; dave:", "boat"),
    ("tina keeps a jar, dave keeps a boat; tina:", "jar"),
    ("alice owns a harp, bob has a glove, carol keeps a radio; bob:", "glove"),
    ("alice owns a harp, bob has a glove, carol keeps a radio; carol:", "radio"),
    ("zoe has a ladder, omar owns a piano, ivy keeps a sock, leo has a tent; ivy:", "sock"),
    ("zoe has a ladder, omar owns a piano, ivy keeps a sock, leo has a tent; zoe:", "ladder"),
    ("sam owns a kite, rosa has a mug; rosa: mug, sam:", "kite"),
    ("paul keeps a wagon, mia owns a flute, nick has a clock; nick: clock, paul:", "wagon"),
]


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmcomp", *args], input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=300
    )


@pytest.fixture(scope="module")
def binding() -> Corpus:
    full = load_corpus(DATA_DIR / "binding.txt")
    return Corpus(full.sentences[:N_SENTENCES], name="binding-800", config=full.config)


@pytest.fixture(scope="module")
def runs(binding, tmp_path_factory) -> dict[str, dict]:
    """Final validation losses of uniform, the oracle and two misaligned oracles (same split, seed, steps)."""
    out = {}
    for name, source in [
        ("uniform", make_source("uniform")),
        ("oracle", make_source("oracle")),
        ("shift+1", make_source("oracle", shift=1)),
        ("shift-1", make_source("oracle", shift=-1)),
    ]:
        run_dir = tmp_path_factory.mktemp(name) if name == "oracle" else None
        result = Trainer(binding, source, MODEL, TRAIN, run_dir=run_dir, focus=binding_focus).run()
        last = result.metrics[-1]
        out[name] = {"loss": last["val_loss"], "focus": last["val_focus_loss"], "checkpoint": result.checkpoint}
    print({k: (round(v["loss"], 3), round(v["focus"], 3)) for k, v in out.items()})
    return out


def beats_uniform(run: dict, uniform: dict) -> bool:
    """The claim under test: lower than uniform by both margins."""
    return run["focus"] <= uniform["focus"] - FOCUS_MARGIN and run["loss"] <= uniform["loss"] - OVERALL_MARGIN


def test_oracle_beats_uniform_by_the_stated_margins(runs):
    oracle, uniform = runs["oracle"], runs["uniform"]
    assert oracle["focus"] <= uniform["focus"] - FOCUS_MARGIN, (oracle, uniform)
    assert oracle["loss"] <= uniform["loss"] - OVERALL_MARGIN, (oracle, uniform)
    assert beats_uniform(oracle, uniform)


@pytest.mark.parametrize("name", ["shift+1", "shift-1"])
def test_a_misaligned_oracle_does_not_beat_uniform(runs, name):
    shifted, uniform = runs[name], runs["uniform"]
    assert not beats_uniform(shifted, uniform), (shifted, uniform)
    # not a near miss either: on the decided positions it is no better than uniform by half the margin
    assert shifted["focus"] > uniform["focus"] - FOCUS_MARGIN / 2, (shifted, uniform)


def test_oracle_rows_point_at_the_bound_noun():
    words = tokenize(PROMPTS[2][0])
    m = make_source("oracle").score(words)[0]
    (i, j), *_ = decided_positions(words).items()
    assert words[i] == ":" and words[j] == "glove" and m[i, j] == 1.0
    shifted = make_source("oracle", shift=1).score(words)[0]
    assert shifted[i, j] == 0.0 and shifted[i, j + 1] == 1.0


def test_reloaded_oracle_recalls_the_bound_noun_in_a_new_process(runs):
    """Checkpoint -> new process -> generate at temperature 0: the word after "name :" is name's noun."""
    ck = runs["oracle"]["checkpoint"]
    assert (ck / "checkpoint.json").is_file()
    stdin = "".join(p + "\n" for p, _ in PROMPTS)
    r = cli("generate", "--checkpoint", str(ck), "--interactive", "--temperature", "0", "--max-words", "1", stdin=stdin)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    assert len(lines) == len(PROMPTS), r.stdout
    got = [tokenize(line)[-1] for line in lines]
    want = [answer for _, answer in PROMPTS]
    assert got == want, list(zip(lines, want, strict=True))


def test_reloaded_oracle_uses_the_pointer_row_in_generation(runs):
    """The attention the new process used for the ":" row puts all its weight on the bound noun."""
    prompt, answer = PROMPTS[4]
    r = cli(
        "generate", "--checkpoint", str(runs["oracle"]["checkpoint"]), "--prompt", prompt,
        "--temperature", "0", "--max-words", "1", "--show-attention",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout.splitlines()[-1])
    words, att = data["words"], torch.tensor(data["attention"])
    i = len(tokenize(prompt)) - 1  # the ":" that asks for ivy's noun
    assert words[i] == ":" and words[i + 1] == answer
    j = words.index(answer)
    assert att[0, i, j] == pytest.approx(1.0) and att[0, i].sum() == pytest.approx(1.0)


def _generate_in_new_process(checkpoint: Path, prompt: str) -> tuple[list[str], torch.Tensor]:
    r = cli(
        "generate", "--checkpoint", str(checkpoint), "--prompt", prompt, "--max-words", "4", "--seed", "1",
        "--show-attention",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout.splitlines()[-1])
    return data["words"], torch.tensor(data["attention"])


def test_learned_checkpoint_generates_in_a_new_process(tmp_path):
    corpus = load_corpus(EXAMPLE_CORPUS)
    cfg = TrainConfig(steps=30, batch_size=16, eval_every=30)
    trainer = Trainer(corpus, make_source("learned"), GPTConfig(n_layer=1, n_embd=32), cfg, run_dir=tmp_path)
    ck = trainer.run().checkpoint
    words, att = _generate_in_new_process(ck, "the cat")
    vocab = corpus.vocab()
    assert words[:2] == ["the", "cat"] and len(words) > 2
    assert all(w in vocab for w in words)
    assert att.shape[0] == 0  # no supplied heads: the model's own attention did the work


def test_local_llm_checkpoint_generates_in_a_new_process(tmp_path):
    """Tiny training (a few steps) with the real local LLM; the new process rebuilds the source from the
    checkpoint's spec and scores the prompt with it (the rows it used match this process's scoring)."""
    full = load_corpus(EXAMPLE_CORPUS)
    corpus = Corpus(full.sentences[:24], name="example-24", config=full.config)
    source = make_source("local", layers="first-2")  # the real model, only its first layers run: faster
    cfg = TrainConfig(steps=4, batch_size=8, eval_every=4)
    ck = Trainer(corpus, source, GPTConfig(n_layer=1, n_embd=32), cfg, run_dir=tmp_path).run().checkpoint
    assert json.loads((ck / "checkpoint.json").read_text())["source_spec"]["kind"] == "local"
    words, att = _generate_in_new_process(ck, "my mother")
    assert words[:2] == ["my", "mother"] and len(words) > 2
    assert att.shape == (1, len(words), len(words))
    expected = source.score(words)  # row i of a prefix never changes, so the full sentence's rows match
    assert torch.allclose(att, expected, atol=1e-4)
