"""The arithmetic of `ryzanstein bench`: results.json -> summary, pure functions of the results dict.

So `ryzanstein bench report results.json` gives the same figures as the run that wrote it, and a hand-made
results file can test them. Speedup of a run = its tokens/s over plain's tokens/s on the same prompt at the
same temperature (tokens/s = emitted tokens / (prefill + decode) seconds). A group's speedup is the geometric
mean of those per-prompt ratios, with the median beside it. Acceptance figures pool the counts of every run
in the group.
"""
from __future__ import annotations

import math

import numpy as np

from ..speculative.stats import mean_acceptance_length


def geomean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x > 0]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None


def _median(xs: list[float]) -> float | None:
    return float(np.median(xs)) if xs else None


def _sum_lists(lists: list[list[int]]) -> list[int]:
    out = [0] * max((len(x) for x in lists), default=0)
    for x in lists:
        for i, v in enumerate(x):
            out[i] += v
    return out


def tokens_per_s(r: dict) -> float:
    """A run's tokens/s."""
    return r["stats"]["tokens_per_s"]


def aggregate(runs: list[dict], plain: dict[tuple, dict]) -> dict:
    """One group of runs (a configuration, over some prompts) against plain runs keyed (prompt_id, temperature)."""
    st = [r["stats"] for r in runs]
    base = [plain.get((r["prompt_id"], r["temperature"])) for r in runs]
    ratios = [tokens_per_s(r) / tokens_per_s(b) for r, b in zip(runs, base) if b and tokens_per_s(b) > 0 and tokens_per_s(r) > 0]
    dec = [r["stats"]["decode_tokens_per_s"] / b["stats"]["decode_tokens_per_s"] for r, b in zip(runs, base)
           if b and b["stats"].get("decode_tokens_per_s") and r["stats"].get("decode_tokens_per_s")]
    tokens = sum(r["num_tokens"] for r in runs)
    seconds = sum(s["prefill_s"] + s["decode_s"] for s in st)
    drafted, accepted = sum(s["num_draft_tokens"] for s in st), sum(s["num_accepted"] for s in st)
    rounds = sum(s["rounds"] for s in st)
    acc_pos = _sum_lists([s["accepted_per_position"] for s in st])
    tried_pos = _sum_lists([s["drafted_per_position"] for s in st])
    lat = [x for r in runs for x in r.get("token_latencies_s") or []]
    ks = [k for s in st for k in s.get("k_per_round") or []]
    same = [r["identical_to_plain"] for r in runs if r.get("identical_to_plain") is not None]
    pred = [s["predicted_speedup"] for s in st if s.get("policy") == "auto" and s.get("predicted_speedup")]

    def pct(q: float, key: str) -> float | None:  # pooled over tokens; per-run medians when tokens are absent
        return float(np.percentile(lat, q)) if lat else _median([s[key] for s in st if key in s])

    return {
        "n_prompts": len(runs), "tokens": tokens,
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
        "speedup_geomean": geomean(ratios), "speedup_median": _median(ratios),
        "speedup_min": min(ratios, default=None), "speedup_max": max(ratios, default=None),
        "decode_speedup_geomean": geomean(dec),
        "acceptance_rate": accepted / drafted if drafted else None,
        "mean_acceptance_length": mean_acceptance_length(accepted, rounds),
        "acceptance_by_position": [a / d if d else 0.0 for a, d in zip(acc_pos, tried_pos)],
        "accepted_length_hist": _sum_lists([s["accepted_length_hist"] for s in st]),
        **{f"{k}": _median([s[k] for s in st if k in s])
           for k in ("ttft_s", "prefill_s", "decode_s", "prefill_tokens_per_s", "decode_tokens_per_s")},
        "latency_p50_s": pct(50, "latency_p50_s"), "latency_p95_s": pct(95, "latency_p95_s"),
        "latency_p99_s": pct(99, "latency_p99_s"),
        "identical_rate": sum(same) / len(same) if same else None, "n_identical_checked": len(same),
        "first_divergences": [r["first_divergence"] for r in runs if r.get("first_divergence") is not None],
        "divergence_top2_gaps": [r["divergence_top2_gap"] for r in runs if r.get("divergence_top2_gap") is not None],
        "k_mean": float(np.mean(ks)) if ks else None, "k_hist": np.bincount(ks).tolist() if ks else [],
        "predicted_speedup": geomean(pred),
        "rss_bytes_max": max((r.get("rss_bytes") or 0 for r in runs), default=0),
        "spec_memory_overhead_bytes": max((s.get("spec_memory_overhead_bytes") or 0 for s in st), default=0),
        "fallbacks": sum(1 for s in st if s.get("fallback")),
    }


