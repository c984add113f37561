"""The model is causal in every mode: nothing at position < j depends on position j."""

import pytest
import torch

from llmcomp.attention import make_source
from llmcomp.model import GPT, GPTConfig
from llmcomp.text import Vocab
from llmcomp.threads import torch_threads
from llmcomp.training.batching import collate, encode_example, with_bos

MODES = {"external": (2, 0), "learned": (0, 4), "mixed": (2, 2)}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models: extra OpenMP threads only spin-wait on a shared machine (tenfold slower)."""
    with torch_threads(1):
        yield


def causal_att(h, t, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, h, t, t, generator=g).masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), -1e9)
    return torch.softmax(logits, -1)


@pytest.mark.parametrize("mode", MODES)
def test_changing_token_j_changes_no_logit_before_j(mode):
    ext, learned = MODES[mode]
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=40, n_external_heads=ext, n_learned_heads=learned, n_embd=32)).eval()
    t = 10
    x = torch.randint(4, 40, (1, t))
    att = causal_att(ext, t) if ext else None
    base = model(x, att)
    for j in range(1, t):
        x2 = x.clone()
        x2[0, j] = (x2[0, j] + 1) % 40
        att2 = att.clone() if ext else None
        if ext:  # a causal source may also change rows >= j when word j changes
            att2[:, :, j:, :] = causal_att(ext, t, seed=j)[:, :, j:, :]
        out = model(x2, att2)
        assert torch.allclose(out[0, :j], base[0, :j], atol=1e-6), f"position < {j} changed"
        assert not torch.allclose(out[0, j:], base[0, j:])  # and the change is visible from j on


def test_model_requires_the_supplied_heads():
    model = GPT(GPTConfig(vocab_size=10, n_external_heads=1))
    with pytest.raises(ValueError, match="expects 1 supplied"):
        model(torch.zeros(1, 3, dtype=torch.long), None)


def test_uneven_head_split_still_builds():
    model = GPT(GPTConfig(vocab_size=10, n_embd=64, n_external_heads=3))
    assert model(torch.zeros(1, 3, dtype=torch.long), causal_att(3, 3)).shape == (1, 3, 10)


def test_supplied_weights_are_actually_used():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=20, n_external_heads=1, n_embd=32)).eval()
    x = torch.randint(4, 20, (1, 6))
    a = model(x, causal_att(1, 6, seed=1))
    b = model(x, causal_att(1, 6, seed=2))
    assert torch.allclose(a[0, 0], b[0, 0])  # position 0 can only attend to itself either way
    assert not torch.allclose(a[0, 1:], b[0, 1:])


def test_bos_alignment_and_padding():
    vocab = Vocab(["a", "b", "c"])
    words = ["a", "b", "c"]
    att = make_source("previous").score(words)
    ex = encode_example(words, att, vocab, focus_words=[1])
    assert ex.x.tolist() == [vocab.bos_id, 4, 5, 6] and ex.y.tolist() == [4, 5, 6, vocab.eos_id]
    # <s> on itself; word i at position i+1 uses source row i (previous: half on itself, half on the word before)
    assert with_bos(att)[0].tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0.5, 0.5, 0], [0, 0, 0.5, 0.5]]
    assert torch.equal(ex.att, with_bos(att))
    assert ex.focus.tolist() == [False, False, True, False]  # word 1 predicts word 2 at position 2
    short = encode_example(["a"], make_source("previous").score(["a"]), vocab)
    b = collate([ex, short], vocab.pad_id)
    assert b.x.tolist() == [[vocab.bos_id, 4, 5, 6], [vocab.bos_id, 4, vocab.pad_id, vocab.pad_id]]
    assert b.y.tolist() == [[4, 5, 6, vocab.eos_id], [4, vocab.eos_id, -100, -100]] and b.n_tokens == 6
    assert b.focus.tolist() == [[False, False, True, False], [False] * 4]
    assert torch.equal(b.att[0], with_bos(att))  # the longest example is not touched
    # the short one: its own 2x2 block at the top left, every padded row and column exactly zero
    assert b.att[1, 0].tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def _content_att(words: list[str], vocab: Vocab, h: int = 2) -> torch.Tensor:
    """A causal source that depends on the words (row i on words 0..i), like an LLM's would."""
    g = torch.Generator().manual_seed(7)
    emb = torch.randn(len(vocab), 8, generator=g)
    mix = torch.randn(h, 8, 8, generator=g)
    e = emb[vocab.encode(words)]
    logits = e @ mix @ e.T  # (h, T, T)
    t = len(words)
    return torch.softmax(logits.masked_fill(~torch.ones(t, t, dtype=torch.bool).tril(), float("-inf")), -1)


