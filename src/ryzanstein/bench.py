"""`ryzanstein bench`: plain decoding against every speculative configuration, side by side, on one target.

One target is loaded once and shared by every configuration (plain, and each draft x K x temperature). Each
prompt runs every configuration back to back (interleaved, in an order rotated per prompt), so machine drift
hits them all alike; every run starts from an empty KV cache, so each pays its own prefill; plain and
speculative runs of a prompt use the same seed and the same max_new_tokens. One warm-up generation per draft
runs first and is not recorded. Tokens are counted as token ids, never characters.

With --lockstep every configuration gets its own KV caches over the shared weights, and a prompt's
configurations advance one target forward each in turn, each timed on a clock that runs only during its own
steps (lockstep.py): all of them meet the same machine state within one round, which takes the noise of a
shared machine out of their ratios (prefill, one forward, keeps its own). Costs one KV cache per configuration.

    ryzanstein bench --quick                               # ~1 min on smollm2-135m
    ryzanstein bench --drafts ngram,self:8 --ks 1,2,4,8,auto --temperatures 0,0.7
    ryzanstein bench --long                                # speedup and memory vs context length
    ryzanstein bench --drafts ngram --ks auto --reps 3 --lockstep   # auto vs plain, machine noise paired out
    ryzanstein bench report bench-results/<stamp>/results.json

Aggregation and rendering live in bench_report.py, the transformers comparison in bench_compare.py.
The results.json schema is `SCHEMA` below (also copied into every report.md).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sys
import time
from importlib import resources
from pathlib import Path

SCHEMA_VERSION = 1
SCHEMA = """\
results.json (schema_version 1). Times in seconds, memory in bytes, rates in tokens per second.
- schema_version, kind="ryzanstein-bench"
- machine: cpu, cores (os.cpu_count), usable_cores (affinity), cpu_flags {avx2, avx512f, avx512_bf16,
  avx512_vnni, ...: bool}, ram_bytes, platform, versions {python, ryzanstein, numpy, torch, llama-cpp-python,
  transformers, matplotlib}
- run: command (a command line reproducing the run), argv, date (ISO 8601), wall_s, model, backend, threads,
  n_ctx, drafts, ks, temperatures, max_new_tokens, seed, reps, ignore_eos, prompts_file, categories, per_category,
  quick, long, lockstep, n_prompts, n_runs
- models: target {name, path, backend, dtype, n_layers, n_ctx, threads, sha256 (the store's; null when
  unknown)}; drafts {draft: {...same..., or {kind: "ngram"}}}
- memory: target {weights_bytes, kv_cache_bytes, kv_bytes_per_token} (the engine's own accounting);
  rss_after_target_bytes (current RSS after loading the target); drafts {draft: {spec_overhead_bytes (engine
  accounting: draft weights + draft KV + k_max extra target KV rows), rss_after_load_bytes (current RSS after
  loading this draft), rss_delta_bytes}}; rss_after_warmup_bytes; peak_rss_bytes (process-wide ru_maxrss at
  the end: covers every configuration, not one); lockstep (only with --lockstep: the benchmark's own cost, not
  speculation's) {contexts (target KV caches, one per configuration), extra_kv_cache_bytes (the target and
  model-draft KV caches of every configuration but the first, each a twin in caches of its own), rss_delta_bytes}
- prompts: [{id, category, prompt_tokens}]
- configs: [{config, draft, k, temperature}]: config is "plain" or "<draft>:k<K>" or "<draft>:auto";
  draft "none" = plain; k an int, "auto", or null for plain
- runs: one per (prompt, config, temperature): prompt_id, category, config, draft, k, temperature, seed,
  prompt_tokens, num_tokens, finish_reason, tokens (output ids), text, identical_to_plain (greedy speculative
  runs: output ids equal plain's; else null), first_divergence (index of the first output token that differs
  from plain's; null when identical or not greedy), divergence_top2_gap (only for diverged runs: the target's
  top-1 minus top-2 logit where plain decoding took that token; a near-tie is a small gap), rss_bytes (current RSS after the run),
  token_latencies_s (per emitted token: its round's time / tokens it emitted; under --lockstep every time is
  the generation's own clock), stats (GenerationStats.to_dict():
  tokens_per_s = tokens / (prefill + decode), prefill_s, decode_s, ttft_s, prefill_tokens_per_s,
  decode_tokens_per_s, latency_p50_s/p95/p99, rounds, num_draft_tokens, num_accepted, acceptance_rate,
  mean_acceptance_length (includes the bonus token), accepted_per_position, drafted_per_position,
  acceptance_by_position, accepted_length_hist, k_per_round, predicted_speedup (auto), policy, fallback, ...)
