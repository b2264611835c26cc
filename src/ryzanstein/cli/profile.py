"""`ryzanstein profile`: the cost profile v(n) policy auto plans with, measured on this machine (or read)."""
from __future__ import annotations

import argparse
import json

from ..engine import Engine
from .args import add_load_args, load_config_from_args


def add_parser(sub) -> None:
    p = sub.add_parser("profile", help="measure (or show the cached) cost profile v(n) of a model and draft")
    add_load_args(p)
    p.add_argument("--json", action="store_true", help="print the profile as JSON")
    p.set_defaults(func=cmd_profile)


def cmd_profile(a: argparse.Namespace) -> int:
    engine = Engine(load_config_from_args(a))
    prof = engine.costs.target_profile()
    draft_s = engine.costs.draft_token_s() if engine.proposer else 0.0
    if a.json:
        print(json.dumps({"target": prof.to_json(), "draft": engine.proposer.name if engine.proposer else None,
                          "draft_token_s": draft_s}))
        return 0
    print(f"target {engine.target.info.name} ({engine.target.info.backend}, {engine.target.info.threads} threads), "
          f"profile from {prof.source}")
    print("  n   v(n) ms   v(n)/v(1)")
    for n in range(1, len(prof.v_s) + 1):
        print(f"{n:>3} {prof.v(n) * 1000:>9.2f} {prof.ratio(n):>10.2f}")
    if engine.proposer:
        print(f"draft {engine.proposer.name}: {draft_s * 1000:.3f} ms per drafted token "
              f"({draft_s / prof.v(1):.3f} of a target step)")
    return 0
