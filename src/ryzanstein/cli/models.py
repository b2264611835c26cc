"""`ryzanstein models ...`: list, pull and locate the known models of the store (models/store.py)."""

from __future__ import annotations

import argparse
import sys

from ..errors import ModelNotFound, RyzansteinError
from ..models import store


# Register `models {list,pull,path}` on the main parser's subparsers.
def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("models", help="list, pull and locate models",
                                   description="List, download and locate the known models.")
    actions = parser.add_subparsers(dest="models_command", metavar="{list,pull,path,verify}")
    actions.add_parser("list", help="show the known models and whether they are installed (or corrupt)")
    pull = actions.add_parser("pull", help="download and verify a known model")
    pull.add_argument("name", help=f"one of: {', '.join(store.KNOWN_MODELS)}")
    path = actions.add_parser("path", help="print the GGUF path of an installed model")
    path.add_argument("name", help=f"one of: {', '.join(store.KNOWN_MODELS)}")
    verify = actions.add_parser("verify", help="re-hash installed models and compare with their known sha256")
    verify.add_argument("name", nargs="?", help="one model (default: every installed one)")
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
        st = store.check(args.name)
        if st.state == "corrupt":
            raise st.error()
        if st.path is None:
            raise ModelNotFound(f"model '{args.name}' is not installed: run `ryzanstein models pull {args.name}`")
        print(st.path)
    elif command == "verify":
        return _verify([args.name] if args.name else list(store.KNOWN_MODELS), named=bool(args.name))
    return 0


def _verify(names: list[str], named: bool) -> int:
    """Re-hash each model that is there: a line each on stdout; a corrupt one is an error (exit 2)."""
    states = [store.check(n, rehash=True) for n in names]
    for st in states:
        if st.state != "missing" or named:
            print(f"{st.name}: {st.state}" + (f" ({st.detail}) {st.path}" if st.detail else f" {st.path or ''}"))
    bad = [st for st in states if st.state == "corrupt"]
    if bad:
        raise bad[0].error() if len(bad) == 1 else RyzansteinError(
            f"{len(bad)} models are corrupt: " + "; ".join(f"run `ryzanstein models pull {st.name}`" for st in bad))
    if named and states[0].state == "missing":
        raise ModelNotFound(f"model '{names[0]}' is not installed: run `ryzanstein models pull {names[0]}`")
    return 0


def _print_table(rows: list[dict]) -> None:
    table = [("NAME", "SIZE MB", "INSTALLED", "PATH")]
    answer = {"ok": "yes", "corrupt": "corrupt", "missing": "no"}
    table += [(r["name"], f"{r['size'] / 1e6:.0f}", answer[r["state"]], r["path"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        print(f"{row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:<{widths[2]}}  {row[3]}".rstrip())
