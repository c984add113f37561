"""What several commands share: the corpus and attention-source options, building both, a scoring bar.

Defaults come from the config dataclasses (``CorpusConfig`` here); heavy modules load inside the
functions, so ``llmcomp --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from llmcomp.settings import EXAMPLE_CORPUS, Paths
from llmcomp.text.corpus import CorpusConfig

if TYPE_CHECKING:
    from llmcomp.attention.base import AttentionSource, ScoreStats
    from llmcomp.text.corpus import Corpus

SOURCE_KINDS = "uniform, previous, gaussian, random, learned, local, openai or oracle"


def add_corpus_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("corpus")
    g.add_argument("--corpus", default=str(EXAMPLE_CORPUS), help="UTF-8 .txt file (default: bundled example)")
    g.add_argument(
        "--split",
        choices=["auto", "lines", "paragraphs"],
        default=CorpusConfig.split,
        help="lines: each non-empty line is one sequence, never cut; paragraphs: blank-line-separated, cut "
        "after . ! ?; auto: paragraphs if blank lines separate them, else lines cut after inner . ! ?",
    )
    g.add_argument("--max-words", type=int, default=CorpusConfig.max_words, help="longest sentence allowed (words)")
    g.add_argument(
        "--val-fraction",
        type=float,
        default=CorpusConfig.val_fraction,
        help="share of sentences held out for validation",
    )


def add_source_args(p: argparse.ArgumentParser, default: str | None = "uniform") -> None:
    g = p.add_argument_group("attention source")
    shown = default or "uniform; with --resume, the checkpoint's source"
    g.add_argument("--attention", default=default, help=f"{SOURCE_KINDS} (default: {shown})")
    g.add_argument("--heads", help="gaussian/random/local: number of heads; openai: comma-separated relation names")
    g.add_argument("--mode", choices=["sentence", "prefix", "pair"], help="openai: scoring mode")
    g.add_argument("--base-url", help="openai: server URL (else OPENAI_BASE_URL)")
    g.add_argument("--model", dest="llm_model", help="openai: model name (else LLMCOMP_OPENAI_MODEL)")
    g.add_argument("--layers", help="local: which LLM layers to average, e.g. all, last-8, 0,1,2")
    g.add_argument("--max-concurrency", type=int, help="openai: requests in flight")
    g.add_argument("--max-requests", type=int, help="openai: stop after this many requests")
    g.add_argument("--max-tokens", type=int, help="openai: stop after this many tokens")
    g.add_argument("--fallback", help="baseline to use for sentences that fail (default: none, they are skipped)")
    g.add_argument("--cache", help="attention cache file (default: $LLMCOMP_CACHE or .llmcomp/attention-cache.sqlite)")
    g.add_argument("--no-cache", action="store_true", help="do not read or write the attention cache")


def source_options(args: argparse.Namespace) -> dict[str, Any]:
    """The source flags as options (None = not given): ``--heads 3`` is ``n_heads``, ``--heads a,b`` names heads."""
    heads: Any = args.heads
    if heads is not None:
        heads = int(heads) if heads.strip().isdigit() else [h.strip() for h in heads.split(",") if h.strip()]
    opts: dict[str, Any] = {
        "mode": args.mode,
        "base_url": args.base_url,
        "model": args.llm_model,
        "layers": args.layers,
        "max_concurrency": args.max_concurrency,
        "max_requests": args.max_requests,
        "max_tokens": args.max_tokens,
    }
    if isinstance(heads, int):
        opts["n_heads"] = heads
    elif heads is not None:
        opts["heads"] = heads
    return opts


def cache_path(args: argparse.Namespace) -> str | None:
    return None if getattr(args, "no_cache", False) else str(args.cache or Paths.from_env().cache)


def make_cli_source(args: argparse.Namespace, spec: dict[str, Any] | None = None) -> AttentionSource:
    """The source the flags describe; with ``spec`` (a checkpoint's), that source, flags overriding it.

    The environment's key goes only where this command names: ``--base-url``, else ``OPENAI_BASE_URL``
    (else OpenAI); a checkpoint naming another endpoint is refused (``KeyPolicy.command_line``)."""
    from llmcomp.app.keys import KeyPolicy
    from llmcomp.app.sources import build_source

    given = {k: v for k, v in source_options(args).items() if v is not None}
    description = {**(spec or {}), **given} if spec else {"kind": args.attention, **given}
    keys = KeyPolicy.command_line(args.base_url)
    return build_source(description, cache=cache_path(args), fallback=args.fallback, keys=keys)


def load_cli_corpus(args: argparse.Namespace) -> Corpus:
    """The corpus the flags name; its notices (lines cut, words split by the tokenizer) go to stderr, once."""
    from llmcomp.text import load_corpus

    cfg = CorpusConfig(split=args.split, max_words=args.max_words, val_fraction=args.val_fraction)
    corpus = load_corpus(args.corpus, cfg)
    print_corpus_notices(corpus)
    return corpus


def print_corpus_notices(corpus: Corpus) -> None:
    for notice in corpus.notices:
        print(f"note: {notice}", file=sys.stderr)


class ScoringBar:
    """tqdm bar fed by ``ScoreStats`` snapshots from a source."""

    def __init__(self, total: int, desc: str = "attention"):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="sent", dynamic_ncols=True)

    def __call__(self, stats: ScoreStats) -> None:
        self.bar.n = stats.done
        self.bar.set_postfix(cached=stats.cached, failed=stats.failed, req=stats.requests, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
