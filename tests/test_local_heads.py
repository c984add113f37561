"""Any set of the local LLM's heads as the supplied heads (issue 13, item 1).

Fast tests read, check and canonicalise selections (``llmcomp.attention.local_heads``) and build
sources without loading the model. Slow tests run the real SmolLM2: chosen heads equal the matching
rows of ``heads="all"``, each is row-stochastic and causal, a selection only runs the layers it needs,
and different selections never share a cache entry.
"""

from __future__ import annotations

import pytest
import torch

from llmcomp.attention import AttentionCache, make_source
from llmcomp.attention.local_heads import canonical_heads, group_labels, resolve_heads
from llmcomp.attention.local_llm import LocalLLMConfig, LocalLLMError, LocalLLMSource
from llmcomp.attention.registry import describe_spec

SENTENCES = [
    ["the", "old", "man", "walked", "to", "the", "red", "house", "after", "lunch", "."],
    ["my", "sister", "painted", "a", "small", "boat", "."],
    ["the", "children", "waited", "near", "the", "river"],
]


# --- reading a selection -----------------------------------------------------------------------
@pytest.mark.parametrize("given", ["21.4,23.5", " 21.4 + 23.5 ", "21.4+23.5", [(21, 4), (23, 5)], [[21, 4], [23, 5]]])
def test_every_form_of_a_selection_is_one_canonical_text(given):
    assert canonical_heads(given) == "21.4,23.5"
    assert LocalLLMConfig(heads=given).heads == "21.4,23.5"


def test_default_and_all_are_kept():
    assert canonical_heads(None) is None
    assert canonical_heads(" ALL ") == "all"
    assert LocalLLMConfig().heads is None


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("top:4:previous", "resolved into layer.head pairs before training"),
        ("21.4,23.5,21.4", "head 21.4 is chosen twice"),
        ("21", "cannot read head '21'"),
        ("21.4,,23.5", "cannot read head ''"),
        ("-1.4", "cannot read head '-1.4'"),
        ("", "heads is empty"),
        ([], "empty list"),
        ([(1, -2)], "negative"),
        ([(1, 2, 3)], "(layer, head) pair"),
    ],
)
def test_a_bad_selection_is_one_line(given, message):
    with pytest.raises(LocalLLMError) as caught:
        LocalLLMConfig(heads=given)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_n_heads_follows_the_chosen_heads():
    assert LocalLLMConfig(heads="21.4,23.5").n_heads == 2
    assert LocalLLMConfig(heads="21.4,23.5", n_heads=2).n_heads == 2  # as a spec stores it
    with pytest.raises(LocalLLMError, match="n_heads=3 does not match heads 21.4,23.5"):
        LocalLLMConfig(heads="21.4,23.5", n_heads=3)


def test_resolving_checks_the_range_against_the_models_shape():
    assert resolve_heads("23.5,0.0", "all", 30, 9) == [(23, 5), (0, 0)]  # in the order given
    with pytest.raises(LocalLLMError) as caught:
        resolve_heads("21.9", "all", 30, 9)
    assert "30 layers x 9 heads" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(LocalLLMError, match="30 layers x 9 heads"):
        resolve_heads("30.0", "all", 30, 9)


def test_all_is_every_pair_of_the_selected_layers_layer_major():
    assert resolve_heads("all", "1-2", 30, 3) == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    assert len(resolve_heads("all", "all", 30, 9)) == 270


def test_group_labels_name_the_layers_each_group_averages():
    every = [(layer, h) for layer in range(30) for h in range(9)]
    assert group_labels(every, 1, 9) == ["layers 0-29 avg"]
    assert group_labels(every, 30, 9)[29] == "layer 29 avg"
    assert group_labels([(3, h) for h in range(9)] + [(7, h) for h in range(9)], 1, 9) == ["layers 3,7 avg"]
    assert group_labels([(0, h) for h in range(9)], 2, 9) == ["L0.H0-L0.H4 avg", "L0.H5-L0.H8 avg"]


# --- the source, not loaded ----------------------------------------------------------------------
def test_equal_selections_share_keys_and_different_ones_do_not():
    words = SENTENCES[0]
    a, b = LocalLLMSource(heads="21.4+23.5"), LocalLLMSource(heads=[(21, 4), (23, 5)], layers="last-2")
    assert a.cache_key(words) == b.cache_key(words)  # layers play no part in explicit pairs
    others = [
        LocalLLMSource(heads="23.5,21.4"),  # order is which supplied head is which
        LocalLLMSource(heads="21.4"),
        LocalLLMSource(heads="all"),
        LocalLLMSource(heads="all", layers="last-2"),
        LocalLLMSource(),
        LocalLLMSource(n_heads=2),
    ]
    keys = {src.cache_key(words) for src in [a, *others]}
    assert len(keys) == 1 + len(others)


def test_the_default_fingerprint_is_unchanged():
    """Groups averaged: the fingerprint has the fields it always had, so existing cache entries stay valid."""
    assert set(LocalLLMSource().fingerprint()) == {"kind", "model", "layers", "n_heads", "sink", "aggregation"}
    assert LocalLLMSource(heads="1.2").fingerprint()["heads"] == "1.2"


