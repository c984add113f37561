"""The llmcomp command line: train, generate, score, cache, compare, heads, tasks, runs, app.

Every command prints one-line errors (no traceback) for problems a person can fix, and shows a
progress bar for long work. Each command group is a module here (``train``, ``generate``,
``score``, ``compare``, ``heads``, ``tasks``, ``runs``, ``web``); they call the application layer (``llmcomp.app``) and read their
defaults from the config dataclasses. Building the parser imports no torch, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import sys

from llmcomp.attention.local_origin import LocalModelUnavailable
from llmcomp.cli import compare, generate, heads, runs, score, tasks, train, web
from llmcomp.errors import LLMCompError, one_line
from llmcomp.text.corpus import SentenceTooLongError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmcomp", description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train.add_parser(sub)
    generate.add_parser(sub)
    score.add_parsers(sub)
    compare.add_parser(sub)
    heads.add_parser(sub)
    tasks.add_parser(sub)
    runs.add_parser(sub)
    web.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        try:
            return args.func(args)
        except SentenceTooLongError as e:  # the remedy that exists here: a flag, where the command has it
            flag = getattr(args, "corpus_max_words_flag", False)
            raise e.advise("split it, or raise --max-words" if flag else "split it into shorter sentences") from None
    except (LLMCompError, OSError) as e:  # a message may quote a file name or a file's words: one safe line
        hint = (
            "; without the local LLM, pass another source: --attention uniform"
            if isinstance(e, LocalModelUnavailable)
            else ""
        )
        print(f"error: {one_line(e)}{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback, saying what is kept
        if args.command != "app":
            print(
                "interrupted: what was committed is kept (cache entries, checkpoints); a --batch command run "
                "again resumes its batches, which keep running on the server",
                file=sys.stderr,
            )
        return 130
