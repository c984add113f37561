"""Generation speed with each attention source: words per second, against learned attention.

Every generated word asks the source for the attention of the words so far (the source sees only
the prefix), so a slow source makes generation slow. Tiny models are trained first (a few steps:
their quality does not matter here, only the cost of a word): uniform, gaussian, learned and the
local LLM on sentences of data/example.txt, the oracle on sentences of data/binding.txt. No cache.

    python -m bench.generation            # 60 words per pass, 3 passes per source
    python -m bench.generation --quick    # 20 words, 1 pass

Medians over the passes. One torch thread, as the trainer and the local source use by default: with
two on this shared 2-core machine a pass once ran 150 times slower (threads spin-waiting on each other).
"""

from __future__ import annotations

import argparse
import statistics
import time

from bench.common import machine, print_table
from llmcomp.attention import make_source
from llmcomp.generation import GenerateConfig, Generator
from llmcomp.model import GPTConfig
from llmcomp.settings import DATA_DIR, EXAMPLE_CORPUS
from llmcomp.text import Corpus, load_corpus
from llmcomp.threads import torch_threads
from llmcomp.training import TrainConfig, Trainer

MODEL = GPTConfig(n_layer=2, n_embd=64)
SOURCES = ("uniform", "gaussian", "learned", "oracle", "local")
EXAMPLE_PROMPT = "the"
BINDING_PROMPT = "tina keeps a jar, dave keeps a boat; dave:"


def tiny_generator(kind: str, sentences: int = 40) -> Generator:
    """A model trained for a few steps with ``kind`` attention, ready to generate."""
    path = DATA_DIR / "binding.txt" if kind == "oracle" else EXAMPLE_CORPUS
    full = load_corpus(path)
    corpus = Corpus(full.sentences[:sentences], name=full.name, config=full.config)
    source = make_source(kind)
    trainer = Trainer(corpus, source, MODEL, TrainConfig(steps=10, batch_size=8, eval_every=10))
    trainer.run()
    return Generator(trainer.model, trainer.vocab, source)


def words_per_second(gen: Generator, prompt: str, words: int, seed: int) -> float:
    """Generate until ``words`` new words exist (restarting after a sentence end); words per second."""
    cfg = GenerateConfig(max_words=words, temperature=1.0, top_k=0, seed=seed, stop_at_sentence_end=False)
    made, t0 = 0, time.perf_counter()
    while made < words:
        made += max(1, len(gen.generate(prompt, cfg).words))
    return made / (time.perf_counter() - t0)


def run(quick: bool = False) -> list[dict]:
    words, repeats = (20, 1) if quick else (60, 3)
    rows = []
    with torch_threads(1):
        for kind in SOURCES:
            gen = tiny_generator(kind)
            prompt = BINDING_PROMPT if kind == "oracle" else EXAMPLE_PROMPT
            words_per_second(gen, prompt, 3, seed=0)  # warm-up (and the local model's load)
            speeds = [words_per_second(gen, prompt, words, seed=k) for k in range(repeats)]
            rows.append(
                {"source": kind, "words/s (median)": statistics.median(speeds), "words": words, "runs": repeats}
            )
    learned = next(r["words/s (median)"] for r in rows if r["source"] == "learned")
    for r in rows:
        r["x learned"] = r["words/s (median)"] / learned
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    rows = run(quick=p.parse_args().quick)
    print_table(
        f"generation speed (model {MODEL.n_layer}x{MODEL.n_embd}; {machine()})",
        rows,
        ["source", "words/s (median)", "x learned", "words", "runs"],
    )


if __name__ == "__main__":
    main()
