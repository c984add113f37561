"""Tasks: decided positions (causal), the registry and its rules, and what compare and train report there."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
import torch

from llmcomp.attention import make_source
from llmcomp.cli import main
from llmcomp.experiments import CompareConfig, compare
from llmcomp.model import GPTConfig
from llmcomp.settings import DATA_DIR, EXAMPLE_CORPUS
from llmcomp.text import Corpus, CorpusConfig, load_corpus
from llmcomp.text.binding import decided_positions
from llmcomp.text.tasks import TASKS, Task, TaskError, get_task, register_task
from llmcomp.training import TrainConfig, Trainer
from llmcomp.training.checkpoint import load_checkpoint
from llmcomp.training.metrics_log import read_metrics

MODEL = GPTConfig(n_layer=1, n_embd=32)
TRAIN = TrainConfig(batch_size=16, eval_every=10, log_every=5)
ARTICLES = ("the", "a")


def article_task(words: list[str]) -> dict[int, int]:
    """Articles after the opening: the task says the sentence's first word decides what follows them."""
    return {i: 0 for i, w in enumerate(words) if i >= 2 and w in ARTICLES}


@pytest.fixture
def registered():
    task = register_task("articles", article_task)
    yield task
    TASKS.pop("articles", None)


@pytest.fixture(scope="module")
def example() -> Corpus:
    full = load_corpus(EXAMPLE_CORPUS)
    return Corpus(full.sentences[:120], name="example-120", config=CorpusConfig(val_fraction=0.25))


@pytest.fixture(scope="module")
def binding() -> Corpus:
    full = load_corpus(DATA_DIR / "binding.txt")
    return Corpus(full.sentences[:120], name="binding-120", config=full.config)


# --- decided positions ----------------------------------------------------------------------------
def test_a_task_registered_in_python_and_the_declarative_rules_mark_the_right_positions(registered):
    words = ["the", "cat", "saw", "a", "dog", "and", "the", "cat", "ran", "to", "the", "dog"]
    assert get_task("articles") is registered and registered.description.startswith("Articles after")
    assert registered.targets(words) == {3: 0, 6: 0, 10: 0}
    # copy-after: a cue seen before decides the next word, the one that followed the cue then
    assert get_task("copy-after:the").targets(words) == {6: 1, 10: 7}
    assert get_task("copy-after:the|dog").targets(words) == {6: 1, 10: 7, 11: 5}
    assert get_task("copy-after").targets(words) == {6: 1, 7: 2, 10: 7, 11: 5}
    # recall: a cue after a key seen before: the word `offset` after the key
    assert get_task("recall:cue=:,offset=2").targets(
        ["bob", "has", "lamp", ",", "ann", "has", "cup", ";", "bob", ":", "lamp"]
    ) == {9: 2}
    # repeat reads the word to predict: position i counts when word i+1 occurred at j <= i
    assert get_task("repeat").targets(words) == {5: 0, 6: 1, 9: 6, 10: 4}
    assert registered.decided(words) == [3, 6, 10] and registered.target(words, 6) == 0
    assert registered.target(words, 4) is None


def test_the_recall_rule_is_the_binding_task_written_declaratively(binding):
    rule = get_task("recall:cue=:,offset=3")
    assert all(rule.targets(s) == dict(decided_positions(s)) for s in binding.sentences)
    assert sum(len(rule.decided(s)) for s in binding.sentences) > 100


CAUSAL = ["binding", "copy-after", "copy-after:the", "recall:cue=:,offset=3", "articles"]


@pytest.mark.parametrize("name", [*CAUSAL, "repeat"])
def test_decided_positions_and_targets_do_not_depend_on_later_words(registered, example, binding, name):
    """Whether i is decided (and by which word) is fixed by words 0..i; ``repeat`` also reads word i+1."""
    task = get_task(name)
    peek = 1 if task.peeks_next else 0
    assert task.peeks_next == (name == "repeat")
    rng = random.Random(0)
    vocab = sorted({w for s in example.sentences + binding.sentences for w in s})
    for words in example.sentences[:60] + binding.sentences[:60]:
        full = task.targets(words)
        for i in range(len(words)):
            known = i + 1 + peek  # words the answer for position i may read
            changed = words[:known] + [rng.choice(vocab) for _ in words[known:]]
            assert task.targets(changed).get(i, "no") == full.get(i, "no"), (name, words, i)
            assert {k: v for k, v in task.targets(words[:known]).items() if k <= i} == {
                k: v for k, v in full.items() if k <= i
            }


