"""What would speculation do on another machine? A prediction from measured acceptance and a cost profile.

Takes a bench results.json or its summary.json (greedy runs of a draft at a fixed K, e.g. K=8, measured here)
and a cost profile JSON (`ryzanstein profile --json`'s "target" part, or a hand-written one such as
benchmarks/profiles/memory_bound_qwen1.5b.json with "v_s" and "draft_ratio"), and prints per category the
expected tokens per round E(K) from the measured per-position acceptance and the predicted speedup
    E(K) * v(1) / (v(K+1) + K * draft_ratio * v(1))
for K = 1..8, plus the K that policy auto would pick there. Nothing here is measured on the other machine.

    .venv/bin/python benchmarks/predict_profile.py benchmarks/results/qwen/summary.json \
        benchmarks/profiles/memory_bound_qwen1.5b.json --config qwen2.5-coder-0.5b:k8
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="a ryzanstein bench results.json, or the summary.json beside it")
    ap.add_argument("profile")
    ap.add_argument("--config", required=True, help="the fixed-K configuration whose acceptance to use")
    return ap


def acceptance(res: dict, config: str) -> tuple[dict, dict]:
    """Per category (and "overall"): rounds drafted, and per position j the rounds whose first j+1 drafts were all
    accepted. From the runs of a results.json, or else from a summary.json's accepted-length histograms (the same
    counts: a round that accepted i drafts accepted positions 0..i-1)."""
    acc, rounds = defaultdict(lambda: [0] * 16), defaultdict(int)
    if "runs" in res:
        for r in res["runs"]:
            if r["config"] == config and r["temperature"] == 0:
                for cat in (r["category"], "overall"):
                    s = r["stats"]
                    rounds[cat] += s["drafted_per_position"][0] if s["drafted_per_position"] else 0
                    for i, n in enumerate(s["accepted_per_position"]):
                        acc[cat][i] += n
        return acc, rounds
    for c in res["summary"]["configs"]:
        if c["config"] == config and c["temperature"] == 0:
            for cat, row in [("overall", c["overall"]), *c["by_category"].items()]:
                hist = row["accepted_length_hist"]
                if not sum(hist):
                    continue
                rounds[cat] = sum(hist)
                for j in range(min(len(hist) - 1, 16)):
                    acc[cat][j] = sum(hist[j + 1:])
    return acc, rounds


def main() -> int:
    a = parser().parse_args()
    res, prof = json.load(open(a.results)), json.load(open(a.profile))
    v, ratio = prof["v_s"], prof.get("draft_ratio")
    if ratio is None:
        sys.exit("the profile needs draft_ratio: a drafted token's cost as a fraction of v(1)")
    acc, rounds = acceptance(res, a.config)
    print(f"profile: {a.profile}  (v(n)/v(1) = {', '.join(f'{x / v[0]:.2f}' for x in v[:9])}; draft {ratio:.2f})")
    print("PREDICTION for that machine from acceptance measured here; not a measurement.")
    print(f"{'category':<14}" + "".join(f"  K={k:<4}" for k in range(1, 9)) + "  auto picks")
    for cat in sorted(rounds, key=lambda c: (c == "overall", c)):
        n = rounds[cat]
        p_first = [acc[cat][j] / n for j in range(8)]  # P(first j+1 drafts all accepted)
        speed = []
        for k in range(0, 9):
            e = 1 + sum(p_first[:k])
            speed.append(e * v[0] / (v[k] + k * ratio * v[0]))
        best = max(range(9), key=lambda k: speed[k])
        print(f"{cat:<14}" + "".join(f"  {speed[k]:5.2f}x" for k in range(1, 9)) + f"  K={best} ({speed[best]:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
