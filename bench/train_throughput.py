"""Training throughput: the original experiment's loop shape against llmcomp's trainer.

Three loops, same model size and corpus, measured in one run:

* ``original shape``: one random sentence per step (batch of one), its attention fetched inside
  the step, as the original ``train.py`` did (here from the uniform baseline, so no network time
  is counted: the gap is the loop shape alone);
* ``llmcomp, external``: the batched trainer with the uniform source, attention scored in bulk first;
* ``llmcomp, learned``: the same trainer with ordinary learned attention.

Run: ``python -m bench.train_throughput [--quick]``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
import torch.nn.functional as F

from bench.common import machine, print_table
from llmcomp.attention import make_source
from llmcomp.model import GPT, GPTConfig
from llmcomp.settings import EXAMPLE_CORPUS
from llmcomp.text import load_corpus
from llmcomp.threads import torch_threads
from llmcomp.training import TrainConfig, Trainer
from llmcomp.training.batching import with_bos

MODEL = GPTConfig(n_layer=2, n_embd=64)


def original_shape(corpus, steps: int) -> float:
    """tokens/s of one sentence per step with attention fetched in the step."""
    source, vocab = make_source("uniform"), corpus.vocab()
    model = GPT(GPTConfig(**{**MODEL.to_dict(), "vocab_size": len(vocab), "n_external_heads": 1}))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, fused=True)
    rng = random.Random(0)
    train = corpus.train
    tokens, t0 = 0, time.perf_counter()
    for _ in range(steps):
        words = rng.choice(train)
        att = with_bos(source.score(words))[None]
        ids = torch.tensor([[vocab.bos_id, *vocab.encode(words), vocab.eos_id]])
        loss = F.cross_entropy(model(ids[:, :-1], att)[0], ids[0, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
        tokens += len(words) + 1
    return tokens / (time.perf_counter() - t0)


def trainer_loop(corpus, kind: str, steps: int) -> float:
    """tokens/s of llmcomp's batched trainer (scoring done before the clock starts)."""
    cfg = TrainConfig(steps=steps, eval_every=10**9, log_every=10**9)  # the trainer's defaults otherwise
    trainer = Trainer(corpus, make_source(kind), MODEL, cfg)
    trainer.prepare()
    tokens = sum(trainer.batch(s).n_tokens for s in range(steps))
    t0 = time.perf_counter()
    trainer.run()
    return tokens / (time.perf_counter() - t0)


def run(quick: bool = False) -> list[dict]:
    with torch_threads(1):  # every loop on one thread, as the trainer trains by default
        return _run(quick)


def _run(quick: bool) -> list[dict]:
    corpus = load_corpus(EXAMPLE_CORPUS)
    repeats = 3
    steps = 40 if quick else 150
    loops = {
        "original shape (batch 1, attention in step)": lambda: original_shape(corpus, steps * 4),
        "llmcomp trainer, external (uniform)": lambda: trainer_loop(corpus, "uniform", steps),
        "llmcomp trainer, learned": lambda: trainer_loop(corpus, "learned", steps),
    }
    samples: dict[str, list[float]] = {k: [] for k in loops}
    for _ in range(repeats):  # interleaved, so drifting machine load hits every loop alike
        for name, fn in loops.items():
            samples[name].append(fn())
    med = {k: statistics.median(v) for k, v in samples.items()}
    base = med["original shape (batch 1, attention in step)"]
    learned = med["llmcomp trainer, learned"]
    rows = [
        {
            "loop": k,
            "tokens/s (median)": v,
            "x original": v / base,
            "x learned": v / learned,
            "runs": len(samples[k]),
        }
        for k, v in med.items()
    ]
    print_table(
        f"training throughput ({corpus.name}, model {MODEL.n_layer}x{MODEL.n_embd}, trainer batch "
        f"{TrainConfig().batch_size}; {machine()})",
        rows,
        ["loop", "tokens/s (median)", "x original", "x learned", "runs"],
    )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    run(quick=p.parse_args().quick)


if __name__ == "__main__":
    main()
