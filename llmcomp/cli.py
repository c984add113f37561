"""The llmcomp command line: train, generate, score, cache, compare, app.

Every command prints one-line errors (no traceback) for problems a person can fix, and shows a
progress bar for long work.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from llmcomp.errors import LLMCompError
from llmcomp.settings import EXAMPLE_CORPUS, Paths


# --- shared option groups -----------------------------------------------------------------
def add_corpus_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("corpus")
    g.add_argument("--corpus", default=str(EXAMPLE_CORPUS), help="UTF-8 .txt file (default: bundled example)")
    g.add_argument(
        "--split", choices=["auto", "lines", "paragraphs"], default="auto", help="how text becomes sentences"
    )
    g.add_argument("--max-words", type=int, default=64, help="longest sentence allowed (words)")
    g.add_argument("--val-fraction", type=float, default=0.1, help="share of sentences held out for validation")


def add_source_args(p: argparse.ArgumentParser, default: str = "uniform") -> None:
    g = p.add_argument_group("attention source")
    g.add_argument(
        "--attention",
        default=default,
        help="uniform, previous, gaussian, random, learned, local, openai or oracle (default: %(default)s)",
    )
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
    heads: Any = args.heads
    if heads is not None:
        heads = int(heads) if heads.isdigit() else [h.strip() for h in heads.split(",") if h.strip()]
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


def make_cli_source(args: argparse.Namespace, **extra: Any):
    from llmcomp.attention import build_source

    cache = None if args.no_cache else (args.cache or Paths.from_env().cache)
    return build_source(args.attention, {**source_options(args), **extra}, cache_path=cache, fallback=args.fallback)


def load_cli_corpus(args: argparse.Namespace):
    from llmcomp.text import CorpusConfig, load_corpus

    cfg = CorpusConfig(split=args.split, max_words=args.max_words, val_fraction=args.val_fraction)
    return load_corpus(args.corpus, cfg)


class ScoringBar:
    """tqdm bar fed by ``ScoreStats`` snapshots from a source."""

    def __init__(self, total: int, desc: str = "attention"):
        self.bar = tqdm(total=total, desc=desc, unit="sent", dynamic_ncols=True)

    def __call__(self, stats) -> None:
        self.bar.n = stats.done
        self.bar.set_postfix(cached=stats.cached, failed=stats.failed, req=stats.requests, refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


# --- commands ------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from llmcomp.model import GPTConfig
    from llmcomp.training import TrainConfig, Trainer

    corpus = load_cli_corpus(args)
    source = make_cli_source(args)
    run_dir = (
        Path(args.run_dir)
        if args.run_dir
        else Paths.from_env().runs / f"{source.kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    model_cfg = GPTConfig(
        n_layer=args.n_layer, n_embd=args.n_embd, n_learned_heads=args.learned_heads, dropout=args.dropout
    )
    train_cfg = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        eval_every=args.eval_every,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
    )
    trainer = Trainer(corpus, source, model_cfg, train_cfg, run_dir=run_dir, resume_from=args.resume)
    stats = corpus.stats()
    print(
        f"corpus {corpus.name}: {stats.sentences} sentences ({len(corpus.train_idx)} train, {len(corpus.val_idx)} val), "
        f"vocab {len(trainer.vocab)}; attention: {source.describe()}; model: {trainer.model.num_params():,} parameters"
    )
    bar = ScoringBar(len(corpus.sentences))
    trainer.prepare(progress=bar)
    bar.close()
    if trainer.failed_sentences:
        print(
            f"warning: {len(trainer.failed_sentences)} sentence(s) had no attention and are left out", file=sys.stderr
        )
    end = min(args.stop_at or train_cfg.steps, train_cfg.steps)
    steps = tqdm(total=end, initial=trainer.step, desc="training", unit="step", dynamic_ncols=True)
    last_val: list[float] = []

    def on_metric(m: dict[str, Any]) -> None:
        steps.n = m["step"]
        if "val_loss" in m:
            last_val.append(m["val_loss"])
        post = {"loss": f"{m['train_loss']:.3f}", "tok/s": f"{m['tokens_per_s']:.0f}"}
        if last_val:
            post["val"] = f"{last_val[-1]:.3f}"
        steps.set_postfix(post, refresh=False)
        steps.refresh()

    try:
        result = trainer.run(on_metric=on_metric, stop_at=args.stop_at)
    except KeyboardInterrupt:
        trainer.stop()
        result = trainer.run()
    steps.close()
    val = result.final_val_loss
    print(f"step {result.step}: val loss {val:.4f}" if val is not None else f"step {result.step}")
    print(f"checkpoint: {result.checkpoint}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from llmcomp.generation import GenerateConfig, GenerationError, Generator

    overrides = {k: v for k, v in {"base_url": args.base_url, "model": args.llm_model}.items() if v}
    gen = Generator.from_checkpoint(args.checkpoint, **overrides)
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


def cmd_score(args: argparse.Namespace) -> int:
    corpus = load_cli_corpus(args)
    source = make_cli_source(args)
    if hasattr(source, "estimate_all") and args.dry_run:
        for estimate in source.estimate_all(corpus.sentences).values():
            print(f"estimate: {estimate}")
        return 0
    if hasattr(source, "estimate"):
        print(f"estimate: {source.estimate(corpus.sentences)}")
    elif args.dry_run:
        print(f"{source.kind} is computed locally: no requests, no tokens")
        return 0
    bar = ScoringBar(len(corpus.sentences))
    start = time.perf_counter()
    try:
        result = source.score_many(corpus.sentences, progress=bar)
    finally:
        bar.close()
    s = result.stats
    wall = time.perf_counter() - start
    print(
        f"{s.sentences} sentences in {wall:.1f}s: {s.scored} scored, {s.cached} cached, {s.failed} failed, "
        f"{s.fallbacks} fallbacks; {s.requests} requests, {s.prompt_tokens} prompt + {s.completion_tokens} completion tokens"
    )
    if source.cache is not None:
        print(f"cache: {source.cache.path} ({len(source.cache)} entries, hit rate {source.cache.hit_rate:.0%})")
    for i, reason in list(result.failures.items())[:10]:
        print(f"failed #{i}: {reason}", file=sys.stderr)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            for words, m in zip(corpus.sentences, result.matrices, strict=True):
                f.write(json.dumps({"words": words, "attention": None if m is None else m.tolist()}) + "\n")
        print(f"matrices written to {args.out}")
    return 0 if not result.failures or args.fallback else 1


def cmd_cache(args: argparse.Namespace) -> int:
    from llmcomp.attention import AttentionCache

    cache = AttentionCache(args.cache or Paths.from_env().cache)
    try:
        if args.action == "stats":
            print(f"{cache.path}: {len(cache)} entries")
        elif args.action == "export":
            print(f"exported {cache.export_jsonl(args.file)} entries to {args.file}")
        elif args.action == "import":
            ok, bad = cache.import_jsonl(args.file)
            print(f"imported {ok} entries into {cache.path}; rejected {bad} invalid line(s)")
    finally:
        cache.close()
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    from llmcomp.ui.app import launch

    launch(host=args.host, port=args.port, share=args.share)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from llmcomp.experiments.compare_cli import run_cli

    return run_cli(args)


# --- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmcomp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model with a chosen attention source")
    add_corpus_args(p)
    add_source_args(p)
    g = p.add_argument_group("model and training")
    g.add_argument("--steps", type=int, default=600)
    g.add_argument("--batch-size", type=int, default=64)
    g.add_argument("--lr", type=float, default=3e-3)
    g.add_argument("--n-layer", type=int, default=2)
    g.add_argument("--n-embd", type=int, default=64)
    g.add_argument("--learned-heads", type=int, default=0, help="learned heads beside the supplied ones")
    g.add_argument("--dropout", type=float, default=0.1)
    g.add_argument("--eval-every", type=int, default=50)
    g.add_argument("--checkpoint-every", type=int, default=0)
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--run-dir", help="output folder (default: a new folder under $LLMCOMP_RUNS)")
    g.add_argument("--resume", help="checkpoint folder to continue from (same corpus and source)")
    g.add_argument("--stop-at", type=int, help="stop at this step (resume later to reach --steps)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("generate", help="generate text from a checkpoint")
    p.add_argument("--checkpoint", required=True, help="checkpoint folder written by train")
    p.add_argument("--prompt", default="", help="words to start from")
    p.add_argument("--interactive", "-i", action="store_true", help="read prompts from standard input")
    p.add_argument("--max-words", type=int, default=30)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-k", type=int, default=20)
    p.add_argument("--seed", type=int)
    p.add_argument("--show-attention", action="store_true", help="also print the attention matrix as JSON")
    p.add_argument("--base-url", help="openai checkpoints: server URL to score with")
    p.add_argument("--model", dest="llm_model", help="openai checkpoints: model to score with")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("score", help="score a corpus's attention into the cache (with a cost estimate)")
    add_corpus_args(p)
    add_source_args(p, default="local")
    p.add_argument("--dry-run", action="store_true", help="estimate requests and tokens; send nothing")
    p.add_argument("--out", help="also write the matrices as JSON lines")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("cache", help="inspect, export or import the attention cache")
    p.add_argument("action", choices=["stats", "export", "import"])
    p.add_argument("file", nargs="?", help="JSONL file to export to or import from")
    p.add_argument("--cache", help="cache file (default: $LLMCOMP_CACHE or .llmcomp/attention-cache.sqlite)")
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("compare", help="train the same model with each attention source and tabulate")
    add_corpus_args(p)
    p.add_argument("--sources", default="uniform,previous,gaussian,random,learned,local", help="comma-separated")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", help="run folder for the table and plot")
    g = p.add_argument_group("model and training (shared by every source; defaults: CompareConfig)")
    g.add_argument("--n-layer", type=int)
    g.add_argument("--n-embd", type=int)
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--eval-every", type=int)
    g.add_argument("--dropout", type=float)
    g.add_argument("--max-sentences", type=int, help="use only the first N sentences of the corpus")
    g.add_argument("--focus", choices=["auto", "on", "off"], default="auto", help="loss on decided positions")
    g.add_argument("--threads", type=int, help="torch threads (1 is often faster on a busy 2-core machine)")
    g.add_argument("--cache", help="attention cache for local/openai (default: $LLMCOMP_CACHE)")
    g.add_argument("--no-cache", action="store_true", help="do not read or write the attention cache")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("app", help="start the web app")
    p.add_argument("--host", default=None, help="default $LLMCOMP_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, default=None, help="default $LLMCOMP_PORT or 7860")
    p.add_argument("--share", action="store_true", help="make a public gradio.live link")
    p.set_defaults(func=cmd_app)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "action", None) in ("export", "import") and not args.file:
        print(f"error: cache {args.action} needs a FILE argument", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (LLMCompError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
