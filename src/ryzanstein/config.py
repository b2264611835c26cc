"""Frozen, validated configuration. Every invalid value raises one ConfigError naming field, value and range.

`LoadConfig` is what is fixed when models are loaded (which target, which draft, backend, threads, memory
limits); `GenerationConfig` is what may change per request (sampling, budget, draft length policy);
`SamplingParams` is the part of it that says how a token is drawn from a logits row, the one record the
decode loop, the sampler and a model proposer pass between them. CLI flags and server fields carry the
same names as the fields.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from .errors import ConfigError

BACKENDS = ("native", "llama.cpp", "torch")  # each loaded by models/__init__.py
DTYPES = ("float32", "bfloat16")  # torch backend weights
DEVICES = ("cpu", "cuda")  # torch backend
POLICIES = ("auto", "fixed", "heuristic", "confidence")
FALLBACKS = ("plain", "error")


def default_backend(kind: str) -> str:
    """The backend for a model file of this kind (the store's "gguf" or "hf"): native for GGUF files (llama.cpp
    where the native backend cannot run the file or the CPU: models/__init__.py falls back with a note), torch
    for Hugging Face folders."""
    return "native" if kind == "gguf" else "torch"


def _check(ok: bool, field: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"invalid {field}={value!r}: must be {allowed}")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True, kw_only=True)
class SamplingParams:
    """How the next token is drawn from a logits row, for the target and a model draft alike (the same
    settings on both sides are what keep speculative sampling lossless). The order of the filters is
    transformers': temperature, then top-k, then top-p, then min-p. temperature=0 is greedy: the argmax,
    no distribution is built. The defaults are every filter off at temperature 0; `GenerationConfig` holds
    a user's defaults."""

    temperature: float = 0.0  # 0 = greedy (argmax)
    top_k: int = 0  # 0 = off
    top_p: float = 1.0  # 1 = off
    min_p: float = 0.0  # 0 = off; drop tokens under min_p x the most likely token's probability

    def __post_init__(self) -> None:
        _check(_is_num(self.temperature) and 0 <= self.temperature <= 100, "temperature", self.temperature, "a number in [0, 100] (0 = greedy)")
        _check(_is_int(self.top_k) and self.top_k >= 0, "top_k", self.top_k, "an integer >= 0 (0 = off)")
        _check(_is_num(self.top_p) and 0 < self.top_p <= 1, "top_p", self.top_p, "a number in (0, 1] (1 = off)")
        _check(_is_num(self.min_p) and 0 <= self.min_p < 1, "min_p", self.min_p, "a number in [0, 1) (0 = off)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


GREEDY = SamplingParams()


@dataclass(frozen=True)
class GenerationConfig:
    """Per-request settings: sampling, budget, speculation.

    The sampling defaults are llama.cpp's (temperature 0.8, top-k 40, top-p 0.95, min-p 0.05): text that reads
    well from a first run. temperature=0 is greedy decoding, exactly the target's argmax: what tests and
    benchmarks ask for."""

    max_new_tokens: int = 256
    temperature: float = 0.8  # 0 = greedy (argmax)
    top_k: int = 40  # 0 = off
    top_p: float = 0.95  # 1 = off
    min_p: float = 0.05  # 0 = off; drop tokens under min_p x the most likely token's probability
    seed: int | None = None  # None = a fresh random seed
    stop: tuple[str, ...] = ()  # stop strings (EOS and the model's stop ids stop too, unless ignore_eos)
    ignore_eos: bool = False  # generate exactly max_new_tokens (benchmarks)
    k: int | None = None  # draft length; None = the policy's choice ("auto")
    k_min: int = 0
    k_max: int = 8
    policy: str = "auto"  # auto | fixed | heuristic | confidence
    p_min: float = 0.0  # a model draft stops when its top probability falls below this
    fallback: str = "plain"  # what to do when the draft fails: plain decoding, or raise
    min_speedup: float = 1.0  # auto: speculate only when the predicted speedup over plain is at least this
    logprobs: int | None = None  # None = off; n = each emitted token's logprob and its n most likely tokens

    def __post_init__(self) -> None:
        _check(_is_int(self.max_new_tokens) and self.max_new_tokens >= 1, "max_new_tokens", self.max_new_tokens, "an integer >= 1")
        # the sampling record, validated once here; its fields stay flat on the config, as flags and JSON name them
        object.__setattr__(self, "_sampling", SamplingParams(temperature=self.temperature, top_k=self.top_k,
                                                             top_p=self.top_p, min_p=self.min_p))
        _check(self.seed is None or (_is_int(self.seed) and 0 <= self.seed < 2**63), "seed", self.seed, "an integer in [0, 2^63) or None")
        if isinstance(self.stop, str) or isinstance(self.stop, list):
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))
        _check(all(isinstance(s, str) and s for s in self.stop), "stop", self.stop, "non-empty strings")
        _check(_is_int(self.k_max) and 0 <= self.k_max <= 16, "k_max", self.k_max, "an integer in [0, 16]")
        _check(_is_int(self.k_min) and 0 <= self.k_min <= self.k_max, "k_min", self.k_min, f"an integer in [0, k_max={self.k_max}]")
        _check(self.k is None or (_is_int(self.k) and 0 <= self.k <= 16), "k", self.k, "an integer in [0, 16] or 'auto'")
        _check(self.policy in POLICIES, "policy", self.policy, "one of " + ", ".join(POLICIES))
        _check(_is_num(self.p_min) and 0 <= self.p_min < 1, "p_min", self.p_min, "a number in [0, 1)")
        _check(self.fallback in FALLBACKS, "fallback", self.fallback, "one of " + ", ".join(FALLBACKS))
        _check(_is_num(self.min_speedup) and 0 < self.min_speedup <= 10, "min_speedup", self.min_speedup, "a number in (0, 10]")
        _check(self.logprobs is None or (_is_int(self.logprobs) and 0 <= self.logprobs <= 20), "logprobs",
               self.logprobs, "an integer in [0, 20] (the most likely tokens to list) or None (off)")
        if self.k is not None and self.policy == "auto":
            object.__setattr__(self, "policy", "fixed")  # an explicit k means a fixed draft length

    @property
    def sampling(self) -> SamplingParams:
        """temperature, top_k, top_p and min_p as the one record the speculative core passes around."""
        return self._sampling

    @property
    def greedy(self) -> bool:
        return self._sampling.greedy

    def replace(self, **changes: Any) -> "GenerationConfig":
        return GenerationConfig(**{**asdict(self), **changes})


