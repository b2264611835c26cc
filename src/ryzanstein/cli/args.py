"""Flags shared by several commands, named like the config fields they fill, and the configs made from them."""
from __future__ import annotations

import argparse

from ..config import BACKENDS, DEVICES, DTYPES, FALLBACKS, POLICIES, GenerationConfig, LoadConfig


def parse_k(value: str) -> int | None:
    """--k: an integer, or auto (None: the policy's choice)."""
    if value == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid --k {value!r}: an integer in [0, 16] or 'auto'") from None


def add_load_args(p: argparse.ArgumentParser) -> None:
    """Flags that choose and load the models (named like LoadConfig's fields)."""
    g = p.add_argument_group("models")
    g.add_argument("--model", "-m", default="smollm2-135m", help="known name, .gguf file or HF folder (default: smollm2-135m)")
    g.add_argument("--draft", default="ngram", help="none | ngram | self:N | a model name/path sharing the target's tokenizer (default: ngram)")
    g.add_argument("--backend", choices=BACKENDS, default=None, help="default: native for GGUF (llama.cpp where native cannot run the file), torch for HF folders")
    g.add_argument("--draft-backend", choices=BACKENDS, default=None, help="default: the target's backend")
    g.add_argument("--dtype", choices=DTYPES, default="float32", help="torch backend weights (default: float32)")
    g.add_argument("--device", choices=DEVICES, default="cpu", help="torch backend device")
    g.add_argument("--threads", type=int, default=None, help="CPU threads (default: every core available)")
    g.add_argument("--ctx-size", type=int, default=None, help="context length (default: min(trained, 4096))")
    g.add_argument("--ngram-min", type=int, default=1)
    g.add_argument("--ngram-max", type=int, default=4)
    g.add_argument("--max-memory-overhead", type=float, default=1.0, help="refuse a draft adding more than this fraction of the target's memory")
    g.add_argument("--allow-memory-overhead", action="store_true", help="load even over --max-memory-overhead")
    g.add_argument("--draft-vocab", type=int, default=None, help="a draft model scores only the first N ids, the "
                   "special ones and the context's (lossless; native backend); 0 = all (default: 32768 for "
                   "vocabularies over 65536)")
    g.add_argument("--cost-profile", default=None, help="cost profile JSON (from `ryzanstein profile`) to use instead of this machine's")


def add_generation_args(p: argparse.ArgumentParser) -> None:
    """Per-request flags (named like GenerationConfig's fields)."""
    g = p.add_argument_group("generation")
    d = GenerationConfig()  # the defaults are the config's (llama.cpp's sampling defaults)
    g.add_argument("--max-new-tokens", "-n", type=int, default=d.max_new_tokens)
    g.add_argument("--temperature", "-t", type=float, default=d.temperature, help=f"0 = greedy (default: {d.temperature})")
    g.add_argument("--top-k", type=int, default=d.top_k, help=f"0 = off (default: {d.top_k})")
    g.add_argument("--top-p", type=float, default=d.top_p, help=f"1 = off (default: {d.top_p})")
    g.add_argument("--min-p", type=float, default=d.min_p, help=f"drop tokens under min-p x the top token's "
                   f"probability; 0 = off (default: {d.min_p})")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    g.add_argument("--ignore-eos", action="store_true", help="do not stop at EOS: generate exactly --max-new-tokens")
    g.add_argument("--k", type=parse_k, default=None, help="draft length: an integer, or auto (default)")
    g.add_argument("--k-min", type=int, default=0)
    g.add_argument("--k-max", type=int, default=8)
    g.add_argument("--policy", choices=POLICIES, default="auto", help="draft-length policy (default: auto)")
    g.add_argument("--p-min", type=float, default=0.0, help="stop drafting when the draft's top probability is below this")
    g.add_argument("--fallback", choices=FALLBACKS, default="plain", help="when the draft fails: continue plain (default) or stop with an error")
    g.add_argument("--min-speedup", type=float, default=1.0, help="auto: speculate only when predicted speedup >= this")


def load_config_from_args(a: argparse.Namespace) -> LoadConfig:
    return LoadConfig(model=a.model, draft=a.draft, backend=a.backend, draft_backend=a.draft_backend, dtype=a.dtype,
                      device=a.device, threads=a.threads, ctx_size=a.ctx_size, ngram_min=a.ngram_min,
                      ngram_max=a.ngram_max, max_memory_overhead=a.max_memory_overhead,
                      allow_memory_overhead=a.allow_memory_overhead, cost_profile=a.cost_profile,
                      draft_vocab=a.draft_vocab)


def generation_config_from_args(a: argparse.Namespace) -> GenerationConfig:
    return GenerationConfig(max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_k=a.top_k, top_p=a.top_p,
                            min_p=a.min_p, seed=a.seed, stop=tuple(a.stop), ignore_eos=a.ignore_eos, k=a.k, k_min=a.k_min, k_max=a.k_max, policy=a.policy,
                            p_min=a.p_min, fallback=a.fallback, min_speedup=a.min_speedup)
