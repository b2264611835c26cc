"""The PNG plots of `ryzanstein bench` (matplotlib). Each plotter takes (plt, results, summary) and returns a
figure, or None when the run has nothing to show for it (no `auto` runs, no long-context prompts, ...)."""
from __future__ import annotations

import numpy as np

from .schema import short_name


def _spec(summary: dict) -> list[dict]:
    return [c for c in summary["configs"] if c["draft"] != "none"]


def _name(c: dict, summary: dict) -> str:
    return c["config"] if len(summary["temperatures"]) == 1 else f"{c['config']} T={c['temperature']:g}"


def speedup_vs_k(plt, results: dict, summary: dict):
    """Geometric-mean speedup per K (fixed Ks, then auto), one line per category, one panel per draft x T."""
    panels = list(dict.fromkeys((c["draft"], c["temperature"]) for c in _spec(summary)))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, (draft, t) in zip(axes[0], panels):
        cs = [c for c in _spec(summary) if c["draft"] == draft and c["temperature"] == t]
        cs.sort(key=lambda c: (c["k"] == "auto", c["k"] if isinstance(c["k"], int) else 0))
        x = np.arange(len(cs))
        for cat in summary["categories"]:
            ys = [(c["by_category"].get(cat) or {}).get("speedup_geomean") or np.nan for c in cs]
            ax.plot(x, ys, marker="o", lw=1, alpha=0.8, label=cat)
        ax.plot(x, [c["overall"]["speedup_geomean"] or np.nan for c in cs], marker="s", lw=2.5, color="black",
                label="overall")
        ax.axhline(1.0, color="grey", ls="--", lw=1)
        ax.set_xticks(x, [str(c["k"]) for c in cs])
        ax.set_xlabel("draft length K")
        ax.set_ylabel("speedup vs plain (geo. mean)")
        ax.set_title(f"draft {draft}, T={t:g}")
    axes[0][-1].legend(fontsize=7, loc="best")
    return fig


def acceptance_by_position(plt, results: dict, summary: dict):
    cs = [c for c in _spec(summary) if c["overall"]["acceptance_by_position"]]
    if not cs:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for c in cs:
        a = c["overall"]["acceptance_by_position"]
        ax.plot(np.arange(1, len(a) + 1), a, marker="o", label=_name(c, summary))
    ax.set_xlabel("draft position")
    ax.set_ylabel("accepted / drafted at this position")
    ax.set_ylim(0, 1.02)
    ax.set_title("acceptance by draft position")
    ax.legend(fontsize=7)
    return fig


def latency(plt, results: dict, summary: dict):
    """Per-token latency distribution per configuration (box: quartiles, whiskers: 1st-99th percentile)."""
    groups: dict[tuple, list[float]] = {}
    for r in results["runs"]:
        lat = r.get("token_latencies_s") or [r["stats"].get("latency_p50_s", 0.0)]
        groups.setdefault((r["config"], r["temperature"]), []).extend(lat)
    if not groups:
        return None
    multi = len(summary["temperatures"]) > 1
    labels = [f"{c} T={t:g}" if multi else c for c, t in groups]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(groups)), 4.5))
    ax.boxplot([np.asarray(v) * 1000 for v in groups.values()], whis=(1, 99), showfliers=False)
    ax.set_xticks(np.arange(1, len(labels) + 1), labels, rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("ms per emitted token (log scale)")
    ax.set_title("per-token latency (box: quartiles, whiskers: p1-p99)")
    return fig


def memory(plt, results: dict, summary: dict):
    mem = results.get("memory") or {}
    t = mem.get("target") or {}
    if not t:
        return None
    base = (t.get("weights_bytes") or 0) + (t.get("kv_cache_bytes") or 0)
    names, engine, rss = ["plain"], [base], [mem.get("rss_after_target_bytes") or 0]
    for d, m in (mem.get("drafts") or {}).items():
        names.append(short_name(d))
        engine.append(base + (m.get("spec_overhead_bytes") or 0))
        rss.append(m.get("rss_after_load_bytes") or 0)
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(names)), 4.2))
    ax.bar(x - 0.2, np.asarray(engine) / 2**20, 0.4, label="engine accounting (weights + KV + overhead)")
    ax.bar(x + 0.2, np.asarray(rss) / 2**20, 0.4, label="process RSS after loading")
    if mem.get("peak_rss_bytes"):
        ax.axhline(mem["peak_rss_bytes"] / 2**20, color="grey", ls="--", lw=1, label="peak RSS (whole run)")
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.4 * max(engine + rss + [mem.get("peak_rss_bytes") or 0]) / 2**20)
    ax.set_ylabel("MiB")
    ax.set_title("memory: plain vs speculative")
    ax.legend(fontsize=7, loc="upper left")
    return fig


def auto_k(plt, results: dict, summary: dict):
    """The K chosen by auto, round by round: every run faintly, the mean over runs bold."""
    groups: dict[tuple, list[list[int]]] = {}
    for r in results["runs"]:
        if r["k"] == "auto" and r["stats"].get("k_per_round"):
            groups.setdefault((r["config"], r["temperature"]), []).append(r["stats"]["k_per_round"])
    if not groups:
        return None
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4), squeeze=False)
    for ax, ((name, t), seqs) in zip(axes[0], groups.items()):
        n = max(map(len, seqs))
        grid = np.full((len(seqs), n), np.nan)
        for i, s in enumerate(seqs):
            grid[i, :len(s)] = s
            ax.plot(s, color="tab:blue", alpha=0.3, lw=1)
        ax.plot(np.nanmean(grid, axis=0), color="black", lw=2, label="mean over prompts")
        ax.set_xlabel("round")
        ax.set_ylabel("K chosen")
        ax.set_title(f"{name}, T={t:g}")
        ax.legend(fontsize=7)
    return fig


def long_context(plt, results: dict, summary: dict):
    cats = [c for c in summary["categories"] if c.startswith("long_")]
    if not cats:
        return None
    toks: dict[str, list[int]] = {}
    for p in results.get("prompts", []):
        toks.setdefault(p["category"], []).append(p["prompt_tokens"])
    x = [float(np.mean(toks.get(c, [0]))) for c in cats]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for c in summary["configs"]:
        g = [c["by_category"].get(cat) or {} for cat in cats]
        if c["draft"] != "none":
            a1.plot(x, [v.get("speedup_geomean") or np.nan for v in g], marker="o", label=_name(c, summary))
        a2.plot(x, [(v.get("rss_bytes_max") or np.nan) / 2**20 for v in g], marker="o", label=_name(c, summary))
    a1.axhline(1.0, color="grey", ls="--", lw=1)
    a1.set(xlabel="prompt tokens", ylabel="speedup vs plain", title="speedup vs context length")
    a2.set(xlabel="prompt tokens", ylabel="RSS after run, MiB", title="memory vs context length")
    a1.legend(fontsize=7)
    a2.legend(fontsize=7)
    return fig


PLOTTERS = [("speedup_vs_k.png", speedup_vs_k), ("acceptance_by_position.png", acceptance_by_position),
            ("latency.png", latency), ("memory.png", memory), ("auto_k.png", auto_k),
            ("long_context.png", long_context)]
