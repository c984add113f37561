"""The task suite (issue 14): generators whose right attention is known, their rules, oracles and corpora.

Hand-checked sentences pin each rule's exact (i, j); every generated line is honest (its next word
is the deciding word's, or its number); rules and oracles are causal; the bundled files are what
``llmcomp tasks make`` writes and load back unchanged; the oracle of each task beats uniform where
the task decides the next word, and its shifted control does not.
"""

from __future__ import annotations

import random

import pytest
import torch

from llmcomp.attention import make_source
from llmcomp.attention.atlas import default_patterns, head_atlas
from llmcomp.attention.base import AttentionError
from llmcomp.attention.registry import describe_spec
from llmcomp.cli import main
from llmcomp.experiments.compare import resolve_task
from llmcomp.experiments.compare_sources import auto_sources
from llmcomp.experiments.labels import parse_source
from llmcomp.model import GPTConfig
from llmcomp.settings import DATA_DIR, EXAMPLE_CORPUS
from llmcomp.text import Corpus, CorpusConfig, load_corpus, parse_corpus, tokenize
from llmcomp.text.task_corpora import GENERATORS, TaskCorpusError, generate, write_lines
from llmcomp.text.task_words import AGREEMENT_NOUNS, AGREEMENT_VERBS, INDUCTION_WORDS
from llmcomp.text.tasks import auto_task, get_task
from llmcomp.training import TrainConfig, Trainer

SUITE = ("induction", "ioi", "agreement", "coreference")
ALL = (*SUITE, "binding")
PLURALS = {p for _, p in AGREEMENT_NOUNS}


def targets(task: str, text: str) -> dict[int, int]:
    return get_task(task).targets(tokenize(text))


# --- hand-checked examples ---------------------------------------------------------------------------
def test_induction_points_at_the_word_after_the_earlier_copy():
    # lamp0 river1 chair2 ,3 river4 chair5 .6: at the second river the next word is chair (2); the
    # second chair's earlier follower is "," (not a word): not decided
    assert targets("induction", "lamp river chair, river chair.") == {4: 2}
    assert targets("induction", "apple cloud lamp, apple cloud lamp.") == {4: 1, 5: 2}
    assert targets("induction", "the cat saw the dog") == {3: 1}  # ordinary text: the latest earlier copy
    assert targets("induction", "a b, c d.") == {}


def test_ioi_points_at_the_name_that_was_not_repeated():
    # when0 mary1 and2 john3 went4 to5 the6 store7 ,8 john9 gave10 a11 drink12 to13
    assert targets("ioi", "when mary and john went to the store, john gave a drink to mary.") == {13: 1}
    assert targets("ioi", "when mary and john went to the store, mary gave a drink to john.") == {13: 3}
    assert targets("ioi", "after anna and tom were at the zoo, anna handed a map to") == {13: 3}
    assert targets("ioi", "when mary and john went to the store, kate gave a drink to") == {}  # a third name
    assert targets("ioi", "mary and john went to the store, john gave a drink to mary.") == {}  # no opener


def test_agreement_points_at_the_head_noun_across_attractors():
    assert targets("agreement", "the key to the cabinets usually is old.") == {5: 1}
    # the0 keys1 near2 the3 door4 behind5 the6 box7 often8 are9
    assert targets("agreement", "the keys near the door behind the box often are red.") == {8: 1}
    assert targets("agreement", "the key usually is old.") == {}  # no attractor phrase
    assert targets("agreement", "a key to the cabinets usually is old.") == {}


def test_coreference_points_at_the_antecedent_that_agrees():
    # the0 king1 met2 the3 queen4 ,5 and6 she7 ,8 the9: "she" can only be the queen
    assert targets("coreference", "the king met the queen, and she, the queen, smiled.") == {9: 4}
    assert targets("coreference", "the king met the queen, and he, the king, smiled.") == {9: 1}
    assert targets("coreference", "the kings met the queen, and they, the kings, left.") == {9: 1}  # by number
    assert targets("coreference", "the king met the queens, and he, the king, left.") == {9: 1}
    assert targets("coreference", "the king met the prince, and he, the king, left.") == {}  # ambiguous


def test_binding_is_the_existing_task():
    assert targets("binding", "tina keeps a jar, dave keeps a boat; tina: jar.") == {11: 3}