def test_registry_errors_are_one_line_and_name_what_is_known(registered):
    with pytest.raises(TaskError, match=r"unknown task 'nope'; known: binding, .*articles.*copy-after"):
        get_task("nope")
    for bad in ("recall:cue=:", "recall:cue=:,offset=x", "recall:offset", "copy-after:a=b"):
        with pytest.raises(TaskError):
            get_task(bad)
    for reserved in ("recall", "copy-after", "auto", "none"):
        with pytest.raises(TaskError, match="built-in rule or choice"):
            register_task(reserved, article_task)
    with pytest.raises(TaskError, match="must be non-empty"):
        register_task("a:b", article_task)
    looking_ahead = Task("ahead", lambda words: {0: 1})
    with pytest.raises(TaskError, match="target 1 of position 0 is not an earlier word"):
        looking_ahead.targets(["a", "b"])
    with pytest.raises(TaskError, match="position 5 in a sentence of 2 words"):
        Task("outside", lambda words: [5]).decided(["a", "b"])


# --- what training reports ------------------------------------------------------------------------
def expected_uniform_mass(corpus: Corpus, task: Task) -> float:
    rows = [1 / (i + 1) for k in corpus.val_idx for i, j in task.targets(corpus.sentences[k]).items() if j is not None]
    return sum(rows) / len(rows)


def test_oracle_puts_all_its_weight_on_the_deciding_word_and_uniform_one_over_i_plus_one(binding):
    task = get_task("binding")
    mass = {}
    for label, source in [("oracle", make_source("oracle")), ("shifted", make_source("oracle", shift=1)),
                          ("uniform", make_source("uniform"))]:  # fmt: skip
        trainer = Trainer(binding, source, MODEL, TRAIN, task="binding")
        trainer.prepare()
        mass[label] = trainer.validate()["target_mass"]
    assert mass["oracle"] == pytest.approx(1.0, abs=1e-6)
    assert mass["shifted"] == pytest.approx(0.0, abs=1e-6)  # points one word off: none on the deciding word
    assert mass["uniform"] == pytest.approx(expected_uniform_mass(binding, task), rel=1e-5)
    # the learned reference has no supplied heads: no target mass, but focus loss and accuracy still
    learned = Trainer(binding, make_source("learned"), MODEL, TRAIN, task="binding")
    learned.prepare()
    val = learned.validate()
    assert "target_mass" not in val and 0.0 <= val["focus_acc"] <= 1.0 and val["focus_loss"] > 0


def with_bos(m: torch.Tensor) -> torch.Tensor:
    """The model's view of a (H, T, T) word matrix: <s> first, attending to itself only."""
    h, t, _ = m.shape
    out = torch.zeros(h, t + 1, t + 1)
    out[:, 0, 0] = 1.0
    out[:, 1:, 1:] = m
    return out


def recompute(checkpoint, corpus: Corpus, task: Task) -> tuple[float, float]:
    """Top-1 accuracy and head-averaged target mass at the task's positions of the validation sentences,
    from the saved model and a fresh source, one sentence at a time (no evaluate, no batching)."""
    ck = load_checkpoint(checkpoint)
    source = make_source(**ck.source_spec)
    ck.model.eval()
    right = total = 0
    masses = []
    for k in corpus.val_idx:
        words = corpus.sentences[k]
        ids = [ck.vocab.bos_id, *ck.vocab.encode(words), ck.vocab.eos_id]
        m = source.matrix(words)
        with torch.no_grad():
            logits = ck.model(torch.tensor([ids[:-1]]), with_bos(m)[None])[0]
        for i, j in task.targets(words).items():
            right += int(int(logits[i + 1].argmax()) == ids[i + 2])
            total += 1
            masses.append(float(m[:, i, j].mean()))
    assert total > 10
    return right / total, sum(masses) / len(masses)


