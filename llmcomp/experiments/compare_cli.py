"""``llmcomp compare`` on the command line: arguments to a CompareConfig, progress bars, the printed table."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from llmcomp.attention import ScoreStats
from llmcomp.experiments.compare import CompareConfig, compare, is_binding_corpus, resolve_sources
from llmcomp.experiments.labels import CLI_DEFAULT_SOURCES
from llmcomp.text.corpus import Corpus, CorpusConfig, load_corpus


def config_from_args(args: Any) -> CompareConfig:
    """A CompareConfig from ``llmcomp compare`` arguments (missing ones take the defaults)."""
    from llmcomp.settings import Paths

    base = CompareConfig()
    raw = getattr(args, "sources", None)
    # the declared default means the automatic list (plus oracle on the binding corpus, openai if configured)
    sources = None if raw is None or raw == CLI_DEFAULT_SOURCES else [s for s in raw.split(",") if s.strip()]
    seeds = getattr(args, "seeds", None) or 3
    model = replace(
        base.model,
        n_layer=getattr(args, "n_layer", None) or base.model.n_layer,
        n_embd=getattr(args, "n_embd", None) or base.model.n_embd,
        dropout=base.model.dropout if getattr(args, "dropout", None) is None else args.dropout,
    )
    train = replace(
        base.train,
        batch_size=getattr(args, "batch_size", None) or base.train.batch_size,
        lr=getattr(args, "lr", None) or base.train.lr,
        eval_every=getattr(args, "eval_every", None) or base.train.eval_every,
    )
    corpus = CorpusConfig(
        split=getattr(args, "split", "auto"),
        max_words=getattr(args, "max_words", 64),
        val_fraction=getattr(args, "val_fraction", 0.1),
    )
    focus = {"auto": None, "on": True, "off": False}[getattr(args, "focus", None) or "auto"]
    cache = None if getattr(args, "no_cache", False) else Path(getattr(args, "cache", None) or Paths.from_env().cache)
    return CompareConfig(
        sources=sources,
        seeds=list(range(seeds)),
        steps=getattr(args, "steps", None) or base.steps,
        model=model,
        train=train,
        corpus=corpus,
        focus=focus,
        cache=cache,
        max_sentences=getattr(args, "max_sentences", None),
        threads=getattr(args, "threads", None),
    )


class _Bars:
    """tqdm bars for the CLI: one per source while it is scored, one for all training steps."""

    def __init__(self, total_steps: int):
        from tqdm import tqdm

        self.tqdm = tqdm
        self.scoring = None
        self.training = tqdm(total=total_steps, desc="training", unit="step", dynamic_ncols=True, position=1)
        self.done = 0  # steps of finished runs

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "source":
            self._close_scoring()
            label = f"{event['label']} ({event['index'] + 1}/{event['total']})"
            self.scoring = self.tqdm(desc=f"attention {label}", unit="sent", dynamic_ncols=True, position=0)
        elif kind == "scoring" and self.scoring is not None:
            s: ScoreStats = event["stats"]
            self.scoring.total = s.sentences
            self.scoring.n = s.done
            self.scoring.set_postfix(cached=s.cached, failed=s.failed, req=s.requests, refresh=False)
            self.scoring.refresh()
        elif kind == "metric":
            m = event["record"]
            self.training.n = self.done + m["step"]
            post = {"source": event["label"], "seed": event["seed"], "loss": f"{m['train_loss']:.3f}"}
            if "val_loss" in m:
                post["val"] = f"{m['val_loss']:.3f}"
            self.training.set_postfix(post, refresh=False)
            self.training.refresh()
        elif kind == "run":
            self.done += event["record"].steps
        elif kind == "failed":
            self._close_scoring()
            self.training.write(f"warning: {event['label']} left out: {event['reason']}")

    def _close_scoring(self) -> None:
        if self.scoring is not None:
            self.scoring.close()
            self.scoring = None

    def close(self) -> None:
        self._close_scoring()
        self.training.close()


def run_cli(args: Any) -> int:
    """``llmcomp compare``: train every source with every seed, write the folder, print the table."""
    from llmcomp.settings import Paths

    config = config_from_args(args)
    corpus = load_corpus(args.corpus, config.corpus)
    if config.max_sentences:
        corpus = Corpus(corpus.sentences[: config.max_sentences], name=corpus.name, config=corpus.config)
        config = replace(config, max_sentences=None)
    default_out = Paths.from_env().runs / f"compare-{Path(corpus.name).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    config.out = Path(args.out) if getattr(args, "out", None) else default_out
    labels, notes = resolve_sources(config.sources, corpus)
    config.sources = labels
    for note in notes:
        print(note, file=sys.stderr)
    focus = is_binding_corpus(corpus) if config.focus is None else config.focus
    print(
        f"comparing {', '.join(labels)} on {corpus.name} ({len(corpus.train_idx)} train / {len(corpus.val_idx)} val "
        f"sentences), {len(config.seeds)} seed(s) x {config.steps} steps each; model {config.model.n_layer} layer(s) "
        f"x {config.model.n_embd}; focus loss {'on' if focus else 'off'}; writing to {config.out}",
        file=sys.stderr,
    )
    bars = _Bars(len(labels) * len(config.seeds) * config.steps)
    try:
        result = compare(corpus, config, progress=bars)
    finally:
        bars.close()
    for label, reason in result.failures.items():
        print(f"error: {label} could not be compared: {reason}", file=sys.stderr)
    print()
    print(result.markdown)
    print()
    print(f"table: {result.files.get('table.md')}  plot: {result.files.get('curves.html')}")
    return 1 if result.failures else 0