BATCH_WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far"]


@pytest.mark.parametrize("mode", ["external", "mixed"])
@pytest.mark.parametrize("kind", ["random", "content"])
def test_collated_batch_position_never_sees_the_word_it_predicts(mode, kind):
    """Change the word at input position p (the target of p-1), rescore the source on the changed
    sentence: nothing at positions < p may move, in a padded mixed-length batch as used in training."""
    ext, learned = MODES[mode]
    vocab = Vocab(BATCH_WORDS)
    source = make_source("random", n_heads=ext) if kind == "random" else None

    scored: dict[tuple[str, ...], torch.Tensor] = {}  # each distinct sentence scored once (keeps the test fast)

    def score(words: list[str]) -> torch.Tensor:
        if tuple(words) not in scored:
            scored[tuple(words)] = source.score(words) if source is not None else _content_att(words, vocab, ext)
        return scored[tuple(words)]

    sentences = [BATCH_WORDS[:4], BATCH_WORDS[3:10], BATCH_WORDS[:2], BATCH_WORDS[5:10]]
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=len(vocab), n_external_heads=ext, n_learned_heads=learned, n_embd=32)).eval()

    def run(sents: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b = collate([encode_example(s, score(s), vocab) for s in sents], vocab.pad_id)
        with torch.no_grad():
            logits = model(b.x, b.att)
            losses, mask = model.token_losses(b.x, b.att, b.y)
        per_pos = torch.full(b.y.shape, float("nan")).masked_scatter(mask, losses)
        return logits, per_pos, b.y

    base_logits, base_loss, _ = run(sentences)
    for i, words in enumerate(sentences):
        for w in range(len(words)):
            p = w + 1  # word w is the input at position p and the target of position p-1
            changed = [list(s) for s in sentences]
            changed[i][w] = "far" if words[w] != "far" else "the"
            logits, loss, y = run(changed)
            where = f"example {i}, word {w} ({kind}, {mode})"
            assert torch.allclose(logits[i, :p], base_logits[i, :p], atol=1e-6), f"logits before {p} moved: {where}"
            assert torch.allclose(loss[i, : p - 1], base_loss[i, : p - 1], atol=1e-6), f"loss before {p - 1}: {where}"
            # position p-1 saw only the old context: its loss is the old prediction scored on the new target
            old_pred = torch.nn.functional.cross_entropy(base_logits[i, p - 1], y[i, p - 1])
            assert torch.allclose(loss[i, p - 1], old_pred, atol=1e-5), f"position {p - 1} saw its answer: {where}"
            assert not torch.allclose(logits[i, p:], base_logits[i, p:])  # the change is visible from p on
            others = [j for j in range(len(sentences)) if j != i]
            assert torch.allclose(logits[others], base_logits[others], atol=1e-6)  # examples do not mix


def test_learned_attention_map_is_the_causal_weights_the_model_uses():
    """The heatmap of learned heads must show what SDPA (is_causal=True) computes, not an unmasked softmax."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, n_external_heads=1, n_learned_heads=3, n_embd=48)).eval()
    t = 7
    x = torch.randint(4, 30, (2, t))
    att = causal_att(1, t).expand(2, -1, -1, -1)
    last = model.blocks[-1].attn
    seen: list[torch.Tensor] = []
    hook = last.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            plain = model(x, att)
        w = model.learned_attention(x, att)
    finally:
        hook.remove()
    assert w is not None and w.shape == (2, 3, t, t)
    assert torch.allclose(seen[0], seen[1])  # the last layer got the same input both times
    with torch.no_grad():
        qkv = last.qkv(seen[1]).split(last.n_learned * last.head_dim, dim=2)
        q, k, v = (last._heads(z, last.n_learned) for z in qkv)
        sdpa = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        scores = (q @ k.transpose(-2, -1)) / last.head_dim**0.5
        causal = torch.ones(t, t, dtype=torch.bool).tril()
        expected = torch.softmax(scores.masked_fill(~causal, float("-inf")), -1)
    assert torch.triu(w, diagonal=1).abs().sum() == 0, "the map shows weight on later positions"
    assert torch.allclose(w.sum(-1), torch.ones(2, 3, t), atol=1e-6)
    assert torch.allclose(w @ v, sdpa, atol=1e-6), "the map is not the weighting the model's attention applies"
    assert torch.allclose(w, expected, atol=1e-6)
    assert last.keep_weights is False and last.last_learned_weights is None  # reset after the heatmap call
    with torch.no_grad():
        assert torch.allclose(model(x, att), plain, atol=1e-6)  # and the model runs as before
