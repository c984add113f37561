"""Generation: prompt in, words out, with attention from the same source as training."""

from llmcomp.generation.generate import GenerateConfig, Generation, GenerationError, Generator, generate

__all__ = ["GenerateConfig", "Generation", "GenerationError", "Generator", "generate"]