def summarize(results: dict) -> dict:
    """Per configuration (and temperature): an overall aggregate and one per category."""
    runs = results["runs"]
    plain = {(r["prompt_id"], r["temperature"]): r for r in runs if r["draft"] == "none"}
    cats = list(dict.fromkeys(r["category"] for r in runs))
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["config"], r["temperature"]), []).append(r)
    configs = []
    for (name, temp), rs in groups.items():
        configs.append({"config": name, "draft": rs[0]["draft"], "k": rs[0]["k"], "temperature": temp,
                        "overall": aggregate(rs, plain),
                        "by_category": {c: aggregate([r for r in rs if r["category"] == c], plain)
                                        for c in cats if any(r["category"] == c for r in rs)}})
    return {"categories": cats, "temperatures": list(dict.fromkeys(r["temperature"] for r in runs)),
            "configs": configs, "noise_floor": noise_floor(*plain_repeats(runs)), "pair_spread": pair_spread(runs)}


def pair_spread(runs: list[dict]) -> dict:
    """Per configuration: how much its ratio to plain moves between repeats of one prompt.

    Repeat i of a configuration ran beside plain's repeat i (the same rotation block; under --lockstep the
    same rounds), so log(config_i / plain_i) is one paired measurement; its within-prompt sd, pooled over
    prompts, is the run's paired noise (plus any real repeat-to-repeat difference, e.g. policy auto's timing).
    """
    plain = {(r["prompt_id"], r["temperature"]): r.get("reps_tokens_per_s") or [] for r in runs if r["draft"] == "none"}
    sq: dict[str, list[float]] = {}
    for r in runs:
        base, reps = plain.get((r["prompt_id"], r["temperature"])), r.get("reps_tokens_per_s") or []
        if r["draft"] == "none" or not base or len(reps) < 2 or len(base) != len(reps):
            continue
        logs = [math.log(c / p) for c, p in zip(reps, base) if c > 0 and p > 0]
        if len(logs) >= 2:
            m = sum(logs) / len(logs)
            acc = sq.setdefault(f"{r['config']}@{r['temperature']:g}", [0.0, 0])
            acc[0] += sum((x - m) ** 2 for x in logs)
            acc[1] += len(logs) - 1
    return {k: {"sd": math.sqrt(v / dof), "dof": dof} for k, (v, dof) in sq.items() if dof}


def noise_floor(plain_reps: dict[str, list[float]], category: dict[str, str], splits: int = 200,
                bar: float = 0.97, seed: int = 0) -> dict | None:
    """How far plain decoding lands from itself: an A/A test from the repeats a run already has.

    Each prompt's plain repeats (tokens/s) are split at random into two halves; per category the geometric
    mean over prompts of median(half 1) / median(half 2) is a speedup that can only be noise. Over `splits`
    splits: each category's 5th-95th percentile, and how often the lowest category falls below `bar`. Each
    side has half the repeats, so this is wider than the noise of a full run by about sqrt(2). None when a
    prompt has fewer than 2 repeats.
    """
    if not plain_reps or min(len(v) for v in plain_reps.values()) < 2:
        return None
    rng = np.random.default_rng(seed)
    cats = list(dict.fromkeys(category[p] for p in plain_reps))
    cells: dict[str, list[float]] = {c: [] for c in cats}
    lowest = []
    for _ in range(splits):
        logs: dict[str, list[float]] = {c: [] for c in cats}
        for pid, reps in plain_reps.items():
            order = rng.permutation(len(reps))
            half = len(reps) // 2
            a, b = np.median([reps[i] for i in order[:half]]), np.median([reps[i] for i in order[half:]])
            logs[category[pid]].append(math.log(a / b))
        split = {c: math.exp(float(np.mean(v))) for c, v in logs.items()}
        for c, v in split.items():
            cells[c].append(v)
        lowest.append(min(split.values()))
    return {"splits": splits, "repeats": min(len(v) for v in plain_reps.values()), "bar": bar,
            "by_category": {c: {"p05": float(np.percentile(v, 5)), "p95": float(np.percentile(v, 95))}
                            for c, v in cells.items()},
            "lowest_category_median": float(np.median(lowest)),
            "lowest_below_bar_rate": sum(x < bar for x in lowest) / splits}


def plain_repeats(runs: list[dict]) -> tuple[dict[str, list[float]], dict[str, str]]:
    """Greedy plain runs: {prompt_id: tokens/s of every repeat}, {prompt_id: category}."""
    reps = {r["prompt_id"]: r.get("reps_tokens_per_s") or [tokens_per_s(r)] for r in runs
            if r["draft"] == "none" and r["temperature"] == 0}
    return reps, {r["prompt_id"]: r["category"] for r in runs}
