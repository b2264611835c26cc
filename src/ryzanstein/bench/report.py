"""The Markdown report of `ryzanstein bench` (report.md) and its PNG plots, from a results dict and its summary."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .compare import render_compare
from .markdown import fmt, mib, ms, pct, table
from .plots import PLOTTERS
from .schema import SCHEMA, short_name
from .summary import summarize, tokens_per_s


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
                row.append(f"{fmt(g['speedup_geomean'])} · {pct(g['acceptance_rate'])}" if g else "-")
            rows.append(row)
        out.append(f"Temperature {t:g}: speedup vs plain (geometric mean of per-prompt tokens/s ratios) · "
                   f"draft acceptance rate\n\n" + table(head, rows))
    return "\n\n".join(out)


def details(summary: dict) -> str:
    head = ["config", "T", "tok/s", "speedup geo", "median", "min-max", "decode speedup", "accept", "mean acc. len",
            "TTFT ms", "prefill tok/s", "decode tok/s", "latency p50/p95/p99 ms", "greedy identical",
            "auto: mean K", "auto: predicted", "fallbacks"]
    rows = []
    for c in summary["configs"]:
        g = c["overall"]
        rows.append([c["config"], f"{c['temperature']:g}", f"{g['tokens_per_s']:.1f}", fmt(g["speedup_geomean"]),
                     fmt(g["speedup_median"]), f"{fmt(g['speedup_min'])}-{fmt(g['speedup_max'])}",
                     fmt(g["decode_speedup_geomean"]), pct(g["acceptance_rate"]),
                     fmt(g["mean_acceptance_length"], "{:.2f}"), ms(g["ttft_s"]),
                     fmt(g["prefill_tokens_per_s"], "{:.0f}"), fmt(g["decode_tokens_per_s"], "{:.1f}"),
                     f"{ms(g['latency_p50_s'])} / {ms(g['latency_p95_s'])} / {ms(g['latency_p99_s'])}",
                     f"{pct(g['identical_rate'])} of {g['n_identical_checked']}" if g["n_identical_checked"] else "-",
                     fmt(g["k_mean"], "{:.2f}") if c["k"] == "auto" else "-",
                     f"{fmt(g['predicted_speedup'])} (decode measured {fmt(g['decode_speedup_geomean'])})" if c["k"] == "auto" else "-",
                     str(g["fallbacks"])])
    return table(head, rows)


def auto_vs_fixed(summary: dict) -> str:
    """Per category and temperature, for each draft: auto against plain and against the best fixed K, and
    auto's own predicted decode speedup next to the measured one: never slower than plain, the best fixed K's
    gain where speculation pays, and a prediction near what was measured."""
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
            rows.append([auto["config"], f"{auto['temperature']:g}", cat, fmt(g["speedup_geomean"]),
                         f"{fmt(best)} (K={best_k})" if best else "-", pct(gain) if gain is not None else "-",
                         fmt(pred), fmt(dec), pct(err) if err is not None else "-"])
    if not rows:
        return ""
    return table(["auto", "T", "category", "auto vs plain", "best fixed K vs plain", "share of best gain",
                   "predicted decode speedup", "measured decode speedup", "prediction error"], rows)


def noise_section(summary: dict, lockstep: bool = False) -> str:
    nf = summary.get("noise_floor")
    if not nf:
        return "Needs `--reps 2` or more: plain decoding's repeats split in halves give the A/A test."
    rows = [[c, f"{fmt(v['p05'], '{:.3f}x')} - {fmt(v['p95'], '{:.3f}x')}"] for c, v in nf["by_category"].items()]
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
            f"lands at {fmt(nf['lowest_category_median'], '{:.3f}x')} (median) and below "
            f"{fmt(nf['bar'], '{:.2f}x')} in {pct(nf['lowest_below_bar_rate'])} of them: differences of that size "
            "between configurations are not resolved by this run.\n\n"
            + table(["category", "plain vs plain, 5th-95th percentile"], rows))


def acceptance_tables(summary: dict) -> str:
    spec = [c for c in summary["configs"] if c["draft"] != "none"]
    if not spec:
        return "No speculative configuration was run."
    n = max(len(c["overall"]["acceptance_by_position"]) for c in spec)
    by_pos = table(["config", "T"] + [str(i + 1) for i in range(n)],
                    [[c["config"], f"{c['temperature']:g}"] + [pct(x) for x in c["overall"]["acceptance_by_position"]]
                     + ["-"] * (n - len(c["overall"]["acceptance_by_position"])) for c in spec])
    m = max(len(c["overall"]["accepted_length_hist"]) for c in spec)
    hist = table(["config", "T"] + [str(i) for i in range(m)],
                  [[c["config"], f"{c['temperature']:g}"] + [str(x) for x in c["overall"]["accepted_length_hist"]]
                   + ["0"] * (m - len(c["overall"]["accepted_length_hist"])) for c in spec])
    return ("Acceptance by draft position (of the rounds that drafted a token at position i, the fraction that "
            "accepted it; a draft is accepted only if every draft before it was):\n\n" + by_pos +
            "\n\nAccepted-length histogram (speculative rounds that accepted exactly n drafts):\n\n" + hist)


def memory_section(results: dict) -> str:
    mem = results.get("memory") or {}
    t = mem.get("target") or {}
    base = (t.get("weights_bytes") or 0) + (t.get("kv_cache_bytes") or 0)
    rows = [["plain", mib(t.get("weights_bytes")), mib(t.get("kv_cache_bytes")), "0", "0%",
             mib(mem.get("rss_after_target_bytes")), "-"]]
    for d, m in (mem.get("drafts") or {}).items():
        over = m.get("spec_overhead_bytes") or 0
        rows.append([short_name(d), "", "", mib(over), pct(over / base if base else None), mib(m.get("rss_after_load_bytes")),
                     f"{(m.get('rss_delta_bytes') or 0) / 2**20:+.0f}"])
    return ("Engine accounting (the engine's own figures: target weights and KV cache allocated for the context; "
            "speculation adds draft weights + draft KV + the target KV rows of k_max extra drafts) and measured "
            "RSS (the process's current resident memory right after loading each configuration). Peak RSS is "
            "process-wide, so it covers every configuration of the run together: "
            f"{mib(mem.get('peak_rss_bytes'))} MiB; RSS after warm-up: {mib(mem.get('rss_after_warmup_bytes'))} MiB.\n\n"
            + table(["config", "target weights MiB", "target KV MiB", "spec overhead MiB", "overhead / target",
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
                         fmt(g["speedup_geomean"]), fmt(g["decode_speedup_geomean"]), pct(g["acceptance_rate"]),
                         mib(kvt * n), mib(g["rss_bytes_max"])])
    return ("Speedup and memory vs context length. With long prompts the prefill, which speculation does not "
            "change, weighs on end-to-end tokens/s: the decode speedup shows the decoding part alone. "
            "KV MiB = the target KV rows the prompt fills (engine "
            "accounting); RSS = the largest current RSS after a run of that group.\n\n"
            + table(["length", "prompt tokens", "config", "T", "plain tok/s", "speedup", "decode speedup", "accept",
                      "prompt KV MiB", "RSS MiB"], rows))


def divergences(results: dict) -> str:
    rows = [[r["prompt_id"], r["config"], str(r["first_divergence"]), str(r["num_tokens"]),
             f"{r['divergence_top2_gap']:.3f}" if r.get("divergence_top2_gap") is not None else "-"]
            for r in results["runs"] if r.get("identical_to_plain") is False]
    if not rows:
        return "Every greedy speculative run produced exactly plain decoding's tokens."
    return ("Greedy runs whose tokens differ from plain's (near-tie logits differ between batched and one-token "
            "kernels). The gap is the target's top-1 minus top-2 logit where plain decoding took that "
            "token:\n\n" + table(["prompt", "config", "first differing token", "tokens", "top-2 logit gap"], rows))


def per_prompt(results: dict) -> str:
    runs = results["runs"]
    plain = {(r["prompt_id"], r["temperature"]): r for r in runs if r["draft"] == "none"}
    names = list(dict.fromkeys(r["config"] for r in runs if r["draft"] != "none"))
    cells = {(r["prompt_id"], r["config"], r["temperature"]): f"{tokens_per_s(r) / tokens_per_s(b):.2f}" for r in runs
             if r["draft"] != "none" and (b := plain.get((r["prompt_id"], r["temperature"]))) and tokens_per_s(b) > 0}
    rows = [[p, f"{t:g}", f"{tokens_per_s(plain[(p, t)]):.1f}" if (p, t) in plain else "-"]
            + [cells.get((p, n, t), "-") for n in names]
            for p, t in dict.fromkeys((r["prompt_id"], r["temperature"]) for r in runs)]
    return table(["prompt", "T", "plain tok/s"] + names, rows)


def render(results: dict, out: Path, plots: bool = True) -> str:
    """Write report.md (and the PNGs) into `out`; return the Markdown."""
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
        "KV cache. `draft:kK` = fixed draft length K; `draft:auto` = policy auto, which chooses K every round."
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
        lines += ["## Against transformers' generate", "", render_compare(results), ""]
    lines += ["## Greedy output vs plain", "", divergences(results), ""]
    if made:
        lines += ["## Plots", ""] + [f"![{p[:-4]}]({p})" for p in made] + [""]
    lines += ["## Per prompt (speedup vs plain)", "", "<details><summary>table</summary>", "", per_prompt(results), "",
              "</details>", "",
              "## Machine", "", f"- CPU: {m.get('cpu', '?')}, {m.get('cores', '?')} cores ({m.get('usable_cores', '?')} usable), "
              f"RAM {mib(m.get('ram_bytes'))} MiB", f"- flags: {flags}", f"- {m.get('platform', '')}",
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
    try:  # matplotlib is the optional bench extra, and slow to import: only when plotting
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # after choosing the file-only Agg backend
    except ImportError:
        return []

    made = []
    for name, fn in PLOTTERS:
        fig = fn(plt, results, summary)
        if fig is not None:
            fig.tight_layout()
            fig.savefig(out / name, dpi=110)
            plt.close(fig)
            made.append(name)
    return made
