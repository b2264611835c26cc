"""Pool the repeats of several `ryzanstein bench` runs of the same model and prompts into one speedup table.

    .venv/bin/python benchmarks/pool.py A/results.json B/results.json ... [--config ngram:auto]

Why: on a shared 2-core machine one category's speedup (6 prompts x a few repeats) carries +-3-4% of noise,
as much as the 3% margin of the "never slower" bar (0.97x per category, docs/benchmarks.md). Each run stores every repeat's tokens/s per (prompt, config)
(`reps_tokens_per_s`), so runs made at different times can be pooled: per prompt, the median tokens/s over
all repeats of all runs for the configuration and for plain decoding; their ratio; the geometric mean over a
category's prompts, as `ryzanstein bench report` does for one run. Each run's own figure is printed beside
the pooled one, so nothing is hidden by the pooling. Last, the noise floor of the pooled data: plain
decoding's pooled repeats split at random in halves, an A/A test (ryzanstein.bench.summary.noise_floor).
"""
from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict

from ryzanstein.bench.summary import geomean, noise_floor


def reps(results: dict) -> tuple[dict, dict]:
    """{(prompt_id, config): [tokens/s of every repeat]} at temperature 0, and {prompt_id: category}."""
    out, cats = {}, {}
    for r in results["runs"]:
        if r["temperature"] == 0:
            out[(r["prompt_id"], r["config"])] = r.get("reps_tokens_per_s") or [r["stats"]["tokens_per_s"]]
            cats[r["prompt_id"]] = r["category"]
    return out, cats


def speedups(table: dict, cats: dict, config: str) -> dict[str, float]:
    """Per category (and "overall"): geometric mean over prompts of median(config) / median(plain)."""
    by_cat = defaultdict(list)
    for pid, cat in cats.items():
        if (pid, config) in table and (pid, "plain") in table:
            ratio = statistics.median(table[(pid, config)]) / statistics.median(table[(pid, "plain")])
            by_cat[cat].append(ratio)
            by_cat["overall"].append(ratio)
    return {c: geomean(v) for c, v in by_cat.items()}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results", nargs="+", help="results.json files of runs with the same model and prompts")
    ap.add_argument("--config", default=None, help="configuration to compare with plain (default: every auto one)")
    return ap


def main() -> None:
    a = parser().parse_args()
    runs = [json.load(open(f)) for f in a.results]
    models = {r["run"]["model"] for r in runs}
    if len(models) != 1:
        raise SystemExit(f"error: the runs are of different models ({', '.join(sorted(models))}); pool one model")
    tables = [reps(r) for r in runs]
    pooled, cats = defaultdict(list), {}
    for t, c in tables:
        for key, v in t.items():
            pooled[key].extend(v)
        cats.update(c)
    configs = sorted({k[1] for k in pooled if k[1] != "plain"})
    configs = [a.config] if a.config else [c for c in configs if c.endswith(":auto")]
    for config in configs:
        n_reps = [len(pooled[(p, config)]) for p in cats if (p, config) in pooled]
        per_run = [speedups(t, c, config) for t, c in tables]
        both = speedups(pooled, cats, config)
        print(f"{config}: speedup over plain per category (pooled: {min(n_reps)}-{max(n_reps)} repeats per prompt)")
        head = ["category", "pooled"] + [f"run {i + 1}" for i in range(len(runs))]
        print(" | ".join(head))
        for cat in [c for c in dict.fromkeys(cats.values())] + ["overall"]:
            cells = [f"{both[cat]:.3f}x" if cat in both else "-"]
            cells += [f"{s[cat]:.3f}x" if cat in s else "-" for s in per_run]
            print(" | ".join([cat] + cells))
        low = min((v, c) for c, v in both.items() if c != "overall")
        print(f"lowest pooled category: {low[1]} {low[0]:.3f}x\n")
    nf = noise_floor({p: v for (p, c), v in pooled.items() if c == "plain"}, cats)
    if nf:
        print(f"noise floor: plain against itself ({nf['repeats']} pooled repeats per prompt split in halves, "
              f"{nf['splits']} times): lowest category {nf['lowest_category_median']:.3f}x (median), below "
              f"{nf['bar']:.2f}x in {nf['lowest_below_bar_rate']:.0%} of splits")


if __name__ == "__main__":
    main()
