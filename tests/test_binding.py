"""The binding-recall corpus, its decided positions, and the oracle attention source."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from llmcomp.attention import make_source, validate_attention
from llmcomp.attention.oracle import OracleSource
from llmcomp.text import load_corpus, parse_corpus, tokenize
from llmcomp.text.binding import (
    RECALL,
    VERBS,
    BindingConfig,
    BindingError,
    binding_sentence,
    decided_positions,
    generate_binding_corpus,
    main,
)

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def bundled() -> list[list[str]]:
    return load_corpus(DATA / "binding.txt").sentences


def test_generator_is_deterministic_per_seed_and_varies_across_seeds():
    a = generate_binding_corpus(200, seed=3)
    assert a == generate_binding_corpus(200, seed=3)
    assert a != generate_binding_corpus(200, seed=4)
    assert len(a) == 200
    assert len(set(a)) > 190  # varied, not one sentence repeated


def test_sentences_round_trip_through_the_corpus_loader():
    config = BindingConfig()
    rng = random.Random(11)
    tokens = [binding_sentence(rng, config) for _ in range(300)]
    lines = generate_binding_corpus(300, seed=11)
    corpus = parse_corpus("\n".join(lines))
    assert corpus.sentences == tokens  # one line is one sentence, token for token
    assert max(len(s) for s in tokens) <= min(60, config.max_words)


def test_bundled_file_is_what_the_documented_command_writes(bundled, tmp_path):
    out = tmp_path / "b.txt"
    main(["--out", str(out), "--n", "2000", "--seed", "7"])
    assert out.read_bytes() == (DATA / "binding.txt").read_bytes()
    assert len(bundled) == 2000
    assert (DATA / "binding.txt").stat().st_size < 200_000


def test_decided_word_is_the_next_word_everywhere(bundled):
    total = 0
    for words in bundled:
        decided = decided_positions(words)
        assert len(decided) == words.count(RECALL)  # every recall is found, nothing else is
        for i, j in decided.items():
            assert words[i] == RECALL
            assert j < i - 1
            assert words[j] == words[i + 1]
        total += len(decided)
    assert total > 3000


def test_decided_positions_are_causal(bundled):
    for words in bundled[:200]:
        full = decided_positions(words)
        for p in range(len(words) + 1):
            assert decided_positions(words[:p]) == {i: j for i, j in full.items() if i < p}


def test_decided_positions_follow_the_latest_binding_and_ignore_unbound_names():
    words = tokenize("ann owns a cat, ann keeps a hat; ann: hat, bob: cat.")
    assert decided_positions(words) == {11: 8}  # bob was never bound: not decided


def test_nouns_cannot_be_guessed_from_the_name(bundled):
    nouns_of = defaultdict(set)
    for words in bundled:
        for i, j in decided_positions(words).items():
            nouns_of[words[i - 1]].add(words[j])
    assert len(nouns_of) >= 20
    assert min(len(v) for v in nouns_of.values()) >= 15


def test_bad_config_is_rejected():
    with pytest.raises(BindingError):
        generate_binding_corpus(5, 0, BindingConfig(min_clauses=3, max_clauses=2))
    with pytest.raises(BindingError):
        generate_binding_corpus(5, 0, BindingConfig(names=("cat", "bob"), nouns=("cat", "dog"), max_clauses=2))
    with pytest.raises(BindingError):
        generate_binding_corpus(5, 0, BindingConfig(min_recalls=3, min_clauses=2))


def test_oracle_is_valid_and_points_at_the_deciding_word(bundled):
    oracle, uniform = OracleSource(n_heads=2), make_source("uniform", n_heads=2)
    for words in bundled[:300]:
        m = validate_attention(oracle.matrix(words), len(words), 2)
        u = uniform.matrix(words)
        decided = decided_positions(words)
        assert decided
        for i in range(len(words)):
            if i in decided:
                assert m[:, i, decided[i]].eq(1.0).all()
                assert m[:, i].sum(-1).sub(1).abs().max() < 1e-6
            else:
                assert torch.equal(m[:, i], u[:, i])


def test_oracle_weight_mixes_pointer_with_uniform():
    words = tokenize("ann owns a cat, bob has a lamp; bob: lamp.")
    m = validate_attention(OracleSource(weight=0.8).matrix(words), len(words))
    i, j = 11, 8
    assert m[0, i, j].item() == pytest.approx(0.8 + 0.2 / (i + 1))
    assert m[0, i, 0].item() == pytest.approx(0.2 / (i + 1))
    with pytest.raises(ValueError):
        OracleSource(weight=1.5)


def test_oracle_is_causal(bundled):
    oracle = OracleSource()
    for words in bundled[:40]:
        base = oracle.matrix(words)
        for k in range(len(words)):
            for replacement in (RECALL, words[0], VERBS[0], "zebra"):
                changed = words[:k] + [replacement] + words[k + 1 :]
                assert torch.equal(oracle.matrix(changed)[:, :k, :k], base[:, :k, :k])


def test_shift_moves_the_pointer_and_stays_causal(bundled):
    plain, shifted = OracleSource(), OracleSource(shift=1)
    words = bundled[0]
    decided = decided_positions(words)
    a, b = plain.matrix(words), shifted.matrix(words)
    for i, j in decided.items():
        assert a[0, i].argmax().item() == j
        assert b[0, i].argmax().item() == j + 1
        assert b[0, i, j].item() == 0.0
    for shift in (-100, -1, 2, 100):
        for words in bundled[:50]:
            m = validate_attention(OracleSource(shift=shift).matrix(words), len(words))
            for i, j in decided_positions(words).items():
                assert m[0, i].argmax().item() == min(max(j + shift, 0), i)


def test_oracle_equals_uniform_without_decided_positions():
    sentences = load_corpus(DATA / "example.txt").sentences[:100]
    oracle, uniform = OracleSource(), make_source("uniform")
    for words in sentences:
        assert not decided_positions(words)
        assert torch.equal(oracle.matrix(words), uniform.matrix(words))


def test_spec_round_trip(bundled):
    src = make_source("oracle", n_heads=3, shift=2, weight=0.9)
    spec = src.spec()
    assert spec == {"kind": "oracle", "n_heads": 3, "shift": 2, "weight": 0.9}
    again = make_source(**spec)
    assert isinstance(again, OracleSource) and again.spec() == spec
    words = bundled[5]
    assert torch.equal(again.score(words), src.score(words))
    assert src.cache_key(words) != OracleSource(n_heads=3, shift=0, weight=0.9).cache_key(words)
