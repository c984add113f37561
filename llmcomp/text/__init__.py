"""Text: word tokenizer, corpus loading and validation, vocabulary."""

from llmcomp.text.corpus import Corpus, CorpusConfig, CorpusError, CorpusStats, load_corpus, parse_corpus
from llmcomp.text.tokenizer import detokenize, tokenize
from llmcomp.text.vocab import Vocab

__all__ = [
    "Corpus",
    "CorpusConfig",
    "CorpusError",
    "CorpusStats",
    "Vocab",
    "detokenize",
    "load_corpus",
    "parse_corpus",
    "tokenize",
]
