"""How many tokens prompt lookup could give per target forward, replayed offline on a bench run's outputs.

    .venv/bin/python benchmarks/ngram_replay.py bench-results/<run>/results.json

Greedy output does not depend on the drafter, so the plain runs of a `ryzanstein bench` results.json (temperature
0) say what the target emits after each prefix. For each prompt this rebuilds the prompt's ids (the shipped
prompts, the run's target tokenizer, its chat template), then walks the plain output as the decode loop would:
each round asks the n-gram drafter for K tokens, keeps the prefix that matches the output, and adds the
target's own token. No timing is involved: the figures are the drafter's ceiling at a fixed K (every round
drafts whenever a match exists), against which `auto`'s choices can be read. Prints a table per setting and
writes JSON (default: next to the input, ngram_replay.json).

    .venv/bin/python benchmarks/ngram_replay.py RESULTS --policy-profile PROFILE.json

also replays policy `auto` itself (the real AutoPolicy, default settings, what it learned carried from prompt
to prompt as an engine does) with the default drafter, each round costing the profile's v(K+1) plus the run's
measured per-round overhead: the speedup it predicts for decoding, and overall with the run's own prefill
times added to both sides (per category the geometric mean over its prompts, as `ryzanstein bench` reports).
The same replay on a flat profile (every v(n) = v(1)) bounds what faster kernels could give this drafter on
these prompts.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))  # run from a checkout, installed or not
from ryzanstein.bench.prompts import load_prompts  # noqa: E402
from ryzanstein.models import load_model  # noqa: E402
from ryzanstein.models.chat import encode_prompt  # noqa: E402
from ryzanstein.errors import RyzansteinError  # noqa: E402
from ryzanstein.speculative.auto_policy import AutoPolicy  # noqa: E402
from ryzanstein.speculative.costs import CostProfile, load_file  # noqa: E402
from ryzanstein.speculative.proposers import EMPTY, NgramProposer  # noqa: E402
from ryzanstein.speculative.round import Round  # noqa: E402

SETTINGS = ((1, 4), (1, 8), (1, 16), (2, 4), (3, 8))  # (ngram_min, ngram_max); (1, 4) is the default


def _die(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(2)


def replay(data: list[tuple[str, list[int], list[int]]], proposer: NgramProposer, k: int) -> dict:
    by: dict[str, dict[str, int]] = {}
    for category, ids, out in data:
        i = forwards = drafted = accepted = 0
        while i < len(out):
            draft = proposer.propose(ids + out[:i], k).tokens
            a = 0
            while a < len(draft) and i + a < len(out) and draft[a] == out[i + a]:
                a += 1
            drafted, accepted, forwards, i = drafted + len(draft), accepted + a, forwards + 1, i + a + 1
        c = by.setdefault(category, {"tokens": 0, "forwards": 0, "drafted": 0, "accepted": 0})
        for key, v in (("tokens", len(out)), ("forwards", forwards), ("drafted", drafted), ("accepted", accepted)):
            c[key] += v
    by["overall"] = {key: sum(c[key] for c in by.values()) for key in ("tokens", "forwards", "drafted", "accepted")}
    for c in by.values():
        c["tokens_per_forward"] = round(c["tokens"] / c["forwards"], 4)
        c["acceptance"] = round(c["accepted"] / c["drafted"], 4) if c["drafted"] else None
    return by


def replay_auto(data, profile: CostProfile, overhead_s: float, prefill_s: dict[str, float], k_max: int = 8) -> dict:
    """Policy auto over the plain outputs: per category, predicted decode and overall speedups over plain, as
    the geometric mean over its prompts of each one's ratio (as `ryzanstein bench` aggregates)."""
    by: dict[str, dict[str, float]] = {}
    ratios: dict[str, list[tuple[float, float]]] = {}
    learned = None
    v1 = profile.v(1)
    for category, ids, out in data:
        policy = AutoPolicy(target_costs=profile, draft_token_s=0.0, model_free=True, k_max=k_max,
                            prompt_tokens=len(ids), max_new_tokens=len(out))
        if learned:
            policy.resume(learned)
        proposer = NgramProposer()
        i, spec_s = 1, 0.0  # the first token comes from the prefill, as in the decode loop
        while i < len(out):
            cap = len(out) - i - 1
            k = min(policy.choose(), cap)
            want = k or min(policy.shadow_k(), cap)
            draft = proposer.propose(ids + out[:i], want) if want > 0 else EMPTY
            shadow = []
            if k == 0:
                draft, shadow = EMPTY, draft.tokens
            a = 0
            while a < len(draft.tokens) and draft.tokens[a] == out[i + a]:
                a += 1
            verify_s = profile.v(len(draft.tokens) + 1)
            policy.observe(Round(k=len(draft.tokens), num_accepted=a, emitted=out[i:i + a + 1], draft_s=0.0,
                                 verify_s=verify_s, round_s=verify_s + overhead_s, shadow=shadow, chosen=k))
            policy.observe_wall(verify_s + overhead_s)
            spec_s, i = spec_s + verify_s + overhead_s, i + a + 1
        learned = policy.learned()
        plain_s = (len(out) - 1) * (v1 + overhead_s)
        pre = prefill_s.get(category, 0.0) / max(1, sum(1 for d in data if d[0] == category))
        c = by.setdefault(category, {"prompts": 0, "plain_decode_s": 0.0, "auto_decode_s": 0.0, "prefill_s": 0.0})
        for key, v in (("prompts", 1), ("plain_decode_s", plain_s), ("auto_decode_s", spec_s), ("prefill_s", pre)):
            c[key] += v
        ratios.setdefault(category, []).append((plain_s / spec_s if spec_s else 1.0, (pre + plain_s) / (pre + spec_s)))
    by["overall"] = {key: sum(c[key] for c in by.values()) for key in ("prompts", "plain_decode_s", "auto_decode_s",
                                                                        "prefill_s")}
    ratios["overall"] = [r for rs in ratios.values() for r in rs]
    for name, c in by.items():
        rs = ratios[name]
        c["decode_speedup"] = round(math.exp(sum(math.log(d) for d, _ in rs) / len(rs)), 4)
        c["overall_speedup"] = round(math.exp(sum(math.log(o) for _, o in rs) / len(rs)), 4)
    return by


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", type=Path, help="a ryzanstein bench results.json with plain runs at temperature 0")
    ap.add_argument("--ks", default="4,8", help="draft lengths to replay (default 4,8)")
    ap.add_argument("--out", type=Path, help="JSON output (default: ngram_replay.json next to the input)")
    ap.add_argument("--policy-profile", type=Path, help="also replay policy auto with this cost profile (JSON as "
                    "`ryzanstein profile` writes it), and with a flat one")
    return ap


