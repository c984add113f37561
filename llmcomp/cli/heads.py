"""``llmcomp heads``: the head atlas of a source over a corpus: ranked tables, atlas.json/.csv/.html."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from llmcomp.cli.common import (
    ScoringBar,
    add_corpus_args,
    add_source_args,
    cli_builder,
    cli_description,
    load_cli_corpus,
)

TOP = 10  # heads printed per pattern


def add_parser(sub: Any) -> None:
    p = sub.add_parser("heads", help="map which heads of a source follow which attention patterns (head atlas)")
    add_corpus_args(p)
    add_source_args(p, default="local")
    p.add_argument(
        "--pattern",
        action="append",
        help="self, previous, first, spread, a task (binding, task:copy-after:the, ...); repeat the flag for more "
        "(default: the four built-ins and every registered task)",
    )
    p.add_argument("--max-sentences", type=int, help="use only the first N sentences of the corpus")
    p.add_argument("--out", default="atlas", help="folder for atlas.json, atlas.csv, atlas.html (default: %(default)s)")
    p.set_defaults(func=cmd_heads)


def description_for(args: argparse.Namespace) -> dict[str, Any]:
    """The flags' source; the local LLM with every head as its own (``heads="all"``) unless told otherwise."""
    description = cli_description(args)
    if description["kind"] == "local" and "heads" not in description and "n_heads" not in description:
        description["heads"] = "all"
    return description


def cmd_heads(args: argparse.Namespace) -> int:
    from llmcomp.attention.atlas import head_atlas
    from llmcomp.plots.atlas import write_atlas_figure

    corpus = load_cli_corpus(args)
    sentences = corpus.sentences[: args.max_sentences] if args.max_sentences else corpus.sentences
    source = cli_builder(args)(description_for(args))
    try:
        bar = ScoringBar(len(sentences))
        try:
            atlas = head_atlas(source, sentences, args.pattern, progress=bar)
        finally:
            bar.close()
        title = f"head atlas: {source.describe()} on {corpus.name}, {atlas.sentences} sentences"
    finally:
        source.close()
    print(f"{title}; {len(atlas.labels)} heads")
    for p, pattern in enumerate(atlas.patterns):
        ranked = atlas.ranked(pattern)
        print(f"\n{pattern} ({atlas.rows[p]} rows)")
        if not ranked:
            print("  no sentence has a target for this pattern")
        for rank, (label, score) in enumerate(ranked[:TOP], 1):
            hit = float(atlas.argmax[p, atlas.labels.index(label)])
            extra = "" if hit != hit else f"  argmax {hit:.3f}"  # NaN: spread has no target
            print(f"  {rank:>2}. {label:<12} {score:.3f}{extra}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    files = [atlas.write_json(out / "atlas.json"), atlas.write_csv(out / "atlas.csv")]
    files += list(write_atlas_figure(atlas, out, title).values())
    print(f"\nwritten: {', '.join(str(f) for f in files)}")
    return 0