def test_compare_reports_a_custom_tasks_focus_loss_accuracy_and_target_mass(registered, example, tmp_path):
    config = CompareConfig(sources=["uniform", "gaussian"], seeds=[0, 1], steps=20, model=MODEL, train=TRAIN,
                           out=tmp_path / "cmp", task="articles")  # fmt: skip
    result = compare(example, config)
    assert result.focus and result.task == "articles" and not result.failures
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["task"] == "articles"
    table = result.table.set_index("source")
    for run in result.runs:
        last = [m for m in read_metrics(run.path) if "val_loss" in m][-1]
        ck_step = load_checkpoint(run.checkpoint).step
        at_checkpoint = next(m for m in read_metrics(run.path) if m["step"] == ck_step and "val_loss" in m)
        acc, mass = recompute(run.checkpoint, example, registered)
        assert at_checkpoint["val_focus_acc"] == pytest.approx(acc, abs=1e-9)
        assert at_checkpoint["val_target_mass"] == pytest.approx(mass, rel=1e-5)
        assert run.final_val_focus_acc == last["val_focus_acc"]
        assert run.final_val_target_mass == last["val_target_mass"]
    for label in ("uniform", "gaussian"):
        runs = [r for r in result.runs if r.label == label]
        accs = [r.final_val_focus_acc for r in runs]
        assert table.loc[label, "val_focus_acc_mean"] == pytest.approx(sum(accs) / 2)
        assert table.loc[label, "val_focus_acc_std"] == pytest.approx(abs(accs[0] - accs[1]) / 2**0.5)
        assert table.loc[label, "val_focus_loss_mean"] > 0
    # the attention is the same for every seed; uniform's is 1/(i+1) whichever word the task names
    assert table.loc["uniform", "target_mass_mean"] == pytest.approx(expected_uniform_mass(example, registered))
    assert table.loc["uniform", "target_mass_std"] == pytest.approx(0.0, abs=1e-12)
    assert table.loc["gaussian", "target_mass_mean"] != pytest.approx(table.loc["uniform", "target_mass_mean"])
    md = (tmp_path / "cmp" / "table.md").read_text()
    assert "focus acc (mean ± std)" in md and "target mass" in md and "task articles" in md
    # the app's Compare tab shows them beside the losses, and leaves them out where no task was measured
    from llmcomp.app.run_compare import fmt_loss
    from llmcomp.app.run_compare import sources_table as per_source_table

    shown = per_source_table(result.runs).set_index("source")
    assert shown.loc["gaussian", "focus accuracy (mean)"] == fmt_loss(table.loc["gaussian", "val_focus_acc_mean"])
    assert shown.loc["uniform", "target mass (mean)"] == fmt_loss(table.loc["uniform", "target_mass_mean"])
    plain = [replace(r, final_val_focus_loss=None, final_val_focus_acc=None, final_val_target_mass=None)
             for r in result.runs]  # fmt: skip
    assert not {"focus loss (mean)", "focus accuracy (mean)", "target mass (mean)"} & set(per_source_table(plain))


def test_cli_compare_and_train_take_a_declarative_task(example, tmp_path, capsys):
    lines = "\n".join(" ".join(s) for s in example.sentences)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(lines + "\n", encoding="utf-8")
    args = ["--corpus", str(corpus), "--val-fraction", "0.25", "--n-layer", "1", "--n-embd", "32"]
    assert main(["compare", *args, "--sources", "uniform", "--seeds", "1", "--steps", "10", "--task", "copy-after",
                 "--out", str(tmp_path / "cmp"), "--no-cache"]) == 0  # fmt: skip
    out = capsys.readouterr()
    assert "task copy-after" in out.err and "focus acc (mean ± std)" in out.out
    assert main(["train", *args, "--attention", "uniform", "--steps", "10", "--eval-every", "5", "--task",
                 "copy-after", "--run-dir", str(tmp_path / "run")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    last = [m for m in read_metrics(tmp_path / "run") if "val_loss" in m][-1]
    assert (
        f"task copy-after: focus loss {last['val_focus_loss']:.4f}, focus accuracy {last['val_focus_acc']:.3f}" in out
    )
    assert f"target mass {last['val_target_mass']:.3f}" in out
    assert main(["train", *args, "--steps", "2", "--task", "nope", "--run-dir", str(tmp_path / "bad")]) == 2
    assert "error: unknown task 'nope'; known: binding" in capsys.readouterr().err
