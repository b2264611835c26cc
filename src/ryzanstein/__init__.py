"""Ryzanstein: CPU-first LLM inference with lossless, measured speculative decoding.

    from ryzanstein import Engine
    engine = Engine(model="smollm2-135m", draft="ngram")
    result = engine.generate("Write a haiku about the sea", max_new_tokens=64)
    print(result.text, result.stats.acceptance_rate)
"""
from .config import GenerationConfig, LoadConfig, SamplingParams
from .batching import Batcher, Job
from .engine import Engine, Generation, GenerationResult
from .errors import RyzansteinError
from .speculative.stats import GenerationStats

__all__ = ["Engine", "Batcher", "Job", "Generation", "GenerationResult", "GenerationConfig", "LoadConfig", "SamplingParams", "GenerationStats",
           "RyzansteinError"]
__version__ = "0.1.0"
