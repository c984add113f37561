"""Sample words from a trained model, one at a time.

At every step the source scores the words so far (prompt plus generated words) and nothing else,
so no output ever depends on a word that comes later. The row that was actually used for each
word is kept, so the heatmap shows the attention that produced the text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from llmcomp.attention.base import AttentionSource
from llmcomp.attention.registry import make_source
from llmcomp.errors import LLMCompError
from llmcomp.generation.config import GenerateConfig
from llmcomp.model.gpt import GPT
from llmcomp.text.tokenizer import SENTENCE_END, detokenize, tokenize
from llmcomp.text.vocab import Vocab
from llmcomp.threads import torch_threads
from llmcomp.training.batching import with_bos
from llmcomp.training.checkpoint import load_checkpoint


class GenerationError(LLMCompError, ValueError):
    """A prompt or setting generation cannot use, with a one-line reason."""


#: how many of the likeliest next words each step keeps (what a playground shows beside each word)
TOP_WORDS = 5
#: a vocabulary entry a person would call a word: letters, with inner apostrophes or hyphens (not ``.`` or ``,``)
_WORDLIKE = re.compile(r"[^\W\d_]+(?:['\-][^\W\d_]+)*")


def word_like(vocab: Vocab, n: int = 6) -> list[str]:
    """The ``n`` most frequent vocabulary entries that look like words, for hints (never punctuation)."""
    return [w for w in vocab.itos[4:] if _WORDLIKE.fullmatch(w)][:n]


@dataclass
class Choice:
    """One sampled token: what was taken and the likeliest alternatives, from the distribution it was
    drawn from (temperature and top-k applied; at temperature 0, the model's own softmax, whose top
    word is the one taken). ``word`` is ``</s>`` when the model ended the text."""

    word: str
    prob: float  # the taken word's probability
    top: list[tuple[str, float]]  # up to TOP_WORDS (word, probability), likeliest first, zeros left out


@dataclass
class Generation:
    prompt_words: list[str]
    words: list[str]  # generated words only
    unknown: list[str]  # prompt words the vocabulary does not have (read as <unk>)
    attention: torch.Tensor  # (H, T, T) over prompt+generated words; row i = the row used for word i
    stopped_by: str = "length"
    notes: list[str] = field(default_factory=list)
    # one per sampled token: one per generated word, then one for </s> when the model ended the text
    choices: list[Choice] = field(default_factory=list)

    @property
    def all_words(self) -> list[str]:
        return self.prompt_words + self.words

    @property
    def text(self) -> str:
        return detokenize(self.all_words)


class Generator:
    """A model, its vocabulary and its attention source, ready to sample."""

    def __init__(self, model: GPT, vocab: Vocab, source: AttentionSource):
        if source.n_heads != model.config.n_external_heads:
            raise GenerationError(
                f"source gives {source.n_heads} heads but the model was trained with {model.config.n_external_heads}"
            )
        self.model, self.vocab, self.source = model.eval(), vocab, source

    @classmethod
    def from_checkpoint(cls, path: str | Path, source: AttentionSource | None = None, **source_overrides) -> Generator:
        """Load a checkpoint and rebuild the attention source it was trained with (or use ``source``)."""
        ck = load_checkpoint(path)
        return cls(ck.model, ck.vocab, source or make_source(**{**ck.source_spec, **source_overrides}))

    def _rows(self, words: list[str], known: list[torch.Tensor] | None = None) -> torch.Tensor:
        """(H, T, T) attention for the words so far in which row i sees words 0..i only.

        A causal source's matrix is that already. A source whose rows may see later words
        (``prefix_causal`` False, e.g. OpenAI ``sentence`` mode) scores each row from its own prefix,
        as leak-free validation does; rows in ``known`` (row i over words 0..i) are reused, so each
        generation step costs one new prefix.
        """
        h, t, known = self.source.n_heads, len(words), known or []
        if not words or h == 0:
            return torch.zeros(h, t, t)
        if self.source.prefix_causal and len(known) < t:
            return self.source.score(words)
        att = torch.zeros(h, t, t)
        for i in range(t):
            att[:, i, : i + 1] = known[i] if i < len(known) else self.source.score(words[: i + 1])[:, i]
        return att

    def next_logits(
        self, words: list[str], known: list[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits for the word after ``words``, and the attention matrix used (see ``_rows``).

        ``no_grad`` is a block, not a decorator, so the mutation check (which skips decorated
        functions) mutates this method too."""
        with torch.no_grad():
            att = self._rows(words, known)
            x = torch.tensor([[self.vocab.bos_id, *self.vocab.encode(words)]])
            return self.model(x, with_bos(att)[None])[0, -1], att  # no supplied heads: (1, 0, T+1, T+1)

    def learned_attention(self, gen: Generation) -> torch.Tensor | None:
        """The model's own heads in its last layer over <s> + the generation's words, (L, T+1, T+1),
        with the supplied rows it generated with; None if the model has no learned heads."""
        x = torch.tensor([[self.vocab.bos_id, *self.vocab.encode(gen.all_words)]])
        weights = self.model.learned_attention(x, with_bos(gen.attention)[None])
        return None if weights is None else weights[0]

    def generate(
        self,
        prompt: str | list[str],
        config: GenerateConfig | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> Generation:
        """Sample up to ``config.max_words`` words after ``prompt``. ``progress(done, max_words)`` is
        called before each word (scoring its attention is the slow part with an LLM source)."""
        cfg = config or GenerateConfig()
        with torch_threads(cfg.threads):
            return self._generate(prompt, cfg, progress)

    def _generate(
        self, prompt: str | list[str], cfg: GenerateConfig, progress: Callable[[int, int], None] | None
    ) -> Generation:
        if cfg.temperature < 0:
            raise GenerationError("temperature must be >= 0 (0 means always take the most likely word)")
        words = tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        unknown = self.vocab.unknown(words)
        if words and len(unknown) == len(words):
            examples = ", ".join(word_like(self.vocab))
            raise GenerationError(
                f"none of the prompt words are in the vocabulary ({', '.join(unknown[:5])}); "
                f"use words from the training corpus, e.g. {examples}"
            )
        limit = self.model.config.block_size - 1
        if len(words) >= limit:
            raise GenerationError(f"the prompt has {len(words)} words; this model reads at most {limit - 1}")
        gen = torch.Generator().manual_seed(cfg.seed) if cfg.seed is not None else None
        prompt_words, out = list(words), []
        rows: list[torch.Tensor] = []  # row used for each word (over the words up to it)
        choices: list[Choice] = []
        stopped_by = "length"
        for _ in range(cfg.max_words):
            if progress is not None:
                progress(len(out), cfg.max_words)
            if len(words) >= limit:
                stopped_by = "block size"
                break
            logits, att = self.next_logits(words, rows)
            rows = [att[:, i, : i + 1] for i in range(len(words))]
            logits[[self.vocab.pad_id, self.vocab.unk_id, self.vocab.bos_id]] = -torch.inf
            if cfg.temperature == 0:
                probs = torch.softmax(logits, -1)
                nxt = int(logits.argmax())
            else:
                logits = logits / cfg.temperature
                if cfg.top_k:
                    kth = torch.topk(logits, min(cfg.top_k, logits.numel())).values[-1]
                    logits = logits.masked_fill(logits < kth, -torch.inf)
                probs = torch.softmax(logits, -1)
                nxt = int(torch.multinomial(probs, 1, generator=gen))
            choices.append(self._choice(probs, nxt))
            if nxt == self.vocab.eos_id:
                stopped_by = "end of sentence"
                break
            word = self.vocab.itos[nxt]
            words.append(word)
            out.append(word)
            if cfg.stop_at_sentence_end and word in SENTENCE_END:
                stopped_by = "end of sentence"
                break
        # the last word was never read by the model: score its row too, so the heatmap has every row
        return Generation(prompt_words, out, unknown, self._rows(words, rows), stopped_by, choices=choices)

    def _choice(self, probs: torch.Tensor, taken: int) -> Choice:
        """The taken token and the TOP_WORDS likeliest, read from the very tensor sampled from."""
        values, ids = torch.topk(probs, min(TOP_WORDS, probs.numel()))
        top = [(self.vocab.itos[int(i)], float(v)) for v, i in zip(values, ids, strict=True) if float(v) > 0]
        return Choice(self.vocab.itos[taken], float(probs[taken]), top)


def generate(
    checkpoint: str | Path, prompt: str, config: GenerateConfig | None = None, source: AttentionSource | None = None
) -> Generation:
    """One call: ``generate("runs/x/checkpoint", "the cat", GenerateConfig(seed=1))``."""
    return Generator.from_checkpoint(checkpoint, source).generate(prompt, config)