- summary: bench_report.summarize(results), recomputed by `ryzanstein bench report`: configs [{config, draft,
  k, temperature, overall, by_category {category: aggregate}}] where an aggregate holds n_prompts, tokens,
  tokens_per_s (sum tokens / sum time), speedup_geomean and speedup_median (of per-prompt tokens/s ratios to
  plain at the same temperature), speedup_min/max, decode_speedup_geomean, acceptance_rate and
  mean_acceptance_length (pooled counts), acceptance_by_position (pooled), accepted_length_hist (summed),
  ttft_s/prefill_s/decode_s/prefill_tokens_per_s/decode_tokens_per_s (medians), latency_p50_s/p95/p99
  (pooled over tokens), identical_rate (greedy), first_divergences, k_mean, k_hist, predicted_speedup
  (geometric mean, auto), rss_bytes_max, spec_memory_overhead_bytes, fallbacks
  and noise_floor (null under 2 repeats): plain decoding against itself, its repeats split at random in halves
  {splits, repeats, bar, by_category {category: {p05, p95}}, lowest_category_median, lowest_below_bar_rate}
  and pair_spread {"<config>@<T>": {sd, dof}}: within-prompt sd of log(config repeat i / plain repeat i), pooled
- compare (only with --compare): transformers' generate on the same weights; see bench_compare.py
"""

QUICK = dict(per_category=1, max_new_tokens=48, ks="2,auto")
FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16")


# prompts ---------------------------------------------------------------------------------------------------
def load_prompts(path: str | None, long: bool = False, categories: list[str] | None = None,
                 per_category: int | None = None) -> list[dict]:
    """Our JSONL ({id, category, prompt}) or Spec-Bench's question.jsonl ({question_id, category, turns})."""
    from .errors import RyzansteinError

    if path:
        text, where = Path(path).read_text(encoding="utf-8"), path
    else:
        name = "long_prompts.jsonl" if long else "prompts.jsonl"
        text, where = resources.files("ryzanstein").joinpath("data", name).read_text(encoding="utf-8"), name
    prompts, seen = [], {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            prompt = d["turns"][0] if "turns" in d else d["prompt"]
            pid = str(d.get("id", d.get("question_id", n)))
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise RyzansteinError(f"{where} line {n}: not a prompt ({e}): each line needs "
                                  "{id, category, prompt} or Spec-Bench's {question_id, category, turns}") from None
        cat = str(d.get("category") or "default")
        if categories and cat not in categories:
            continue
        seen[cat] = seen.get(cat, 0) + 1
        if per_category and seen[cat] > per_category:
            continue
        prompts.append({"id": pid, "category": cat, "prompt": prompt})
    if not prompts:
        raise RyzansteinError(f"no prompts selected from {where}" + (f" for categories {categories}" if categories else ""))
    return prompts


# configurations --------------------------------------------------------------------------------------------
def parse_ks(text: str) -> list[int | str]:
    from .errors import ConfigError

    out: list[int | str] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if part == "auto":
            out.append("auto")
        elif part.isdigit() and 1 <= int(part) <= 8:
            out.append(int(part))
        else:
            raise ConfigError(f"invalid --ks entry {part!r}: each must be an integer K in 1..8 or 'auto'")
    return out


def parse_temperatures(text: str) -> list[float]:
    from .errors import ConfigError

    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"invalid --temperatures {text!r}: a comma list of numbers, e.g. 0,0.7") from None


def short_name(draft: str) -> str:
    """A draft as labels show it: a file path by its stem."""
    return Path(draft).stem if "/" in draft or draft.endswith(".gguf") else draft


def label(draft: str, k: int | str | None) -> str:
    return "plain" if draft == "none" else f"{short_name(draft)}:{'auto' if k == 'auto' else f'k{k}'}"


def make_configs(drafts: list[str], ks: list, temperatures: list[float]) -> list[dict]:
    out = []
    for t in temperatures:
        out.append({"config": "plain", "draft": "none", "k": None, "temperature": t})
        out += [{"config": label(d, k), "draft": d, "k": k, "temperature": t} for d in drafts for k in ks]
    return out


