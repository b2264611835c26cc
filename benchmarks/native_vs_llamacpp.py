"""The native backend against llama.cpp on the same GGUF and thread count, in one process, interleaved.

    .venv/bin/python benchmarks/native_vs_llamacpp.py                       # the three models, ~10 min
    .venv/bin/python benchmarks/native_vs_llamacpp.py --models qwen2.5-coder-1.5b --reps 9

For each model both backends are loaded side by side and every measurement alternates between them (the order
flips each repeat), so a noisy machine slows both alike; medians over the repeats are reported:
- decode: plain greedy decoding through the engine (`Engine.generate`, 64 new tokens, EOS ignored), its
  decode tokens/s (every token after the first, one forward each);
- v(n): one forward over n = 1..16 new tokens (logits for all n) after a 256-token context, the cache cut
  back after each; within a repeat n = 1 and each n are measured back to back, and v(n)/v(1) is the median
  over repeats of those ratios (the bar asks for these on the 1.5B);
- prefill: a 512-token prompt in one forward (last row's logits only), tokens/s.
Writes JSON (default bench-results/native_vs_llamacpp.json, git-ignored) with every sample, and prints a
Markdown table. Run it on an otherwise idle machine: two programs with 2 threads each stall each other.

    .venv/bin/python benchmarks/native_vs_llamacpp.py --user-visible --models qwen2.5-coder-1.5b --reps 3

measures instead what a user sees: on the shipped prompts (all 48), llama.cpp plain decoding, native plain
decoding and native with prompt lookup under policy auto, greedy, 96 new tokens, the three alternating per
prompt (order rotated each repeat); tokens/s = all emitted tokens over prefill + decode. Per category: the
geometric mean over its prompts of each one's median-over-repeats ratio to llama.cpp plain.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))  # run from a checkout, installed or not
from ryzanstein import Engine, GenerationConfig  # noqa: E402
from ryzanstein.machine import cpu_name, usable_cores  # noqa: E402
from ryzanstein.models import load_model  # noqa: E402

MODELS = ("qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "smollm2-135m")
BACKENDS = ("native", "llama.cpp")
NS = tuple(range(1, 17))
OUT_DIR = Path(__file__).resolve().parent.parent / "bench-results"  # raw output stays out of the tree
OUT_KERNELS, OUT_USER_VISIBLE = "native_vs_llamacpp.json", "native_auto_vs_llamacpp_plain.json"
BARS = {2: 1.10, 4: 1.25, 8: 1.6, 16: 2.5}  # v(n)/v(1) on the 1.5B, from the issue


def forward_s(model, ids: list[int], n: int, context: int) -> float:
    """Seconds of one forward over n tokens after `context` cached ones (the cache is left at `context`)."""
    t0 = time.perf_counter()
    model.forward(ids[context:context + n])
    dt_ = time.perf_counter() - t0
    model.truncate(context)
    return dt_


def measure_model(name: str, threads: int, reps: int, context: int = 256, prefill: int = 512,
                  decode_tokens: int = 64) -> dict:
    models = {b: load_model(name, backend=b, threads=threads, n_ctx=1024) for b in BACKENDS}
    info = {b: {"isa": m.info.extra.get("isa"), "weights_bytes": m.memory().weights_bytes} for b, m in models.items()}
    rng = np.random.default_rng(0)
    ids = [int(t) for t in rng.integers(100, 30000, size=max(context + 16, prefill))]
    engines = {b: Engine.from_models(m) for b, m in models.items()}
    cfg = GenerationConfig(max_new_tokens=decode_tokens, temperature=0.0, ignore_eos=True, k=0)
    prompt = "Write a long story about a lighthouse keeper and the ships she guided home."
    samples = {b: {"decode_tok_s": [], "prefill_tok_s": [], "v_s": {n: [] for n in NS}, "v_ratio": {n: [] for n in NS}}
               for b in BACKENDS}
    for m in models.values():  # warm-up: weights paged in, caches and thread pools running
        m.reset()
        m.forward(ids[:context], last_only=True)
        forward_s(m, ids, 4, context)
    for rep in range(reps):
        order = BACKENDS if rep % 2 == 0 else BACKENDS[::-1]
        for b in order:
            m, s = models[b], samples[b]
            m.reset()
            t0 = time.perf_counter()
            m.forward(ids[:prefill], last_only=True)
            s["prefill_tok_s"].append(prefill / (time.perf_counter() - t0))
            m.reset()
            m.forward(ids[:context], last_only=True)
            for n in NS:
                one, many = forward_s(m, ids, 1, context), forward_s(m, ids, n, context)
                s["v_s"][n].append(many)
                s["v_ratio"][n].append(many / one)
            m.reset()
            s["decode_tok_s"].append(engines[b].generate(prompt, cfg).stats.decode_tokens_per_s)
        print(f"  {name} repeat {rep + 1}/{reps}", file=sys.stderr, flush=True)
    for m in models.values():
        m.close()
    med = statistics.median
    out = {"model": name, "threads": threads, "context": context, "prefill_tokens": prefill,
           "decode_tokens": decode_tokens, "backends": info, "samples": samples, "median": {}}
    for b in BACKENDS:
        s = samples[b]
        out["median"][b] = {"decode_tok_s": med(s["decode_tok_s"]), "prefill_tok_s": med(s["prefill_tok_s"]),
                            "v1_ms": 1e3 * med(s["v_s"][1]),
                            "v_ratio": {n: med(s["v_ratio"][n]) for n in NS}}
    nat, lcp = out["median"]["native"], out["median"]["llama.cpp"]
    out["native_over_llamacpp"] = {"decode": nat["decode_tok_s"] / lcp["decode_tok_s"],
                                   "prefill": nat["prefill_tok_s"] / lcp["prefill_tok_s"]}
    return out


def user_visible(name: str, threads: int, reps: int, max_new: int = 96) -> dict:
    from ryzanstein.bench.prompts import load_prompts
    from ryzanstein.bench.summary import geomean
    from ryzanstein.speculative.proposers import NgramProposer

    nat = load_model(name, backend="native", threads=threads, n_ctx=2048)
    lcp = load_model(name, backend="llama.cpp", threads=threads, n_ctx=2048)
    configs = {"llama.cpp plain": Engine.from_models(lcp), "native plain": Engine.from_models(nat),
               "native auto+ngram": Engine.from_models(nat.new_context(), NgramProposer(1, 4))}
    cfg = GenerationConfig(max_new_tokens=max_new, temperature=0.0, top_k=0, top_p=1.0, min_p=0.0)
    prompts = load_prompts(None)
    for e in configs.values():
        e.generate("warm up", cfg.replace(max_new_tokens=8))
    names = list(configs)
    rows = []
    for i, p in enumerate(prompts):
        rates = {c: [] for c in names}
        outs = {}
        for rep in range(reps):
            k = (i + rep) % len(names)
            for c in names[k:] + names[:k]:
                configs[c].reset()
                r = configs[c].generate(p["prompt"], cfg)
                rates[c].append(r.stats.tokens_per_s)
                outs[c] = r.tokens
        rows.append({"id": p["id"], "category": p["category"], "tokens_per_s": rates,
                     "native_plain_equals_native_auto": outs["native plain"] == outs["native auto+ngram"]})
        print(f"  {p['id']} {', '.join(f'{c} {statistics.median(v):.1f}' for c, v in rates.items())}", file=sys.stderr)
    cats = sorted({r["category"] for r in rows})
    summary = {}
    for c in names[1:]:
        per = {cat: geomean([statistics.median(r["tokens_per_s"][c]) / statistics.median(r["tokens_per_s"]["llama.cpp plain"])
                             for r in rows if r["category"] == cat]) for cat in cats}
        per["overall"] = geomean([statistics.median(r["tokens_per_s"][c]) / statistics.median(r["tokens_per_s"]["llama.cpp plain"])
                                  for r in rows])
        summary[c] = per
    nat.close()
    lcp.close()
    return {"model": name, "threads": threads, "reps": reps, "max_new_tokens": max_new, "prompts": rows,
            "speedup_over_llamacpp_plain": summary,
            "greedy_outputs_identical": sum(r["native_plain_equals_native_auto"] for r in rows), "n_prompts": len(rows)}


def table(results: list[dict]) -> str:
    head = ("| model | backend | decode tok/s | v(1) ms | v(2) | v(4) | v(8) | v(16) | prefill 512 tok/s |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for r in results:
        for b in BACKENDS:
            m = r["median"][b]
            v = m["v_ratio"]
            rows.append(f"| {r['model']} | {b} | {m['decode_tok_s']:.1f} | {m['v1_ms']:.1f} | {v[2]:.2f} | {v[4]:.2f} | "
                        f"{v[8]:.2f} | {v[16]:.2f} | {m['prefill_tok_s']:.0f} |")
        x = r["native_over_llamacpp"]
        rows.append(f"| {r['model']} | native / llama.cpp | {x['decode']:.2f}x | | | | | | {x['prefill']:.2f}x |")
    return head + "\n".join(rows)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--threads", type=int, default=usable_cores())
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--user-visible", action="store_true", help="the 48 prompts: llama.cpp plain vs native plain and auto")
    ap.add_argument("--out", default=None, help=f"JSON output (default: {OUT_DIR.name}/{OUT_KERNELS} or, with "
                    f"--user-visible, {OUT_DIR.name}/{OUT_USER_VISIBLE}; git-ignored)")
    return ap


def main() -> int:
    a = parser().parse_args()
    t0 = time.time()
    if a.user_visible:
        out = Path(a.out or OUT_DIR / OUT_USER_VISIBLE)
        res = [user_visible(m.strip(), a.threads, a.reps) for m in a.models.split(",") if m.strip()]
        doc = {"command": " ".join(["benchmarks/native_vs_llamacpp.py", *sys.argv[1:]]),
               "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "cpu": cpu_name(),
               "wall_s": round(time.time() - t0, 1), "results": res}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=1))
        for r in res:
            print(f"{r['model']}: tokens/s over llama.cpp plain (geometric mean over prompts), "
                  f"{r['greedy_outputs_identical']}/{r['n_prompts']} native auto outputs identical to native plain")
            cats = list(next(iter(r["speedup_over_llamacpp_plain"].values())))
            print("| configuration | " + " | ".join(cats) + " |\n|---|" + "---|" * len(cats))
            for c, per in r["speedup_over_llamacpp_plain"].items():
                print(f"| {c} | " + " | ".join(f"{per[k]:.2f}x" for k in cats) + " |")
        print(f"\nwrote {out} ({doc['wall_s']:.0f} s)", file=sys.stderr)
        return 0
    a.out = a.out or str(OUT_DIR / OUT_KERNELS)
    results = [measure_model(m.strip(), a.threads, a.reps) for m in a.models.split(",") if m.strip()]
    doc = {"command": " ".join(["benchmarks/native_vs_llamacpp.py", *sys.argv[1:]]),
           "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"), "cpu": cpu_name(),
           "threads": a.threads, "reps": a.reps, "wall_s": round(time.time() - t0, 1), "results": results}
    for r in results:
        if r["model"] == "qwen2.5-coder-1.5b":
            v = r["median"]["native"]["v_ratio"]
            doc["bars_1.5b"] = {f"v({n})<={bar}": {"measured": v[n], "holds": v[n] <= bar} for n, bar in BARS.items()}
            x = r["native_over_llamacpp"]
            doc["bars_1.5b"]["decode>=0.95x"] = {"measured": x["decode"], "holds": x["decode"] >= 0.95}
            doc["bars_1.5b"]["prefill>=0.8x"] = {"measured": x["prefill"], "holds": x["prefill"] >= 0.8}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(doc, indent=1))
    print(table(results))
    print(f"\nwrote {a.out} ({doc['wall_s']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
