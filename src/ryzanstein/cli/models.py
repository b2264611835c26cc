"""`ryzanstein models ...`: list, pull and locate the known models of the store (models/store.py)."""

from __future__ import annotations

import argparse
import sys

from ..errors import ModelNotFound, RyzansteinError
from ..models import store
from ..models.gguf_file import GGUFFile
from ..models.head import read_spec


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
        heads = head_rows()
        if heads:
            print()
            _print_heads(heads)
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
        code = _verify([args.name] if args.name else list(store.KNOWN_MODELS), named=bool(args.name))
        return code if args.name else max(code, _verify_heads())
    return 0


# The heads `ryzanstein distill` wrote: one row each for `models list` / `models verify`, state ok or corrupt
# (unreadable, or naming another file than the folder it sits in).
def head_rows() -> list[dict]:
    rows = []
    for path in sorted((store.home() / "heads").glob("*/head.gguf")):
        row = dict(name=f"head:{path.parent.name}", path=str(path), size=path.stat().st_size, state="ok", detail="")
        try:
            spec = read_spec(GGUFFile(path))
            row.update(target=spec.target_name, trained_tokens=spec.trained_tokens, draft_vocab=spec.draft_vocab)
            if spec.target_sha256[:16] != path.parent.name:
                row.update(state="corrupt", detail="it names another target file than its folder")
        except RyzansteinError as e:
            row.update(state="corrupt", detail=str(e))
        rows.append(row)
    return rows


def _print_heads(rows: list[dict]) -> None:
    """The draft heads distill wrote (`--draft head` picks the one for the target file)."""
    table = [("DRAFT HEAD", "SIZE MB", "FOR", "TRAINED ON", "PATH")]
    table += [(r["name"], f"{r['size'] / 1e6:.0f}", r.get("target", "?") if r["state"] == "ok" else "corrupt",
               f"{r.get('trained_tokens', 0):,} positions", r["path"]) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:
        print("  ".join(f"{c:<{w}}" for c, w in zip(row[:4], widths)) + f"  {row[4]}")


def _verify_heads() -> int:
    """A line per draft head; a corrupt one is an error (exit 2)."""
    rows = head_rows()
    for r in rows:
        print(f"{r['name']} (for {r.get('target', '?')}): {r['state']}" + (f" ({r['detail']})" if r["detail"] else "")
              + f" {r['path']}")
    bad = [r for r in rows if r["state"] != "ok"]
    if bad:
        raise RyzansteinError(f"draft head {bad[0]['path']} is corrupt: delete it and train it again with "
                              "`ryzanstein distill`")
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
