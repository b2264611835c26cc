"""`ryzanstein models ...`: list, pull and locate the known models of the store (models/store.py)."""

from __future__ import annotations

import argparse
import sys

from ..errors import ModelNotFound
from ..models import store


# Register `models {list,pull,path}` on the main parser's subparsers.
def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("models", help="list, pull and locate models",
                                   description="List, download and locate the known models.")
    actions = parser.add_subparsers(dest="models_command", metavar="{list,pull,path}")
    actions.add_parser("list", help="show the known models and whether they are installed")
    pull = actions.add_parser("pull", help="download and verify a known model")
    pull.add_argument("name", help=f"one of: {', '.join(store.KNOWN_MODELS)}")
    path = actions.add_parser("path", help="print the GGUF path of an installed model")
    path.add_argument("name", help=f"one of: {', '.join(store.KNOWN_MODELS)}")
    parser.set_defaults(func=cmd_models)
    return parser


# Run a parsed `models` command; returns the exit code.
def cmd_models(args: argparse.Namespace) -> int:
    command = getattr(args, "models_command", None) or "list"
    if command == "list":
        _print_table(store.list_rows())
    elif command == "pull":
        print(store.pull(args.name, out=sys.stderr))
    elif command == "path":
        path = store.path_of(args.name)
        if path is None:
            raise ModelNotFound(f"model '{args.name}' is not installed: run `ryzanstein models pull {args.name}`")
        print(path)
    return 0


def _print_table(rows: list[dict]) -> None:
    table = [("NAME", "SIZE MB", "INSTALLED", "PATH")]
    table += [(r["name"], f"{r['size'] / 1e6:.0f}", "yes" if r["installed"] else "no", r["path"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        print(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}".rstrip())