@dataclass(frozen=True)
class LoadConfig:
    """What is fixed at load time: target, draft, backend, threads, memory policy."""

    model: str = "smollm2-135m"
    draft: str = "ngram"  # none | ngram | self:N | a model name, .gguf path or HF folder
    backend: str | None = None  # None = native for GGUF (llama.cpp where native cannot run it), torch for HF folders
    draft_backend: str | None = None  # None = the target's backend
    dtype: str = "float32"  # torch backend
    device: str = "cpu"  # torch backend: cpu | cuda
    threads: int | None = None  # None = every core this process may use
    ctx_size: int | None = None  # None = min(model's trained context, 4096)
    ngram_min: int = 1
    ngram_max: int = 4
    max_memory_overhead: float = 1.0  # speculation may add at most this fraction of the target's memory
    allow_memory_overhead: bool = False  # load anyway when max_memory_overhead is exceeded
    cost_profile: str | None = None  # a cost profile JSON to use instead of measuring this machine
    draft_vocab: int | None = None  # a draft model's output layer over this many ids (+ specials + context); 0 = all, None = auto

    def __post_init__(self) -> None:
        _check(isinstance(self.model, str) and bool(self.model), "model", self.model, "a model name, .gguf path or HF folder")
        _check(isinstance(self.draft, str) and bool(self.draft), "draft", self.draft, "none, ngram, self:N, or a model name/path")
        main = self.draft.removesuffix("+ngram")
        if main.startswith("self:"):
            n = main[5:]
            _check(n.isdigit() and int(n) >= 1, "draft", self.draft, "self:N with N >= 1 layers")
        _check(self.backend is None or self.backend in BACKENDS, "backend", self.backend, "one of " + ", ".join(BACKENDS))
        _check(self.draft_backend is None or self.draft_backend in BACKENDS, "draft_backend", self.draft_backend, "one of " + ", ".join(BACKENDS))
        _check(self.dtype in DTYPES, "dtype", self.dtype, "one of " + ", ".join(DTYPES))
        _check(self.device in DEVICES, "device", self.device, " or ".join(DEVICES))
        _check(self.threads is None or (_is_int(self.threads) and 1 <= self.threads <= 512), "threads", self.threads, "an integer in [1, 512]")
        _check(self.ctx_size is None or (_is_int(self.ctx_size) and 16 <= self.ctx_size <= 1 << 20), "ctx_size", self.ctx_size, "an integer in [16, 1048576]")
        _check(_is_int(self.ngram_min) and 1 <= self.ngram_min <= 16, "ngram_min", self.ngram_min, "an integer in [1, 16]")
        _check(_is_int(self.ngram_max) and self.ngram_min <= self.ngram_max <= 32, "ngram_max", self.ngram_max, f"an integer in [ngram_min={self.ngram_min}, 32]")
        _check(self.draft_vocab is None or (_is_int(self.draft_vocab) and self.draft_vocab >= 0), "draft_vocab", self.draft_vocab, "an integer >= 0 (0 = the whole vocabulary)")
        _check(_is_num(self.max_memory_overhead) and self.max_memory_overhead >= 0, "max_memory_overhead", self.max_memory_overhead, "a fraction >= 0 of the target's memory")

