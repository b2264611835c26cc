"""`ryzanstein` command line: generate, models, profile, bench, serve.

Every bad input ends as one line on stderr and a non-zero exit, never a traceback
(set RYZANSTEIN_DEBUG=1 to see one).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from .config import BACKENDS, DTYPES, FALLBACKS, POLICIES, GenerationConfig, LoadConfig
from .errors import RyzansteinError


def _k(value: str) -> int | None:
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
    g.add_argument("--backend", choices=BACKENDS, default=None, help="default: llama.cpp for GGUF, torch for HF folders")
    g.add_argument("--draft-backend", choices=BACKENDS, default=None, help="default: the target's backend")
    g.add_argument("--dtype", choices=DTYPES, default="float32", help="torch backend weights (default: float32)")
    g.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="torch backend device")
    g.add_argument("--threads", type=int, default=None, help="CPU threads (default: every core available)")
    g.add_argument("--ctx-size", type=int, default=None, help="context length (default: min(trained, 4096))")
    g.add_argument("--ngram-min", type=int, default=1)
    g.add_argument("--ngram-max", type=int, default=4)
    g.add_argument("--max-memory-overhead", type=float, default=1.0, help="refuse a draft adding more than this fraction of the target's memory")
    g.add_argument("--allow-memory-overhead", action="store_true", help="load even over --max-memory-overhead")
    g.add_argument("--cost-profile", default=None, help="cost profile JSON (from `ryzanstein profile`) to use instead of this machine's")


def add_generation_args(p: argparse.ArgumentParser) -> None:
    """Per-request flags (named like GenerationConfig's fields)."""
    g = p.add_argument_group("generation")
    g.add_argument("--max-new-tokens", "-n", type=int, default=256)
    g.add_argument("--temperature", "-t", type=float, default=0.0, help="0 = greedy (default)")
    g.add_argument("--top-k", type=int, default=0, help="0 = off")
    g.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    g.add_argument("--ignore-eos", action="store_true", help="do not stop at EOS: generate exactly --max-new-tokens")
    g.add_argument("--k", type=_k, default=None, help="draft length: an integer, or auto (default)")
    g.add_argument("--k-min", type=int, default=0)
    g.add_argument("--k-max", type=int, default=8)
    g.add_argument("--policy", choices=POLICIES, default="auto", help="draft-length policy (default: auto)")
    g.add_argument("--p-min", type=float, default=0.0, help="stop drafting when the draft's top probability is below this")
    g.add_argument("--fallback", choices=FALLBACKS, default="plain", help="when the draft fails: continue plain (default) or stop with an error")
    g.add_argument("--min-speedup", type=float, default=1.0, help="auto: speculate only when predicted speedup >= this")


def load_config(a: argparse.Namespace) -> LoadConfig:
    return LoadConfig(model=a.model, draft=a.draft, backend=a.backend, draft_backend=a.draft_backend, dtype=a.dtype,
                      device=a.device, threads=a.threads, ctx_size=a.ctx_size, ngram_min=a.ngram_min,
                      ngram_max=a.ngram_max, max_memory_overhead=a.max_memory_overhead,
                      allow_memory_overhead=a.allow_memory_overhead, cost_profile=a.cost_profile)


def generation_config(a: argparse.Namespace) -> GenerationConfig:
    return GenerationConfig(max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_k=a.top_k, top_p=a.top_p,
                            seed=a.seed, stop=tuple(a.stop), ignore_eos=a.ignore_eos, k=a.k, k_min=a.k_min, k_max=a.k_max, policy=a.policy,
                            p_min=a.p_min, fallback=a.fallback, min_speedup=a.min_speedup)


def cmd_generate(a: argparse.Namespace) -> int:
    prompt = sys.stdin.read() if a.prompt == "-" else a.prompt
    gcfg = generation_config(a)  # validate settings before any model loads
    lcfg = load_config(a)
    from .engine import Engine

    engine = Engine(lcfg)
    gen = engine.stream(prompt, gcfg, chat=not a.no_chat)
    if a.json:
        for _ in gen:
            pass
        print(json.dumps(gen.result.to_dict()))
        return 0
    for piece in gen:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    s = gen.result.stats
    if sys.stderr.isatty() or a.verbose:
        spec = f", draft {s.proposer}: acceptance {s.acceptance_rate:.0%}, {s.mean_acceptance_length:.2f} tokens/forward" if s.spec_rounds else ""
        print(f"[{s.num_tokens} tokens, {s.tokens_per_s:.1f} tok/s, ttft {s.ttft_s * 1000:.0f} ms{spec}]", file=sys.stderr)
    if s.fallback:
        print(f"warning: {s.fallback}; the rest was decoded without speculation", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ryzanstein", description="CPU-first LLM inference with lossless speculative decoding")
    p.add_argument("--verbose", "-v", action="store_true", help="log details to stderr")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="generate text from a prompt")
    g.add_argument("prompt", help="the prompt, or - to read it from stdin")
    g.add_argument("--no-chat", action="store_true", help="send the raw prompt, without the chat template")
    g.add_argument("--json", action="store_true", help="print one JSON object (text, tokens, finish_reason, stats)")
    add_load_args(g)
    add_generation_args(g)
    g.set_defaults(func=cmd_generate)

    from . import bench, cli_models, server
    from .spec import auto_policy as adaptive

    cli_models.add_models_parser(sub)
    adaptive.add_parser(sub)  # profile
    bench.add_parser(sub)
    server.add_parser(sub)  # serve
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    a.verbose = getattr(a, "verbose", False)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return a.func(a)
    except RyzansteinError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # never a traceback for a user; RYZANSTEIN_DEBUG=1 shows it
        if os.environ.get("RYZANSTEIN_DEBUG"):
            raise
        print(f"error: {type(e).__name__}: {e} (set RYZANSTEIN_DEBUG=1 for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