# --- every generated line is honest -------------------------------------------------------------------
@pytest.fixture(scope="module")
def lines() -> dict[str, list[str]]:
    return {name: generate(name, 300, seed=3) for name in ALL}


@pytest.mark.parametrize("name", ALL)
def test_every_generated_line_has_decided_positions_and_the_next_word_follows_the_target(lines, name):
    task, total = get_task(name), 0
    for line in lines[name]:
        words = tokenize(line)
        found = task.targets(words)
        assert found, line
        for i, j in found.items():
            assert j < i and i + 1 < len(words), line
            if name == "agreement":  # the verb's number is the head noun's
                assert words[i + 1] == AGREEMENT_VERBS[words[j] in PLURALS], line
            else:  # the next word is the deciding word (copied)
                assert words[i + 1] == words[j], line
        total += len(found)
    assert total >= len(lines[name])


def test_induction_marks_every_repeated_word_but_the_last(lines):
    for line in lines["induction"]:
        words = tokenize(line)
        comma = words.index(",")
        repeated = len(words) - comma - 2  # words after the comma, less the full stop
        assert list(get_task("induction").targets(words)) == list(range(comma + 1, len(words) - 2)), line
        assert repeated >= 2 and set(words[:comma]) <= set(INDUCTION_WORDS)


def test_attractors_mostly_disagree_with_the_head(lines):
    heads = attractors = against = 0
    for line in lines["agreement"]:
        words = tokenize(line)
        nouns = [words[k + 1] for k, w in enumerate(words) if w == "the"]
        heads += 1
        attractors += len(nouns) - 1
        against += sum((n in PLURALS) != (nouns[0] in PLURALS) for n in nouns[1:])
    assert attractors >= heads and 0.6 < against / attractors < 0.8


@pytest.mark.parametrize("name", ALL)
def test_generators_are_seeded(name):
    assert generate(name, 50, seed=5) == generate(name, 50, seed=5)
    assert generate(name, 50, seed=5) != generate(name, 50, seed=6)


@pytest.mark.parametrize("name", ALL)
def test_rules_are_causal(lines, name):
    """Targets of a prefix are the full sentence's targets inside it: row i never reads word i+1."""
    task = get_task(name)
    for line in lines[name][:100]:
        words = tokenize(line)
        full = task.targets(words)
        for p in range(len(words) + 1):
            assert task.targets(words[:p]) == {i: j for i, j in full.items() if i < p}, (line, p)


@pytest.mark.parametrize("name", ALL)
def test_the_oracle_is_causal(lines, name):
    """Changing word k leaves every row before k unchanged."""
    oracle, rng = make_source("oracle", task=name, n_heads=2), random.Random(0)
    for line in lines[name][:40]:
        words = tokenize(line)
        base = oracle.matrix(words)
        assert torch.allclose(base.sum(-1), torch.ones(2, len(words)))
        assert torch.equal(base, base.tril())
        for k in range(len(words)):
            changed = [*words[:k], rng.choice(words), *words[k + 1 :]]
            assert torch.equal(oracle.matrix(changed)[:, :k, :k], base[:, :k, :k])


# --- corpora on disk --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("split", ["auto", "lines"])
def test_every_task_round_trips_through_the_corpus_loader(lines, name, split):
    corpus = parse_corpus("\n".join(lines[name]) + "\n", name, CorpusConfig(split=split))
    assert corpus.sentences == [tokenize(line) for line in lines[name]]  # no line cut, no word split
    task = get_task(name)
    assert [task.targets(s) for s in corpus.sentences] == [task.targets(tokenize(x)) for x in lines[name]]


@pytest.mark.parametrize("name", SUITE)
def test_bundled_file_is_what_the_documented_command_writes(name, tmp_path, capsys):
    out = tmp_path / f"{name}.txt"
    assert main(["tasks", "make", name, "--sentences", "2000", "--out", str(out)]) == 0
    assert f"wrote 2000 {name} sentences" in capsys.readouterr().out
    bundled = DATA_DIR / f"{name}.txt"
    assert out.read_bytes() == bundled.read_bytes()
    assert bundled.stat().st_size < 200_000
    corpus = load_corpus(bundled)  # the default (auto) split: the corpus picker's
    assert len(corpus.sentences) == 2000 and auto_task(corpus.sentences).name == name


