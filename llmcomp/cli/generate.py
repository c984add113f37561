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
    overrides = {k: v for k, v in {"base_url": args.base_url, "model": args.llm_model}.items() if v}
    # the checkpoint names where it was scored; the key goes there only if this command names it too
    source = build_source({**ck.source_spec, **overrides}, keys=KeyPolicy.command_line(args.base_url))
    try:
        return _generate(args, Generator(ck.model, ck.vocab, source))
    finally:
        source.close()


def _generate(args: argparse.Namespace, gen: Any) -> int:
    from llmcomp.generation import GenerationError

    cfg = GenerateConfig(max_words=args.max_words, temperature=args.temperature, top_k=args.top_k, seed=args.seed)

    def one(prompt: str) -> None:
        g = gen.generate(prompt, cfg)
        if g.unknown:
            print(f"(unknown words read as <unk>: {', '.join(g.unknown)})", file=sys.stderr)
        print(g.text)
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