def generation_config(c: dict, seed: int, a: argparse.Namespace):
    from .config import GenerationConfig

    k = c["k"] if isinstance(c["k"], int) else None
    return GenerationConfig(max_new_tokens=a.max_new_tokens, temperature=c["temperature"], seed=seed, k=k,
                            policy="fixed" if k else "auto", ignore_eos=a.ignore_eos)


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """Index of the first position where two outputs differ (a length difference counts); None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


# machine ---------------------------------------------------------------------------------------------------
def current_rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def machine_info() -> dict:
    from importlib import metadata

    import psutil

    from .spec.costs import cpu_name

    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    versions = {"python": platform.python_version()}
    for pkg in ("ryzanstein", "numpy", "torch", "llama-cpp-python", "transformers", "accelerate", "matplotlib"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "usable_cores": usable,
            "cpu_flags": {f: f in flags for f in FLAGS}, "ram_bytes": int(psutil.virtual_memory().total),
            "platform": platform.platform(), "versions": versions}


def model_info(m) -> dict:
    i = m.info
    return {"name": i.name, "path": i.path, "backend": i.backend, "dtype": i.dtype, "n_layers": i.n_layers,
            "n_ctx": i.n_ctx, "threads": i.threads, "sha256": i.extra.get("sha256")}


def command_line(a: argparse.Namespace) -> str:
    parts = ["ryzanstein", "bench", "--model", a.model, "--drafts", a.drafts, "--ks", a.ks,
             "--temperatures", a.temperatures, "--max-new-tokens", str(a.max_new_tokens), "--seed", str(a.seed), "--reps", str(a.reps)]
    for flag, v in (("--prompts", a.prompts), ("--categories", a.categories), ("--per-category", a.per_category),
                    ("--threads", a.threads), ("--backend", a.backend), ("--ctx-size", a.ctx_size)):
        if v is not None:
            parts += [flag, str(v)]
    parts += [f for f, on in (("--long", a.long), ("--ignore-eos", a.ignore_eos), ("--compare", a.compare),
                              ("--lockstep", a.lockstep)) if on]
    return shlex.join(parts)


# the run ---------------------------------------------------------------------------------------------------
class Progress:
    """done/total with an ETA on stderr: one rewritten line on a terminal, a line every ~5% otherwise."""

    def __init__(self, total: int, what: str = "runs") -> None:
        self.total, self.what, self.done, self.t0 = total, what, 0, time.perf_counter()
        self.tty, self.every = sys.stderr.isatty(), max(1, total // 20)

    def step(self, note: str) -> None:
        self.done += 1
        el = time.perf_counter() - self.t0
        eta = el / self.done * (self.total - self.done)
        line = f"[bench] {self.done}/{self.total} {self.what}  {_hms(el)} elapsed  ETA {_hms(eta)}  {note}"
        if self.tty:
            print("\r" + line[:150].ljust(150), end="" if self.done < self.total else "\n", file=sys.stderr, flush=True)
        elif self.done % self.every == 0 or self.done == self.total:
            print(line, file=sys.stderr, flush=True)


def _hms(s: float) -> str:
    return f"{int(s // 60)}m{int(s % 60):02d}s"


def load_target(a: argparse.Namespace, prompts: list[dict]):
    """The target, with a context big enough for the longest prompt + max_new_tokens (unless --ctx-size)."""
    from .models.chat import encode_prompt
    from .models import load_model

    kw = dict(backend=a.backend, threads=a.threads)
    target = load_model(a.model, n_ctx=a.ctx_size, **kw)
    ids = {p["id"]: encode_prompt(target.tokenizer, p["prompt"], chat=True) for p in prompts}
    need = max(map(len, ids.values())) + a.max_new_tokens + 16
    if a.ctx_size is None and need > target.n_ctx:
        n_ctx = min(-(-need // 256) * 256, max(target.info.n_ctx_train, target.n_ctx))
        target.close()
        target = load_model(a.model, n_ctx=n_ctx, **kw)
    too_long = [p["id"] for p in prompts if len(ids[p["id"]]) + 2 > target.n_ctx]
    if too_long:
        print(f"warning: skipping {len(too_long)} prompts longer than the {target.n_ctx}-token context: "
              f"{', '.join(too_long[:5])}", file=sys.stderr)
    return target, ids, too_long


def run_bench(a: argparse.Namespace) -> dict:
    """Run everything; return the results dict (without summary)."""
    from .config import LoadConfig
    from .engine import Engine, build_proposer
    from .lockstep import StreamClocks, run_in_turn
    from .spec.proposers import ModelProposer
    from .spec.stats import peak_rss_bytes

    t_start = time.perf_counter()
    cats = [c.strip() for c in a.categories.split(",")] if a.categories else None
    prompts = load_prompts(a.prompts, a.long, cats, a.per_category)
    drafts = [d.strip() for d in a.drafts.split(",") if d.strip() and d.strip() != "none"]
    ks, temps = parse_ks(a.ks), parse_temperatures(a.temperatures)
    configs = make_configs(drafts, ks, temps)
    for c in configs:
        generation_config(c, 0, a)  # validate every setting before loading anything

    target, ids, skipped = load_target(a, prompts)
    prompts = [p for p in prompts if p["id"] not in skipped]
    memory = {"target": vars(target.memory()), "rss_after_target_bytes": current_rss(), "drafts": {}}
    models = {"target": model_info(target), "drafts": {}}
    engines = {"none": Engine.from_models(target, None, LoadConfig(model=a.model, draft="none"))}
    for d in drafts:
        lcfg = LoadConfig(model=a.model, draft=d, backend=a.backend, threads=a.threads, ctx_size=target.n_ctx,
                          allow_memory_overhead=True)
        before = current_rss()
        eng = Engine.from_models(target, build_proposer(lcfg, target), lcfg)
        after = current_rss()
        engines[d] = eng
        memory["drafts"][d] = {"spec_overhead_bytes": eng.spec_memory_overhead_bytes(8),
                               "rss_after_load_bytes": after, "rss_delta_bytes": after - before}
        models["drafts"][d] = (model_info(eng.proposer.model) if isinstance(eng.proposer, ModelProposer)
                               else {"kind": d})
        if "auto" in ks:  # measure (or read) the cost profiles now, not inside a timed run
            eng.cost_profile()
            eng.draft_token_cost_s()

    # the engine each configuration runs on: one per draft, sharing the target; under --lockstep one per
    # configuration, each in KV caches of its own (a twin shares the weights and the cost profiles)
    if a.lockstep:
        before = current_rss()
        first, *rest = configs  # the first runs on the loaded engine, every other one on a twin of its engine
        twins = {_cid(c): engines[c["draft"]].twin() for c in rest}
        streams = {_cid(first): engines[first["draft"]], **twins}
        memory["lockstep"] = {"contexts": len(streams), "rss_delta_bytes": current_rss() - before,
                              "extra_kv_cache_bytes": sum(map(_kv_bytes, twins.values()))}
    else:
        streams = {_cid(c): engines[c["draft"]] for c in configs}

    def start(c: dict, pid: str, seed: int, clock=time.perf_counter, max_new: int | None = None):
        eng = streams[_cid(c)]
        eng.reset()  # every run pays its own prefill
        cfg = generation_config(c, seed, a)
        return eng.stream(ids[pid], cfg.replace(max_new_tokens=max_new) if max_new else cfg, clock=clock)

    def run_all(order: list[dict], pid: str, seed: int, max_new: int | None = None) -> list:
        """Every configuration of `order` on one prompt: one after another, or in lockstep."""
        if not a.lockstep:
            return [start(c, pid, seed, max_new=max_new).run() for c in order]
        clocks = StreamClocks()
        gens = {_cid(c): start(c, pid, seed, clocks.clock(_cid(c)), max_new) for c in order}
        run_in_turn(gens, clocks)
        return [gens[_cid(c)].result for c in order]

    shortest = min(prompts, key=lambda p: len(ids[p["id"]]))["id"]
    warm = configs if a.lockstep else list({c["draft"]: c for c in configs}.values())
    run_all(warm, shortest, a.seed, max_new=min(16, a.max_new_tokens))  # warm-up, once per engine: not recorded
    memory["rss_after_warmup_bytes"] = current_rss()

    runs: list[dict] = []
    progress = Progress(len(prompts) * len(configs) * a.reps)
    for i, p in enumerate(prompts):
        seed = a.seed + i
        reps: dict[str, list] = {}
        for rep in range(a.reps):
            order = configs[(i + rep) % len(configs):] + configs[:(i + rep) % len(configs)]  # rotated
            for c, res in zip(order, run_all(order, p["id"], seed)):
                reps.setdefault(_cid(c), []).append((c, run_record(p, c, seed, res)))
                progress.step(f"{p['id']} {c['config']} t={c['temperature']:g}")
        block = [median_run(rs) for rs in reps.values()]
        mark_identical(block)
        for r in block:  # is each divergence a near-tie of the target, as batched-vs-one-token kernels cause?
            if r["first_divergence"] is not None:
                plain_tokens = next(b["tokens"] for b in block if b["draft"] == "none" and b["temperature"] == 0)
                r["divergence_top2_gap"] = top2_gap(target, ids[p["id"]], plain_tokens[:r["first_divergence"]])
        runs += sorted(block, key=lambda r: configs.index(_cfg(r, configs)))
    memory["peak_rss_bytes"] = max([peak_rss_bytes()] + [r["rss_bytes"] for r in runs])  # ru_maxrss lags a little
    for eng in engines.values():
        if isinstance(eng.proposer, ModelProposer) and eng.proposer.owns_weights:
            eng.proposer.model.close()

    results = {
        "schema_version": SCHEMA_VERSION, "kind": "ryzanstein-bench", "machine": machine_info(),
        "run": {"command": command_line(a), "argv": sys.argv,
                "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                "wall_s": 0.0, "model": a.model, "backend": target.info.backend, "threads": target.info.threads,
                "n_ctx": target.n_ctx, "drafts": drafts, "ks": ks, "temperatures": temps,
                "max_new_tokens": a.max_new_tokens, "seed": a.seed, "reps": a.reps, "ignore_eos": a.ignore_eos,
                "prompts_file": a.prompts or ("long_prompts.jsonl" if a.long else "prompts.jsonl"),
                "categories": cats, "per_category": a.per_category, "quick": a.quick, "long": a.long,
                "lockstep": a.lockstep,
                "n_prompts": len(prompts), "n_runs": len(runs)},
        "models": models, "memory": memory,
        "prompts": [{"id": p["id"], "category": p["category"], "prompt_tokens": len(ids[p["id"]])} for p in prompts],
        "configs": configs, "runs": runs,
    }
    if a.compare:
        from .bench_compare import run_compare

        results["compare"] = run_compare(a, target, prompts, ids, drafts, ks)
    target.close()
    results["run"]["wall_s"] = round(time.perf_counter() - t_start, 2)
    return results


def _cid(c: dict) -> str:
    return f"{c['config']}@{c['temperature']}"


def _kv_bytes(eng) -> int:
    """The KV caches an engine holds: its target's and a model draft's."""
    from .spec.proposers import ModelProposer

    p = eng.proposer
    return eng.target.memory().kv_cache_bytes + (p.model.memory().kv_cache_bytes if isinstance(p, ModelProposer) else 0)


def _cfg(run: dict, configs: list[dict]) -> dict:
    return next(c for c in configs if c["config"] == run["config"] and c["temperature"] == run["temperature"])


def run_record(p: dict, c: dict, seed: int, res) -> dict:
    s = res.stats
    return {"prompt_id": p["id"], "category": p["category"], "config": c["config"], "draft": c["draft"],
            "k": c["k"], "temperature": c["temperature"], "seed": seed, "prompt_tokens": res.prompt_tokens,
            "num_tokens": res.num_tokens, "finish_reason": res.finish_reason, "tokens": res.tokens,
            "text": res.text, "identical_to_plain": None, "first_divergence": None, "rss_bytes": current_rss(),
            "token_latencies_s": [round(x, 7) for x in s.token_latencies_s], "stats": s.to_dict()}


def median_run(reps: list[tuple[dict, dict]]) -> dict:
    """Of a configuration's repeats on one prompt, the run with the median tokens/s (all rates kept)."""
    runs = sorted((r for _, r in reps), key=lambda r: r["stats"]["tokens_per_s"])
    best = runs[(len(runs) - 1) // 2]
    best["reps_tokens_per_s"] = [r["stats"]["tokens_per_s"] for _, r in reps]
    return best


def mark_identical(block: list[dict]) -> None:
    """Greedy speculative runs: does the output equal plain's on the same prompt?"""
    plain = {r["temperature"]: r for r in block if r["draft"] == "none"}
    for r in block:
        base = plain.get(r["temperature"])
        if r["draft"] != "none" and r["temperature"] == 0 and base is not None:
            r["first_divergence"] = first_divergence(r["tokens"], base["tokens"])
            r["identical_to_plain"] = r["first_divergence"] is None


def top2_gap(target, prompt: list[int], prefix: list[int]) -> float:
    """The target's gap between its two largest logits where plain decoding chose prefix's next token."""
    import numpy as np

    target.reset()
    ctx = prompt + prefix
    target.forward(ctx[:-1], last_only=True)
    row = np.array(target.forward(ctx[-1:])[0], dtype=np.float64)  # one-token kernel, as plain decoding ran it
    target.reset()
    top = np.partition(row, -2)[-2:]
    return float(top[1] - top[0])


# CLI -------------------------------------------------------------------------------------------------------
def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmark plain vs speculative decoding (speedup, acceptance, latency, memory)",
                       description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "-m", default="smollm2-135m", help="target: known name, .gguf or HF folder (default: smollm2-135m)")
    p.add_argument("--drafts", default="ngram", help="comma list: ngram, self:N, or draft model names (default: ngram)")
    p.add_argument("--ks", default="1,2,4,8,auto", help="comma list of fixed K in 1..8 and/or auto (default: 1,2,4,8,auto)")
    p.add_argument("--temperatures", default="0", help="comma list (default: 0 = greedy); e.g. 0,0.7")
    p.add_argument("--prompts", default=None, help="JSONL {id, category, prompt} or Spec-Bench question.jsonl (default: the shipped set)")
    p.add_argument("--categories", default=None, help="comma list of categories to keep")
    p.add_argument("--per-category", type=int, default=None, help="at most N prompts per category")
    p.add_argument("--max-new-tokens", "-n", type=int, default=128)
    p.add_argument("--ignore-eos", action="store_true", help="always generate --max-new-tokens tokens")
    p.add_argument("--seed", type=int, default=0, help="prompt i uses seed + i in every configuration (default: 0)")
    p.add_argument("--reps", type=int, default=1, help="run every (prompt, configuration) N times, interleaved, "
                   "and keep the median-speed run: less noise on a busy machine (default: 1)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--backend", choices=("llama.cpp", "torch"), default=None)
    p.add_argument("--ctx-size", type=int, default=None, help="default: large enough for the longest prompt")
    p.add_argument("--quick", action="store_true", help="1 prompt per category, 48 new tokens, ks 2,auto (~1 min on smollm2-135m)")
    p.add_argument("--long", action="store_true", help="the long-context set (~1k/2k/4k-token prompts)")
    p.add_argument("--lockstep", action="store_true", help="advance each prompt's configurations one target forward "
                   "each in turn, each on its own clock: pairs out the machine's noise (one KV cache per configuration)")
    p.add_argument("--compare", action="store_true", help="also run transformers' generate (plain, prompt lookup, assisted) on the same weights")
    p.add_argument("--compare-dtype", choices=("bfloat16", "float32"), default="bfloat16", help="transformers' weights dtype for --compare")
    p.add_argument("--out", default=None, help="output folder (default: bench-results/<timestamp>/)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(func=cmd_bench)
    rs = p.add_subparsers(dest="bench_command", metavar="report")
    r = rs.add_parser("report", help="re-render report.md and the plots from a results.json")
    r.add_argument("results", help="a results.json written by ryzanstein bench")
    r.add_argument("--out", default=None, help="output folder (default: the results file's folder)")
    r.add_argument("--no-plots", action="store_true")
    r.set_defaults(func=cmd_report)


def cmd_bench(a: argparse.Namespace) -> int:
    from .bench_report import headline, render, summarize

    if a.reps < 1:
        from .errors import ConfigError

        raise ConfigError(f"invalid --reps {a.reps}: must be an integer >= 1")
    if a.quick:
        a.per_category = a.per_category or QUICK["per_category"]
        a.max_new_tokens = QUICK["max_new_tokens"] if a.max_new_tokens == 128 else a.max_new_tokens
        a.ks = QUICK["ks"] if a.ks == "1,2,4,8,auto" else a.ks
    out = Path(a.out or Path("bench-results") / dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    results = run_bench(a)
    results["summary"] = summarize(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    render(results, out, plots=not a.no_plots)
    print(headline(results["summary"]))
    print(f"\nwrote {out / 'results.json'} and {out / 'report.md'} ({results['run']['wall_s']:.0f} s)", file=sys.stderr)
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from .bench_report import render, summarize
    from .errors import RyzansteinError

    path = Path(a.results)
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RyzansteinError(f"cannot read {path}: {e}") from None
    if results.get("kind") != "ryzanstein-bench" or "runs" not in results:
        raise RyzansteinError(f"{path} is not a ryzanstein bench results.json (no kind/runs)")
    results["summary"] = summarize(results)
    out = Path(a.out) if a.out else path.parent
    out.mkdir(parents=True, exist_ok=True)
    render(results, out, plots=not a.no_plots)
    print(f"wrote {out / 'report.md'}", file=sys.stderr)
    return 0
