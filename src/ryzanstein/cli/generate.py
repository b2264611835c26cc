"""`ryzanstein generate`: stream text to the terminal, or print one JSON object."""
from __future__ import annotations

import argparse
import json
import os
import sys

from ..engine import Engine
from ..errors import ConfigError
from .args import add_generation_args, add_load_args, generation_config_from_args, load_config_from_args


def add_parser(sub) -> None:
    g = sub.add_parser("generate", help="generate text from a prompt")
    g.add_argument("prompt", help="the prompt, or - to read it from stdin")
    g.add_argument("--no-chat", action="store_true", help="send the raw prompt, without the chat template")
    g.add_argument("--json", action="store_true", help="print one JSON object (text, tokens, finish_reason, stats)")
    add_load_args(g)
    add_generation_args(g)
    g.set_defaults(func=cmd_generate)


def cmd_generate(a: argparse.Namespace) -> int:
    prompt = read_prompt(a.prompt)
    gcfg = generation_config_from_args(a)  # validate settings before any model loads
    engine = Engine(load_config_from_args(a))
    gen = engine.stream(prompt, gcfg, chat=not a.no_chat)
    if a.json:
        for _ in gen:
            pass
        print(json.dumps(gen.result.to_dict(), allow_nan=False))  # to_dict made NaN None
        return 0
    for piece in gen:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    s = gen.result.stats
    if sys.stderr.isatty() or a.verbose:
        spec = f", draft {s.draft}: acceptance {s.acceptance_rate:.0%}, {s.mean_acceptance_length:.2f} tokens/forward" if s.spec_rounds else ""
        print(f"[{s.num_tokens} tokens, {s.tokens_per_s:.1f} tok/s, ttft {s.ttft_s * 1000:.0f} ms{spec}]", file=sys.stderr)
    if s.fallback:
        print(f"warning: {s.fallback}; the rest was decoded without speculation", file=sys.stderr)
    return 0


def read_prompt(arg: str) -> str:
    """The prompt from the argument (or stdin for -), refused with the offending byte unless it is UTF-8."""
    if arg == "-":
        data, where = sys.stdin.buffer.read(), "the prompt read from stdin"
    else:  # argv arrives decoded with surrogateescape: the bytes as typed come back with fsencode
        data, where = os.fsencode(arg), "the prompt argument"
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where} is not UTF-8: byte 0x{data[e.start]:02x} at offset {e.start} "
                          f"({e.reason}): convert it first, e.g. `iconv -f latin1 -t utf-8`") from None