def test_spec_rebuilds_the_selection_and_names_it():
    src = LocalLLMSource(heads="21.4+23.5")
    again = make_source(**src.spec())
    assert again.fingerprint() == src.fingerprint() and again.n_heads == 2
    assert src.head_labels() == ["L21.H4", "L23.H5"]
    assert "heads 21.4,23.5, one each" in src.describe()
    assert "groups averaged" in LocalLLMSource().describe()
    assert describe_spec(src.spec()) == "local LLM (heads 21.4,23.5, one each)"
    assert "every head of layers last-2" in describe_spec(LocalLLMSource(heads="all", layers="last-2").spec())


def test_other_sources_name_their_heads():
    assert make_source("gaussian", n_heads=2).head_labels() == ["head 0", "head 1"]


# --- the real model --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model():
    from llmcomp.attention.local_model import load_model

    return load_model()


def scored(src: LocalLLMSource, sentences=SENTENCES) -> list[torch.Tensor]:
    try:
        return src.score_many(sentences).require_all()
    finally:
        src.close()


@pytest.mark.slow
def test_chosen_heads_are_the_matching_rows_of_all(model):
    every = LocalLLMSource(heads="all")
    assert every.n_heads == 270 and every.head_labels()[21 * 9 + 4] == "L21.H4"
    full = scored(every)
    two = scored(LocalLLMSource(heads="21.4,23.5"))
    one = scored(LocalLLMSource(heads="23.5"))
    for f, t, o in zip(full, two, one, strict=True):
        assert t.shape[0] == 2 and o.shape[0] == 1
        torch.testing.assert_close(t, f[[21 * 9 + 4, 23 * 9 + 5]], atol=1e-5, rtol=0)
        torch.testing.assert_close(o[0], f[23 * 9 + 5], atol=1e-5, rtol=0)
        assert (t[0] - t[1]).abs().max() > 1e-3  # two different heads, not one copied
    # groups averaged (the default, sink drop) is the mean of every head: the two paths agree
    for f, g in zip(full, scored(LocalLLMSource()), strict=True):
        torch.testing.assert_close(g[0], f.mean(0), atol=1e-5, rtol=0)


@pytest.mark.slow
def test_each_chosen_head_is_row_stochastic_and_causal(model):
    src = LocalLLMSource(heads="21.4,23.5,0.1")
    a = src.score(["the", "cat", "sat", "on", "the", "mat"])
    b = src.score(["the", "cat", "sat", "on", "the", "dog", "today"])
    src.close()
    t = a.shape[-1]
    assert (a >= 0).all() and torch.allclose(a.sum(-1), torch.ones(3, t), atol=1e-5)
    assert a.triu(1).abs().max() == 0  # nothing above the diagonal
    torch.testing.assert_close(a[:, :5, :5], b[:, :5, :5], atol=1e-5, rtol=0)  # a later word changes no earlier row
    assert (a[:, 5] - b[:, 5, :6]).abs().max() > 1e-4  # the changed word's own row does change


def count_layers_run(model, heads: str) -> list[int]:
    """Which decoder layers of the real model a fresh source's forward pass enters."""
    entered: list[int] = []
    handles = [
        block.register_forward_pre_hook(lambda *_a, i=i: entered.append(i))
        for i, block in enumerate(model.decoder.layers)
    ]
    try:
        scored(LocalLLMSource(heads=heads), SENTENCES[:1])
    finally:
        for h in handles:
            h.remove()
    return sorted(set(entered))


@pytest.mark.slow
def test_only_layers_up_to_the_deepest_chosen_one_run(model):
    assert count_layers_run(model, "0.1") == [0]
    assert count_layers_run(model, "2.0,0.3") == [0, 1, 2]
    assert count_layers_run(model, "all") == list(range(30))


@pytest.mark.slow
def test_a_head_the_model_lacks_is_one_line(model):
    with pytest.raises(LocalLLMError) as caught:
        LocalLLMSource(heads="30.0").score(SENTENCES[0])
    assert "30 layers x 9 heads" in str(caught.value) and "\n" not in str(caught.value)
    assert LocalLLMSource().head_labels() == ["layers 0-29 avg"]


@pytest.mark.slow
def test_different_selections_never_share_cache_entries(model, tmp_path):
    cache = AttentionCache(tmp_path / "cache.sqlite")
    first = LocalLLMSource(heads="21.4", cache=cache).score_many(SENTENCES)
    other = LocalLLMSource(heads="23.5", cache=cache).score_many(SENTENCES)
    assert first.stats.scored == len(SENTENCES) and other.stats.cached == 0  # nothing of 21.4 served as 23.5
    again = LocalLLMSource(heads=[(21, 4)], layers="last-3", cache=cache).score_many(SENTENCES)
    assert again.stats.cached == len(SENTENCES)  # the same selection, written another way: the same entries
    for m, o, g in zip(first.matrices, other.matrices, again.matrices, strict=True):
        assert torch.equal(m, g) and (m - o).abs().max() > 1e-3
    cache.close()
