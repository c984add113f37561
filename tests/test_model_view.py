"""The model view (llmcomp.app.model_view): heads mapped in a background job and cached, grids,
one head's matrix for a corpus or typed sentence, picked heads turned into the session's source."""

from __future__ import annotations

import math

import pytest
import torch

from llmcomp.app import model_view as mv
from llmcomp.app.sources import SourceFormError, SourceSettings
from llmcomp.app.training_job import JobManager
from llmcomp.attention.atlas import Atlas
from llmcomp.text.corpus import Corpus, CorpusConfig
from llmcomp.text.tokenizer import tokenize

GAUSS = SourceSettings(kind="gaussian", n_heads=2)
CONFIG = mv.ModelViewConfig(max_sentences=6, patterns=("self", "previous", "spread"))


def corpus(n: int = 20, max_words: int = 64) -> Corpus:
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "ran"]
    sentences = [[words[(i + k) % len(words)] for k in range(3 + i % 4)] for i in range(n)]
    return Corpus(sentences, name="toy", config=CorpusConfig(max_words=max_words, val_fraction=0.3))


@pytest.fixture(autouse=True)
def empty_cache():
    mv._CACHE.clear()
    yield
    mv._CACHE.clear()


def mapped(settings: SourceSettings = GAUSS, c: Corpus | None = None) -> Atlas:
    job = mv.start_mapping(settings, c or corpus(), JobManager(), "visitor", config=CONFIG)
    assert job.wait(30)
    assert job.snapshot().status == "finished", job.snapshot().error
    assert job.result is not None
    return job.result


def test_a_free_multi_head_source_maps_its_own_heads_else_every_local_head():
    assert mv.mapped_description(GAUSS)["kind"] == "gaussian"
    for s in (SourceSettings(), SourceSettings(kind="uniform"), SourceSettings(kind="openai", relations=("a", "b"))):
        assert mv.mapped_description(s) == {"kind": "local", "heads": "all"}


def test_mapping_reads_only_the_first_training_sentences_and_is_cached():
    c = corpus()
    atlas = mapped(GAUSS, c)
    assert atlas.sentences == CONFIG.max_sentences == 6
    assert atlas.patterns == ["self", "previous", "spread"] and atlas.labels == ["head 0", "head 1"]
    from llmcomp.attention.atlas import head_atlas
    from llmcomp.attention.baselines import GaussianSource

    want = head_atlas(GaussianSource(n_heads=2), c.train[:6], ["self", "previous", "spread"])
    assert torch.allclose(atlas.scores, want.scores)  # the first six training sentences, no held-out one
    assert not torch.allclose(atlas.scores, head_atlas(GaussianSource(n_heads=2), c.sentences[:6], ["self",
                              "previous", "spread"]).scores)  # fmt: skip
    assert mv.cached_atlas(GAUSS, c, CONFIG) is atlas
    val_first = Corpus([c.sentences[i] for i in c.val_idx] + [c.sentences[i] for i in c.train_idx])
    assert mv.cached_atlas(GAUSS, val_first, CONFIG) is None  # another corpus sha: not the same map
    assert mv.cached_atlas(SourceSettings(kind="gaussian", n_heads=3), c, CONFIG) is None


def test_a_mapping_past_its_deadline_is_stopped_with_one_line():
    config = mv.ModelViewConfig(max_sentences=6, deadline_s=-1.0, patterns=("self",))
    job = mv.start_mapping(GAUSS, corpus(), JobManager(), "visitor", config=config)
    assert job.wait(30)
    snap = job.snapshot()
    assert snap.status == "stopped" and "longer than -1 s" in snap.error
    assert mv.cached_atlas(GAUSS, corpus(), config) is None


def test_grid_of_local_labels_is_layer_by_head_and_of_others_one_row():
    labels = ["L0.H0", "L0.H1", "L2.H1"]
    scores = torch.tensor([[0.1, 0.2, 0.9]])
    atlas = Atlas(labels, ["self"], scores, torch.full((1, 3), math.nan), [5], 2, {"kind": "local"})
    g = mv.head_grid(atlas, "self")
    assert g.rows == ["L0", "L2"] and g.cols == ["H0", "H1"]
    assert g.cells[0][0][0] == "L0.H0" and g.cells[1][0] is None
    assert g.cells[1][1] == ("L2.H1", pytest.approx(0.9))
    one = mv.head_grid(mapped(), "previous")
    assert len(one.cells) == 1 and [c[0] for c in one.cells[0]] == ["head 0", "head 1"]


