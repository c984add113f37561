"""llmcomp: train a small GPT whose attention weights are supplied from outside.

The Python API in one screen::

    from llmcomp import load_corpus, make_source, Trainer, TrainConfig, Generator, GenerateConfig

    corpus = load_corpus("data/example.txt")
    source = make_source("gaussian")                 # or "local", "openai", "learned", ...
    result = Trainer(corpus, source, train_config=TrainConfig(steps=300), run_dir="runs/demo").run()
    gen = Generator.from_checkpoint(result.checkpoint)
    print(gen.generate("the cat", GenerateConfig(seed=0)).text)

Names are imported on first use (lazy_loader; the list is in ``__init__.pyi``), so ``import llmcomp``
stays cheap and the web app can show its page before torch has loaded.
"""

import lazy_loader as lazy

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy.attach_stub(__name__, __file__)
