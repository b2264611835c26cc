"""The `ryzanstein` parser, and the one place errors become exit codes.

Every bad input ends as one line on stderr and a non-zero exit, never a traceback
(set RYZANSTEIN_DEBUG=1 to see one).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from ..errors import RyzansteinError
from . import bench, chat, distill, generate, models, profile, serve


class Parser(argparse.ArgumentParser):
    """argparse, with a misused flag as one line (and exit 2) rather than the whole usage text."""

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="ryzanstein", description="CPU-first LLM inference with lossless speculative decoding")
    p.add_argument("--verbose", "-v", action="store_true", help="log details to stderr")
    sub = p.add_subparsers(dest="command", required=True)
    for command in (generate, chat, models, profile, bench, serve, distill):
        command.add_parser(sub)
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