def test_a_typed_sentence_is_tokenized_and_checked():
    c = corpus(max_words=5)
    assert mv.sentence_words(c, 3, "") == (c.sentences[3], "sentence 3")
    assert mv.sentence_words(c, 999, None)[1] == f"sentence {len(c.sentences) - 1}"
    assert mv.sentence_words(c, 0, " The Dog barks. ") == (tokenize("The Dog barks."), "your sentence")
    with pytest.raises(mv.ModelViewError, match="at most 5"):
        mv.sentence_words(c, 0, "one two three four five six")
    with pytest.raises(mv.ModelViewError, match="one line"):
        mv.sentence_words(c, 0, "a b\nc d")


def test_one_heads_matrix_for_a_typed_sentence_is_that_head_and_causal():
    atlas = mapped()
    words = tokenize("a dog that nobody saw barks")
    m1, title = mv.head_matrix(atlas, "head 1", words)
    assert m1.shape == (len(words), len(words)) and "head 1" in title
    from llmcomp.attention.baselines import GaussianSource

    want = GaussianSource(n_heads=2).score(words)
    assert torch.allclose(m1, want[1]) and not torch.allclose(m1, want[0])
    assert torch.all(torch.triu(m1, diagonal=1) == 0)  # row i never weights a later word
    with pytest.raises(mv.ModelViewError, match="click a cell"):
        mv.head_matrix(atlas, "head 7", words)


def test_picked_heads_set_the_local_source_within_the_form_limits():
    assert mv.add_pick("L21.H4", "L23.H5") == "L21.H4, L23.H5"
    assert mv.add_pick("L21.H4, L23.H5", "L21.H4") == "L21.H4, L23.H5"
    assert mv.picked_labels("21.4 L3.H0,,L21.H4") == ["L21.H4", "L3.H0"]
    chosen = mv.use_heads(GAUSS, "L21.H4, L23.H5")
    assert chosen.kind == "local" and chosen.llm_heads == "21.4,23.5"
    assert chosen.description()["heads"] == "21.4,23.5"
    with pytest.raises(mv.ModelViewError, match="no heads picked"):
        mv.use_heads(GAUSS, " ")
    with pytest.raises(mv.ModelViewError, match="cannot read picked head 'head"):
        mv.use_heads(GAUSS, "head 1")
    many = ", ".join(f"L{i // 9}.H{i % 9}" for i in range(65))
    with pytest.raises(mv.ModelViewError, match="at most 64"):
        mv.use_heads(GAUSS, many)
    with pytest.raises(SourceFormError):  # the form's own checks still apply
        mv.use_heads(SourceSettings(advanced="bogus=1"), "L1.H1")


@pytest.mark.slow
def test_the_real_local_llm_maps_all_270_heads_and_shows_one_for_a_typed_sentence():
    c = corpus()
    config = mv.ModelViewConfig(max_sentences=3, patterns=("previous", "first"))
    job = mv.start_mapping(SourceSettings(), c, JobManager(), "visitor", config=config)
    assert job.wait(180) and job.snapshot().status == "finished", job.snapshot().error
    atlas = job.result
    assert len(atlas.labels) == 270 and atlas.source["kind"] == "local"
    grid = mv.head_grid(atlas, "previous")
    assert len(grid.rows) == 30 and len(grid.cols) == 9
    best = atlas.ranked("previous")[0][0]
    words = tokenize("the old man saw a small dog")
    m, title = mv.head_matrix(atlas, best, words)
    assert m.shape == (7, 7) and best in title
    assert torch.all(torch.triu(m, diagonal=1) == 0)
    assert torch.allclose(m.sum(-1), torch.ones(7), atol=1e-4)


def test_per_row_colours_scale_each_row_to_its_max_and_hover_keeps_the_weights():
    from llmcomp.plots.heatmap import attention_heatmap

    m = torch.tensor([[1.0, 0.0, 0.0], [0.9, 0.1, 0.0], [0.2, 0.3, 0.5]])
    fig = attention_heatmap(m, ["a", "b", "c"], row_scale=True)
    z, custom = fig.data[0].z, fig.data[0].customdata
    assert z[2] == pytest.approx([0.4, 0.6, 1.0]) and z[1][:2] == pytest.approx([1.0, 0.1 / 0.9])
    assert z[0][1] is None and z[1][2] is None  # the future stays masked
    assert custom[2][1][3] == "0.3000" and "customdata[3]" in fig.data[0].hovertemplate
    plain = attention_heatmap(m, ["a", "b", "c"])
    assert plain.data[0].z[2] == pytest.approx([0.2, 0.3, 0.5])


def test_the_attention_tab_names_chosen_local_heads_as_the_source_does():
    from llmcomp.app.attention_view import head_labels

    assert head_labels(SourceSettings(llm_heads="23.5, 21.4"), 2) == [("L23.H5", 0), ("L21.H4", 1)]
    assert head_labels(SourceSettings(n_heads=2), 2) == [("head 0", 0), ("head 1", 1)]
