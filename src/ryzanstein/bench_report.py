"""The arithmetic and the rendering of `ryzanstein bench`: results.json -> summary -> report.md + PNG plots.

Everything here is a pure function of the results dict, so `ryzanstein bench report results.json` gives the
same report as the run that wrote it, and a hand-made results file can test the arithmetic.

Speedup of a run = its tokens/s over plain's tokens/s on the same prompt at the same temperature (tokens/s =
emitted tokens / (prefill + decode) seconds). A group's speedup is the geometric mean of those per-prompt
ratios, with the median beside it. Acceptance figures pool the counts of every run in the group.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

# arithmetic ------------------------------------------------------------------------------------------------
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


def _tps(r: dict) -> float:
    return r["stats"]["tokens_per_s"]


def aggregate(runs: list[dict], plain: dict[tuple, dict]) -> dict:
    """One group of runs (a configuration, over some prompts) against plain runs keyed (prompt_id, temperature)."""
    st = [r["stats"] for r in runs]
    base = [plain.get((r["prompt_id"], r["temperature"])) for r in runs]
    ratios = [_tps(r) / _tps(b) for r, b in zip(runs, base) if b and _tps(b) > 0 and _tps(r) > 0]
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
        "mean_acceptance_length": (accepted + rounds) / rounds if rounds else None,
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
    reps = {r["prompt_id"]: r.get("reps_tokens_per_s") or [_tps(r)] for r in runs
            if r["draft"] == "none" and r["temperature"] == 0}
    return reps, {r["prompt_id"]: r["category"] for r in runs}


# markdown --------------------------------------------------------------------------------------------------
def _x(v: float | None, fmt: str = "{:.2f}x") -> str:
    return "-" if v is None else fmt.format(v)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.0%}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1000:.1f}"


def _mib(v: float | None) -> str:
    return "-" if v is None else f"{v / 2**20:.0f}"


def _table(head: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + ["| " + " | ".join(r) + " |" for r in rows])


def headline(summary: dict) -> str:
    """Per category x configuration: speedup (geometric mean over prompts) and acceptance rate."""
    out = []
    for t in summary["temperatures"]:
        cs = [c for c in summary["configs"] if c["temperature"] == t]
        plain = next((c for c in cs if c["draft"] == "none"), None)
        spec = [c for c in cs if c["draft"] != "none"]
        head = ["category", "plain tok/s"] + [c["config"] for c in spec]
        rows = []
        for cat in summary["categories"] + ["overall"]:
            get = (lambda c: c["overall"]) if cat == "overall" else (lambda c: c["by_category"].get(cat))
            p = get(plain) if plain else None
            row = [f"**{cat}**" if cat == "overall" else cat, f"{p['tokens_per_s']:.1f}" if p else "-"]
            for c in spec:
                g = get(c)
                row.append(f"{_x(g['speedup_geomean'])} · {_pct(g['acceptance_rate'])}" if g else "-")
            rows.append(row)
        out.append(f"Temperature {t:g}: speedup vs plain (geometric mean of per-prompt tokens/s ratios) · "
                   f"draft acceptance rate\n\n" + _table(head, rows))
    return "\n\n".join(out)


def details(summary: dict) -> str:
    head = ["config", "T", "tok/s", "speedup geo", "median", "min-max", "decode speedup", "accept", "mean acc. len",
            "TTFT ms", "prefill tok/s", "decode tok/s", "latency p50/p95/p99 ms", "greedy identical",
            "auto: mean K", "auto: predicted", "fallbacks"]
    rows = []
    for c in summary["configs"]:
        g = c["overall"]
        rows.append([c["config"], f"{c['temperature']:g}", f"{g['tokens_per_s']:.1f}", _x(g["speedup_geomean"]),
                     _x(g["speedup_median"]), f"{_x(g['speedup_min'])}-{_x(g['speedup_max'])}",
                     _x(g["decode_speedup_geomean"]), _pct(g["acceptance_rate"]),
                     _x(g["mean_acceptance_length"], "{:.2f}"), _ms(g["ttft_s"]),
                     _x(g["prefill_tokens_per_s"], "{:.0f}"), _x(g["decode_tokens_per_s"], "{:.1f}"),
                     f"{_ms(g['latency_p50_s'])} / {_ms(g['latency_p95_s'])} / {_ms(g['latency_p99_s'])}",
                     f"{_pct(g['identical_rate'])} of {g['n_identical_checked']}" if g["n_identical_checked"] else "-",
                     _x(g["k_mean"], "{:.2f}") if c["k"] == "auto" else "-",
                     f"{_x(g['predicted_speedup'])} (decode measured {_x(g['decode_speedup_geomean'])})" if c["k"] == "auto" else "-",
                     str(g["fallbacks"])])
    return _table(head, rows)


def auto_vs_fixed(summary: dict) -> str:
    """Per category and temperature, for each draft: auto against plain and against the best fixed K, and
    auto's own predicted decode speedup next to the measured one (the adaptive-K issue's three bars)."""
    rows = []
    for auto in (c for c in summary["configs"] if c["k"] == "auto"):
        fixed = [c for c in summary["configs"] if c["draft"] == auto["draft"] and isinstance(c["k"], int)
                 and c["temperature"] == auto["temperature"]]
        for cat, g in list(auto["by_category"].items()) + [("overall", auto["overall"])]:
            fx = [(c["by_category"].get(cat) if cat != "overall" else c["overall"], c["k"]) for c in fixed]
            fx = [(f["speedup_geomean"], k) for f, k in fx if f and f.get("speedup_geomean")]
            best, best_k = max(fx) if fx else (None, None)
            # a share of a gain under 1% (well inside this machine's noise) would be a ratio of noise
            gain = (g["speedup_geomean"] - 1) / (best - 1) if best and best > 1.01 else None
            pred, dec = g.get("predicted_speedup"), g.get("decode_speedup_geomean")
            err = abs(pred / dec - 1) if pred and dec else None
            rows.append([auto["config"], f"{auto['temperature']:g}", cat, _x(g["speedup_geomean"]),
                         f"{_x(best)} (K={best_k})" if best else "-", _pct(gain) if gain is not None else "-",
                         _x(pred), _x(dec), _pct(err) if err is not None else "-"])
    if not rows:
        return ""
    return _table(["auto", "T", "category", "auto vs plain", "best fixed K vs plain", "share of best gain",
                   "predicted decode speedup", "measured decode speedup", "prediction error"], rows)


def noise_section(summary: dict, lockstep: bool = False) -> str:
    nf = summary.get("noise_floor")
    if not nf:
        return "Needs `--reps 2` or more: plain decoding's repeats split in halves give the A/A test."
    rows = [[c, f"{_x(v['p05'], '{:.3f}x')} - {_x(v['p95'], '{:.3f}x')}"] for c, v in nf["by_category"].items()]
    spread = summary.get("pair_spread") or {}
    paired = ("Paired noise: each repeat of a configuration against plain's repeat run "
              + ("in the same rounds (lockstep)" if lockstep else "in the same block")
              + "; sd of that log ratio between repeats of a prompt, pooled: "
              + ", ".join(f"{k} {v['sd']:.1%}" for k, v in spread.items()) + ".\n\n") if spread else ""
    lock = ("Under --lockstep the halves below are plain repeats run at different times, not side by side: they "
            "show the machine's drift, which lockstep pairs out of the configurations' ratios.\n\n") if lockstep else ""
    return paired + lock + (f"Plain decoding against itself: each prompt's {nf['repeats']} plain repeats split at random into two "
            f"halves, {nf['splits']} times; a category's ratio of the halves can only be noise (each half has half "
            "the repeats, so this is about sqrt(2) wider than a full run's noise). Across splits the lowest category "
            f"lands at {_x(nf['lowest_category_median'], '{:.3f}x')} (median) and below "
            f"{_x(nf['bar'], '{:.2f}x')} in {_pct(nf['lowest_below_bar_rate'])} of them: differences of that size "
            "between configurations are not resolved by this run.\n\n"
            + _table(["category", "plain vs plain, 5th-95th percentile"], rows))


def acceptance_tables(summary: dict) -> str:
    spec = [c for c in summary["configs"] if c["draft"] != "none"]
    if not spec:
        return "No speculative configuration was run."
    n = max(len(c["overall"]["acceptance_by_position"]) for c in spec)
    by_pos = _table(["config", "T"] + [str(i + 1) for i in range(n)],
                    [[c["config"], f"{c['temperature']:g}"] + [_pct(x) for x in c["overall"]["acceptance_by_position"]]
                     + ["-"] * (n - len(c["overall"]["acceptance_by_position"])) for c in spec])
    m = max(len(c["overall"]["accepted_length_hist"]) for c in spec)
    hist = _table(["config", "T"] + [str(i) for i in range(m)],
                  [[c["config"], f"{c['temperature']:g}"] + [str(x) for x in c["overall"]["accepted_length_hist"]]
                   + ["0"] * (m - len(c["overall"]["accepted_length_hist"])) for c in spec])
    return ("Acceptance by draft position (of the rounds that drafted a token at position i, the fraction that "
            "accepted it; a draft is accepted only if every draft before it was):\n\n" + by_pos +
            "\n\nAccepted-length histogram (speculative rounds that accepted exactly n drafts):\n\n" + hist)


def memory_section(results: dict) -> str:
    from .bench import short_name

    mem = results.get("memory") or {}
    t = mem.get("target") or {}
    base = (t.get("weights_bytes") or 0) + (t.get("kv_cache_bytes") or 0)
    rows = [["plain", _mib(t.get("weights_bytes")), _mib(t.get("kv_cache_bytes")), "0", "0%",
             _mib(mem.get("rss_after_target_bytes")), "-"]]
    for d, m in (mem.get("drafts") or {}).items():
        over = m.get("spec_overhead_bytes") or 0
        rows.append([short_name(d), "", "", _mib(over), _pct(over / base if base else None), _mib(m.get("rss_after_load_bytes")),
                     f"{(m.get('rss_delta_bytes') or 0) / 2**20:+.0f}"])
    return ("Engine accounting (the engine's own figures: target weights and KV cache allocated for the context; "
            "speculation adds draft weights + draft KV + the target KV rows of k_max extra drafts) and measured "
            "RSS (the process's current resident memory right after loading each configuration). Peak RSS is "
            "process-wide, so it covers every configuration of the run together: "
            f"{_mib(mem.get('peak_rss_bytes'))} MiB; RSS after warm-up: {_mib(mem.get('rss_after_warmup_bytes'))} MiB.\n\n"
            + _table(["config", "target weights MiB", "target KV MiB", "spec overhead MiB", "overhead / target",
                      "RSS after load MiB", "RSS delta MiB"], rows))


def long_section(results: dict, summary: dict) -> str:
    cats = [c for c in summary["categories"] if c.startswith("long_")]
    if not cats:
        return ""
    kvt = ((results.get("memory") or {}).get("target") or {}).get("kv_bytes_per_token") or 0
    ptoks = {}
    for p in results.get("prompts", []):
        ptoks.setdefault(p["category"], []).append(p["prompt_tokens"])
    spec = [c for c in summary["configs"] if c["draft"] != "none"]
    plain = {c["temperature"]: c for c in summary["configs"] if c["draft"] == "none"}
    rows = []
    for cat in cats:
        for c in spec:
            g, p = c["by_category"].get(cat), plain.get(c["temperature"], {}).get("by_category", {}).get(cat)
            if not g:
                continue
            n = float(np.mean(ptoks.get(cat, [0])))
            rows.append([cat, f"{n:.0f}", c["config"], f"{c['temperature']:g}", f"{p['tokens_per_s']:.1f}" if p else "-",
                         _x(g["speedup_geomean"]), _x(g["decode_speedup_geomean"]), _pct(g["acceptance_rate"]),
                         _mib(kvt * n), _mib(g["rss_bytes_max"])])
    return ("Speedup and memory vs context length. With long prompts the prefill, which speculation does not "
            "change, weighs on end-to-end tokens/s: the decode speedup shows the decoding part alone. "
            "KV MiB = the target KV rows the prompt fills (engine "
            "accounting); RSS = the largest current RSS after a run of that group.\n\n"
            + _table(["length", "prompt tokens", "config", "T", "plain tok/s", "speedup", "decode speedup", "accept",
                      "prompt KV MiB", "RSS MiB"], rows))


def divergences(results: dict) -> str:
    rows = [[r["prompt_id"], r["config"], str(r["first_divergence"]), str(r["num_tokens"]),
             f"{r['divergence_top2_gap']:.3f}" if r.get("divergence_top2_gap") is not None else "-"]
            for r in results["runs"] if r.get("identical_to_plain") is False]
    if not rows:
        return "Every greedy speculative run produced exactly plain decoding's tokens."
    return ("Greedy runs whose tokens differ from plain's (near-tie logits differ between batched and one-token "
            "kernels; see machine.md). The gap is the target's top-1 minus top-2 logit where plain decoding took that "
            "token:\n\n" + _table(["prompt", "config", "first differing token", "tokens", "top-2 logit gap"], rows))


def per_prompt(results: dict) -> str:
    runs = results["runs"]
    plain = {(r["prompt_id"], r["temperature"]): r for r in runs if r["draft"] == "none"}
    names = list(dict.fromkeys(r["config"] for r in runs if r["draft"] != "none"))
    cells = {(r["prompt_id"], r["config"], r["temperature"]): f"{_tps(r) / _tps(b):.2f}" for r in runs
             if r["draft"] != "none" and (b := plain.get((r["prompt_id"], r["temperature"]))) and _tps(b) > 0}
    rows = [[p, f"{t:g}", f"{_tps(plain[(p, t)]):.1f}" if (p, t) in plain else "-"]
            + [cells.get((p, n, t), "-") for n in names]
            for p, t in dict.fromkeys((r["prompt_id"], r["temperature"]) for r in runs)]
    return _table(["prompt", "T", "plain tok/s"] + names, rows)


def render(results: dict, out: Path, plots: bool = True) -> str:
    """Write report.md (and the PNGs) into `out`; return the Markdown."""
    from .bench import SCHEMA

    summary = results.get("summary") or summarize(results)
    out = Path(out)
    made = make_plots(results, summary, out) if plots else []
    run, m = results.get("run", {}), results.get("machine", {})
    flags = ", ".join(f for f, on in (m.get("cpu_flags") or {}).items() if on) or "-"
    models = results.get("models", {})
    lines = [
        f"# ryzanstein bench: {run.get('model', '?')} ({run.get('backend', '?')}, {run.get('threads', '?')} threads)",
        "",
        f"{run.get('date', '')} · {run.get('n_prompts', '?')} prompts · {run.get('max_new_tokens', '?')} max new tokens · "
        f"{run.get('n_runs', len(results['runs']))} runs in {run.get('wall_s', 0):.0f} s · "
        + ("lockstep · " if run.get("lockstep") else "") +
        f"{m.get('cpu', '?')} ({m.get('usable_cores', '?')} usable cores)",
        "", f"Reproduce: `{run.get('command', 'ryzanstein bench')}`", "",
        "## Headline", "", headline(summary), "",
        "Speedup = tokens/s of the configuration over plain decoding's tokens/s on the same prompt, seed and "
        "temperature (tokens/s counts emitted tokens over prefill + decode time); every run starts from an empty "
        "KV cache. `draft:kK` = fixed draft length K; `draft:auto` = the adaptive policy."
        + (" Lockstep: a prompt's configurations advanced one target forward each in turn, each in its own KV "
           "caches and timed on its own clock." if run.get("lockstep") else ""), "",
        "## All configurations", "", details(summary), "",
        "## Policy auto against plain and the best fixed K", "", auto_vs_fixed(summary) or "no auto runs", "",
        "## Noise floor", "", noise_section(summary, bool(run.get("lockstep"))), "",
        "## Acceptance", "", acceptance_tables(summary), "",
        "## Memory", "", memory_section(results), "",
    ]
    if long := long_section(results, summary):
        lines += ["## Long context", "", long, ""]
    if results.get("compare"):
        from .bench_compare import render_compare

        lines += ["## Against transformers' generate", "", render_compare(results), ""]
    lines += ["## Greedy output vs plain", "", divergences(results), ""]
    if made:
        lines += ["## Plots", ""] + [f"![{p[:-4]}]({p})" for p in made] + [""]
    lines += ["## Per prompt (speedup vs plain)", "", "<details><summary>table</summary>", "", per_prompt(results), "",
              "</details>", "",
              "## Machine", "", f"- CPU: {m.get('cpu', '?')}, {m.get('cores', '?')} cores ({m.get('usable_cores', '?')} usable), "
              f"RAM {_mib(m.get('ram_bytes'))} MiB", f"- flags: {flags}", f"- {m.get('platform', '')}",
              "- versions: " + ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items()),
              f"- target: {(models.get('target') or {}).get('path', '?')} sha256 {(models.get('target') or {}).get('sha256')}"]
    lines += [f"- draft {d}: {v.get('path', v.get('kind', ''))} sha256 {v.get('sha256')}" for d, v in (models.get("drafts") or {}).items()]
    lines += ["", "## results.json schema", "", "```text", SCHEMA.rstrip(), "```", ""]
    md = "\n".join(lines)
    (out / "report.md").write_text(md)
    return md


# plots -----------------------------------------------------------------------------------------------------
def make_plots(results: dict, summary: dict, out: Path) -> list[str]:
    """The PNGs (matplotlib, Agg); returns the file names written. Without matplotlib: none."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    from .bench_plots import PLOTTERS

    made = []
    for name, fn in PLOTTERS:
        fig = fn(plt, results, summary)
        if fig is not None:
            fig.tight_layout()
            fig.savefig(out / name, dpi=110)
            plt.close(fig)
            made.append(name)
    return made
