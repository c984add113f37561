"""``llmcomp generate``: text from a checkpoint, once or one prompt per input line."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from llmcomp.generation.config import GenerateConfig


def add_parser(sub: Any) -> None:
    p = sub.add_parser("generate", help="generate text from a checkpoint")
    p.add_argument(
        "--checkpoint",
        required=True,
        help="checkpoint folder written by train, or its run folder: then the best checkpoint (lowest validation "
        "loss) when the run kept one",
    )
    p.add_argument("--last", action="store_true", help="with a run folder: its last checkpoint, not its best")
    p.add_argument("--prompt", default="", help="words to start from")
    p.add_argument("--interactive", "-i", action="store_true", help="read prompts from standard input")
    p.add_argument("--max-words", type=int, default=GenerateConfig.max_words, help="longest generation in words")
    p.add_argument("--temperature", type=float, default=GenerateConfig.temperature, help="0: the likeliest word")
    p.add_argument("--top-k", type=int, default=GenerateConfig.top_k, help="sample among the k likeliest; 0: all")
    p.add_argument("--seed", type=int)
    p.add_argument("--show-attention", action="store_true", help="also print the attention matrix as JSON")
    p.add_argument(
        "--show-probs",
        action="store_true",
        help="also print, for each sampled word, its probability and the 5 likeliest words (as sampled from)",
    )
    p.add_argument(
        "--corpus",
        help="the run's training corpus (.txt), to say when the text copies a training sentence; default: the "
        "bundled corpus with the run's content hash, if one has it",
    )
    p.add_argument("--base-url", help="openai checkpoints: server URL to score with")
    p.add_argument("--model", dest="llm_model", help="openai checkpoints: model to score with")
    p.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llmcomp.app.keys import KeyPolicy
    from llmcomp.app.sources import build_source
    from llmcomp.generation import Generator
    from llmcomp.training import load_checkpoint
    from llmcomp.training.run_folder import checkpoint_dir, checkpoint_to_use

    path = Path(args.checkpoint)
    if not (path / "checkpoint.json").is_file() and (checkpoint_dir(path) / "checkpoint.json").is_file():
        path = checkpoint_to_use(path, best=not args.last)  # a run folder: its best checkpoint, or its last
        print(f"checkpoint: {path}", file=sys.stderr)
    ck = load_checkpoint(path)
    args.training_corpus = _training_corpus(path, args.corpus)
    overrides = {k: v for k, v in {"base_url": args.base_url, "model": args.llm_model}.items() if v}
    # the checkpoint names where it was scored; the key goes there only if this command names it too
    source = build_source({**ck.source_spec, **overrides}, keys=KeyPolicy.command_line(args.base_url))
    try:
        return _generate(args, Generator(ck.model, ck.vocab, source))
    finally:
        source.close()


def _training_corpus(checkpoint: Any, named: str | None) -> tuple[Any, str]:
    """(the run's training corpus when at hand, its recorded name): found by the content hash its run
    record holds, among ``--corpus`` and the bundled corpora; (None, name) when none matches."""
    from llmcomp.app.generation import corpora_at_hand
    from llmcomp.generation.copies import training_corpus
    from llmcomp.settings import DATA_DIR
    from llmcomp.text import CorpusConfig, load_corpus
    from llmcomp.training.run_folder import read_record

    try:  # the record sits in the run folder, above the checkpoint
        record = read_record(checkpoint.parent)
    except (OSError, ValueError):
        record = None
    info = record.corpus if record is not None else None
    if info is None or not info.sha256:
        return None, "not recorded"
    own = load_corpus(named, CorpusConfig()) if named else None
    names = sorted(p.name for p in DATA_DIR.glob("*.txt"))
    candidates = corpora_at_hand(own, lambda n: load_corpus(DATA_DIR / n, CorpusConfig()), names)
    return training_corpus(info, candidates), info.name


def _generate(args: argparse.Namespace, gen: Any) -> int:
    from llmcomp.app.generation import probability_rows
    from llmcomp.generation import GenerationError
    from llmcomp.generation.copies import find_copy

    cfg = GenerateConfig(max_words=args.max_words, temperature=args.temperature, top_k=args.top_k, seed=args.seed)

    def one(prompt: str) -> None:
        g = gen.generate(prompt, cfg)
        if g.unknown:
            print(f"(unknown words read as <unk>: {', '.join(g.unknown)})", file=sys.stderr)
        print(g.text)
        corpus, name = getattr(args, "training_corpus", (None, "not recorded"))
        copy = find_copy(g.all_words, len(g.prompt_words), corpus, name)
        if copy.note:
            print(f"({copy.note})", file=sys.stderr)
        if args.show_probs:
            for position, word, prob, top in probability_rows(g):
                print(f"  {position:>3} {word:<14} p={prob}   likeliest: {top}")
        if args.show_attention:
            print(json.dumps({"words": g.all_words, "attention": g.attention.tolist()}))

    if not args.interactive:
        one(args.prompt or "")
        return 0
    print("type a prompt and press enter; an empty line or Ctrl-D quits", file=sys.stderr)
    for line in sys.stdin:
        if not line.strip():
            break
        try:
            one(line)
        except GenerationError as e:
            print(f"error: {e}", file=sys.stderr)
    return 0