def test_auto_recognises_each_generated_corpus_and_leaves_ordinary_text_alone(lines):
    for name in ALL:
        assert auto_task([tokenize(x) for x in lines[name]]).name == name
    assert auto_task(load_corpus(EXAMPLE_CORPUS).sentences) is None
    ioi = Corpus([tokenize(x) for x in lines["ioi"]], name="ioi")
    assert "oracle:task=ioi" in auto_sources(ioi)[0]
    from llmcomp.experiments import CompareConfig

    assert resolve_task(CompareConfig(), ioi).name == "ioi"


def test_cli_list_and_one_line_errors(capsys, tmp_path):
    assert main(["tasks", "list"]) == 0
    out = capsys.readouterr().out
    for name in ALL:
        assert f"\n{name} " in "\n" + out
    assert main(["tasks", "make", "nosuch", "--out", str(tmp_path / "x.txt")]) == 2
    assert "no generator for task 'nosuch'; choose one of: induction" in capsys.readouterr().err
    with pytest.raises(TaskCorpusError, match="--sentences must be"):
        generate("ioi", 0)
    (tmp_path / "file").write_text("")
    with pytest.raises(TaskCorpusError, match="cannot write .*choose another --out"):
        write_lines(tmp_path / "file" / "x.txt", ["a b."])
    assert set(GENERATORS) == set(ALL)


# --- the oracle's task option -----------------------------------------------------------------------
def test_the_default_oracle_spec_is_unchanged_and_a_task_is_kept():
    assert make_source("oracle").spec() == {"kind": "oracle", "n_heads": 1, "shift": 0, "weight": 1.0}
    assert make_source("oracle").fingerprint() == make_source("oracle", task="binding").fingerprint()
    kind, options = parse_source("oracle:task=ioi:shift=1")
    src = make_source(kind, **options)
    assert src.spec() == {"kind": "oracle", "n_heads": 1, "shift": 1, "weight": 1.0, "task": "ioi"}
    assert make_source(**src.spec()).fingerprint() == src.fingerprint() != make_source("oracle").fingerprint()
    assert describe_spec(src.spec()) == "oracle (1 head, task ioi, shift 1)" and "task ioi" in src.describe()
    with pytest.raises(AttentionError, match="reads the word it predicts") as e:
        make_source("oracle", task="repeat")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("name", ALL)
def test_every_task_is_an_atlas_pattern_the_oracle_scores_one_on(lines, name):
    assert name in default_patterns()
    sentences = [tokenize(x) for x in lines[name][:60]]
    exact = head_atlas(make_source("oracle", task=name, n_heads=2), sentences, [name])
    assert exact.rows[0] > 0 and torch.allclose(exact.scores[0], torch.ones(2))
    shifted = head_atlas(make_source("oracle", task=name, shift=1), sentences, [name])
    assert float(shifted.scores[0, 0]) == pytest.approx(0.0, abs=1e-6)


# --- the oracle decides the task, its shifted control does not -----------------------------------------
# Measured (400 sentences, 150 steps, seed 0), focus loss uniform / oracle / shift=1:
#   induction 5.17 / 0.14 / 4.81; ioi 3.01 / 0.05 / 3.24; agreement 0.72 / 0.01 / 0.70; coreference 3.00 / 0.40 / 4.29
MODEL = GPTConfig(n_layer=1, n_embd=64)
TRAIN = TrainConfig(steps=150, batch_size=32, lr=1e-2, eval_every=150, log_every=150, seed=0)


@pytest.fixture(scope="module")
def focus_losses() -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name in SUITE:
        full = load_corpus(DATA_DIR / f"{name}.txt")
        corpus = Corpus(full.sentences[:400], name=f"{name}-400", config=full.config)
        out[name] = {}
        for label, spec in [("uniform", {"kind": "uniform"}), ("oracle", {"kind": "oracle", "task": name}),
                            ("shifted", {"kind": "oracle", "task": name, "shift": 1})]:  # fmt: skip
            result = Trainer(corpus, make_source(**spec), MODEL, TRAIN, task=name).run()
            out[name][label] = result.metrics[-1]["val_focus_loss"]
    print(out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", SUITE)
def test_the_oracle_drives_focus_loss_far_below_uniform_and_the_shifted_oracle_does_not(focus_losses, name):
    loss = focus_losses[name]
    assert loss["oracle"] < loss["uniform"] / 4, loss  # measured: 1/7 (coreference) to 1/70
    assert loss["shifted"] > loss["uniform"] * 0.7, loss  # measured: 0.93 to 1.43 of uniform's