def main() -> None:
    args = parser().parse_args()
    profile = None
    if args.policy_profile:
        try:
            profile = load_file(args.policy_profile)
        except RyzansteinError as e:
            _die(f"error: {e}")
    try:
        run = json.loads(args.results.read_text())
        model_name = run["run"]["model"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        _die(f"error: {args.results} is not a ryzanstein bench results.json ({e}); pass the results.json "
                 "that `ryzanstein bench` wrote")
    tokenizer = load_model(model_name, backend="native", threads=1, n_ctx=64).tokenizer
    source = run["run"].get("prompts_file")
    # the run names a shipped prompt set by its resource name (and says whether it was the long one), a user's
    # file by its path
    shipped = source in ("prompts.jsonl", "long_prompts.jsonl") and not Path(source).exists()
    try:
        prompts = {p["id"]: p for p in load_prompts(None if shipped else source, long=bool(run["run"].get("long")))}
    except (OSError, ValueError) as e:
        _die(f"error: cannot read the run's prompts {source!r} ({e}); replay it where that file exists")
    data, seen, prefill, overheads = [], set(), {}, []
    for r in run["runs"]:
        if r["config"] != "plain" or r["temperature"] != 0 or r["prompt_id"] not in prompts:
            continue
        ids = encode_prompt(tokenizer, prompts[r["prompt_id"]]["prompt"], chat=True)
        if len(ids) != r["prompt_tokens"]:
            _die(f"error: prompt {r['prompt_id']} encodes to {len(ids)} tokens, the run had "
                     f"{r['prompt_tokens']}: replay it with the prompts and model the run used")
        stats = r.get("stats") or {}
        prefill[r["category"]] = prefill.get(r["category"], 0.0) + stats.get("prefill_s", 0.0)
        if stats.get("rounds"):
            overheads.append(stats.get("other_s", 0.0) / stats["rounds"])
        if r["prompt_id"] in seen:  # a repeat: greedy output is the same, the prefill times are all kept
            continue
        seen.add(r["prompt_id"])
        data.append((r["category"], ids, list(r["tokens"])))
    if not data:
        _die(f"error: {args.results} has no plain runs at temperature 0 to replay")
    ks = [int(k) for k in args.ks.split(",")]
    results = []
    for nmin, nmax in SETTINGS:
        for k in ks:
            by = replay(data, NgramProposer(nmin, nmax), k)
            results.append({"ngram_min": nmin, "ngram_max": nmax, "k": k, "by_category": by})
            cats = " ".join(f"{c} {v['tokens_per_forward']:.2f}" for c, v in by.items())
            print(f"ngram {nmin}..{nmax} K={k}: tokens per forward {cats}; acceptance "
                  f"{by['overall']['acceptance']:.2f}", flush=True)
    policy = None
    if profile is not None:
        reps = max(1, sum(1 for r in run["runs"] if r["config"] == "plain" and r["temperature"] == 0) // len(data))
        prefill = {c: s / reps for c, s in prefill.items()}  # per category, one repeat's worth
        overhead = statistics.median(overheads) if overheads else 0.0
        flat = CostProfile([profile.v(1)] * 17)
        policy = {"profile": str(args.policy_profile), "v_ratio": [round(profile.ratio(n), 4) for n in range(1, 17)],
                  "overhead_s": overhead, "measured": replay_auto(data, profile, overhead, prefill),
                  "flat": replay_auto(data, flat, overhead, prefill)}
        for name in ("measured", "flat"):
            by = policy[name]
            cats = " ".join(f"{c} {v['overall_speedup']:.2f}" for c, v in by.items())
            print(f"auto, {name} v(n): decode {by['overall']['decode_speedup']:.3f}x, overall {cats}", flush=True)
    out = args.out or args.results.with_name("ngram_replay.json")
    out.write_text(json.dumps({"command": " ".join(sys.argv), "date": dt.datetime.now(dt.timezone.utc).isoformat(
        timespec="seconds"), "source": str(args.results), "model": model_name, "prompts": len(data),
        "results": results, "auto": policy}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
