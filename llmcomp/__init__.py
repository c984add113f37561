"""llmcomp: train a small GPT whose attention weights are supplied from outside.

The Python API in one screen::

    from llmcomp import load_corpus, make_source, Trainer, TrainConfig, Generator, GenerateConfig

    corpus = load_corpus("data/example.txt")
    source = make_source("gaussian")                 # or "local", "openai", "learned", ...
    result = Trainer(corpus, source, train_config=TrainConfig(steps=300), run_dir="runs/demo").run()
    gen = Generator.from_checkpoint(result.checkpoint)
    print(gen.generate("the cat", GenerateConfig(seed=0)).text)
"""

from llmcomp.attention import AttentionCache, AttentionSource, build_source, make_source, source_from_spec
from llmcomp.errors import LLMCompError
from llmcomp.generation import GenerateConfig, Generation, Generator, generate
from llmcomp.model import GPT, GPTConfig
from llmcomp.text import Corpus, CorpusConfig, load_corpus, parse_corpus, tokenize
from llmcomp.training import TrainConfig, Trainer, TrainResult, load_checkpoint, train

__version__ = "0.1.0"

__all__ = [
    "GPT",
    "AttentionCache",
    "AttentionSource",
    "Corpus",
    "CorpusConfig",
    "GPTConfig",
    "GenerateConfig",
    "Generation",
    "Generator",
    "LLMCompError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "build_source",
    "generate",
    "load_checkpoint",
    "load_corpus",
    "make_source",
    "parse_corpus",
    "source_from_spec",
    "tokenize",
    "train",
]
