"""The benchmark run: load the target once, run every configuration on every prompt, return the results dict.

Every configuration shares the one target (under --lockstep each gets its own KV caches over its weights);
each run starts from an empty KV cache; the configurations of a prompt run back to back in an order rotated per
prompt, or in lockstep, after one warm-up generation per engine that is not recorded.
"""
from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import sys
import time
from importlib import metadata

import numpy as np
import psutil

from ..config import GenerationConfig, LoadConfig
from ..engine import Engine, build_proposer
from ..machine import cpu_flags, cpu_name, peak_rss_bytes, usable_cores
from ..models import load_model
from ..models.chat import encode_prompt
from .compare import run_compare
from .config import BenchConfig
from .lockstep import StreamClocks, run_in_turn
from ..progress import progress_bar
from .prompts import load_prompts
from .schema import SCHEMA_VERSION, label

FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_bf16")


# configurations --------------------------------------------------------------------------------------------
def make_configs(drafts: list[str], ks: list, temperatures: list[float]) -> list[dict]:
    out = []
    for t in temperatures:
        out.append({"config": "plain", "draft": "none", "k": None, "temperature": t})
        out += [{"config": label(d, k), "draft": d, "k": k, "temperature": t} for d in drafts for k in ks]
    return out


def generation_config_for_run(c: dict, seed: int, b: BenchConfig) -> GenerationConfig:
    """The GenerationConfig of configuration `c` on a prompt with this seed."""
    k = c["k"] if isinstance(c["k"], int) else None
    # plain temperature sampling (no top-k/top-p/min-p), as every earlier run: results stay comparable
    return GenerationConfig(max_new_tokens=b.max_new_tokens, temperature=c["temperature"], top_k=0, top_p=1.0,
                            min_p=0.0, seed=seed, k=k, policy="fixed" if k else "auto", ignore_eos=b.ignore_eos)


def first_divergence(a: list[int], b: list[int]) -> int | None:
    """Index of the first position where two outputs differ (a length difference counts); None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


# machine ---------------------------------------------------------------------------------------------------
def current_rss() -> int:
    return int(psutil.Process().memory_info().rss)


def machine_info() -> dict:
    flags = cpu_flags()
    versions = {"python": platform.python_version()}
    for pkg in ("ryzanstein", "numpy", "torch", "llama-cpp-python", "transformers", "accelerate", "matplotlib"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "usable_cores": usable_cores(),
            "cpu_flags": {f: f in flags for f in FLAGS}, "ram_bytes": int(psutil.virtual_memory().total),
            "platform": platform.platform(), "versions": versions}


def model_info(m) -> dict:
    i = m.info
    return {"name": i.name, "path": i.path, "backend": i.backend, "dtype": i.dtype, "n_layers": i.n_layers,
            "n_ctx": i.n_ctx, "threads": i.threads, "sha256": i.extra.get("sha256")}


def command_line(b: BenchConfig) -> str:
    """A `ryzanstein bench` command line that reproduces this run."""
    parts = ["ryzanstein", "bench", "--model", b.model, "--drafts", ",".join(b.drafts) or "none",
             "--ks", ",".join(map(str, b.ks)), "--temperatures", ",".join(f"{t:g}" for t in b.temperatures),
             "--max-new-tokens", str(b.max_new_tokens), "--seed", str(b.seed), "--reps", str(b.reps)]
    categories = ",".join(b.categories) if b.categories is not None else None
    for flag, v in (("--prompts", b.prompts), ("--categories", categories), ("--per-category", b.per_category),
                    ("--threads", b.threads), ("--backend", b.backend), ("--ctx-size", b.ctx_size)):
        if v is not None:
            parts += [flag, str(v)]
    parts += [f for f, on in (("--long", b.long), ("--ignore-eos", b.ignore_eos), ("--compare", b.compare),
                              ("--lockstep", b.lockstep)) if on]
    return shlex.join(parts)


# the run ---------------------------------------------------------------------------------------------------
def load_target(b: BenchConfig, prompts: list[dict]):
    """The target, with a context big enough for the longest prompt + max_new_tokens (unless ctx_size)."""
    kw = dict(backend=b.backend, threads=b.threads)
    target = load_model(b.model, n_ctx=b.ctx_size, **kw)
    ids = {p["id"]: encode_prompt(target.tokenizer, p["prompt"], chat=True) for p in prompts}
    need = max(map(len, ids.values())) + b.max_new_tokens + 16
    if b.ctx_size is None and need > target.n_ctx:
        n_ctx = min(-(-need // 256) * 256, max(target.info.n_ctx_train, target.n_ctx))
        target.close()
        target = load_model(b.model, n_ctx=n_ctx, **kw)
    too_long = [p["id"] for p in prompts if len(ids[p["id"]]) + 2 > target.n_ctx]
    if too_long:
        print(f"warning: skipping {len(too_long)} prompts longer than the {target.n_ctx}-token context: "
              f"{', '.join(too_long[:5])}", file=sys.stderr)
    return target, ids, too_long


def run_bench(b: BenchConfig) -> dict:
    """Run everything; return the results dict (without summary)."""
    t_start = time.perf_counter()
    cats = list(b.categories) if b.categories is not None else None
    prompts = load_prompts(b.prompts, b.long, cats, b.per_category)
    drafts, ks, temps = list(b.drafts), list(b.ks), list(b.temperatures)
    configs = make_configs(drafts, ks, temps)
    for c in configs:
        generation_config_for_run(c, 0, b)  # validate every setting before loading anything

    target, ids, skipped = load_target(b, prompts)
    prompts = [p for p in prompts if p["id"] not in skipped]
    memory = {"target": vars(target.memory()), "rss_after_target_bytes": current_rss(), "drafts": {}}
    models = {"target": model_info(target), "drafts": {}}
    engines = {"none": Engine.from_models(target, None, LoadConfig(model=b.model, draft="none"))}
    for d in drafts:
        lcfg = LoadConfig(model=b.model, draft=d, backend=b.backend, threads=b.threads, ctx_size=target.n_ctx,
                          allow_memory_overhead=True, draft_vocab=b.draft_vocab)
        before = current_rss()
        eng = Engine.from_models(target, build_proposer(lcfg, target), lcfg)
        after = current_rss()
        engines[d] = eng
        memory["drafts"][d] = {"spec_overhead_bytes": eng.spec_memory_overhead_bytes(8),
                               "rss_after_load_bytes": after, "rss_delta_bytes": after - before}
        models["drafts"][d] = model_info(eng.proposer.model) if eng.proposer.model is not None else {"kind": d}
        if "auto" in ks:  # measure (or read) the cost profiles now, not inside a timed run
            eng.costs.target_profile()
            eng.costs.draft_token_s()

    # the engine each configuration runs on: one per draft, sharing the target; under --lockstep one per
    # configuration, each in KV caches of its own (a twin shares the weights and the cost profiles)
    if b.lockstep:
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
        cfg = generation_config_for_run(c, seed, b)
        return eng.stream(ids[pid], cfg.replace(max_new_tokens=max_new) if max_new else cfg, clock=clock)

    def run_all(order: list[dict], pid: str, seed: int, max_new: int | None = None) -> list:
        """Every configuration of `order` on one prompt: one after another, or in lockstep."""
        if not b.lockstep:
            return [start(c, pid, seed, max_new=max_new).run() for c in order]
        clocks = StreamClocks()
        gens = {_cid(c): start(c, pid, seed, clocks.clock(_cid(c)), max_new) for c in order}
        run_in_turn(gens, clocks)
        return [gens[_cid(c)].result for c in order]

    shortest = min(prompts, key=lambda p: len(ids[p["id"]]))["id"]
    warm = configs if b.lockstep else list({c["draft"]: c for c in configs}.values())
    run_all(warm, shortest, b.seed, max_new=min(16, b.max_new_tokens))  # warm-up, once per engine: not recorded
    memory["rss_after_warmup_bytes"] = current_rss()

    runs: list[dict] = []
    progress = progress_bar(len(prompts) * len(configs) * b.reps, "[bench] runs")
    for i, p in enumerate(prompts):
        seed = b.seed + i
        reps: dict[str, list] = {}
        for rep in range(b.reps):
            order = configs[(i + rep) % len(configs):] + configs[:(i + rep) % len(configs)]  # rotated
            for c, res in zip(order, run_all(order, p["id"], seed)):
                reps.setdefault(_cid(c), []).append((c, run_record(p, c, seed, res)))
                progress.set_postfix_str(f"{p['id']} {c['config']} t={c['temperature']:g}", refresh=False)
                progress.update()
        block = [median_run(rs) for rs in reps.values()]
        mark_identical(block)
        for r in block:  # is each divergence a near-tie of the target, as batched-vs-one-token kernels cause?
            if r["first_divergence"] is not None:
                plain_tokens = next(x["tokens"] for x in block if x["draft"] == "none" and x["temperature"] == 0)
                r["divergence_top2_gap"] = top2_gap(target, ids[p["id"]], plain_tokens[:r["first_divergence"]])
        runs += sorted(block, key=lambda r: configs.index(_cfg(r, configs)))
    memory["peak_rss_bytes"] = max([peak_rss_bytes()] + [r["rss_bytes"] for r in runs])  # ru_maxrss lags a little
    for eng in engines.values():
        if eng.proposer is not None and eng.proposer.model is not None and eng.proposer.owns_weights:
            eng.proposer.model.close()

    results = {
        "schema_version": SCHEMA_VERSION, "kind": "ryzanstein-bench", "machine": machine_info(),
        "run": {"command": command_line(b), "argv": sys.argv,
                "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
                "wall_s": 0.0, "model": b.model, "backend": target.info.backend, "threads": target.info.threads,
                "n_ctx": target.n_ctx, "drafts": drafts, "ks": ks, "temperatures": temps,
                "max_new_tokens": b.max_new_tokens, "seed": b.seed, "reps": b.reps, "ignore_eos": b.ignore_eos,
                "prompts_file": b.prompts or ("long_prompts.jsonl" if b.long else "prompts.jsonl"),
                "categories": cats, "per_category": b.per_category, "quick": b.quick, "long": b.long,
                "lockstep": b.lockstep,
                "n_prompts": len(prompts), "n_runs": len(runs)},
        "models": models, "memory": memory,
        "prompts": [{"id": p["id"], "category": p["category"], "prompt_tokens": len(ids[p["id"]])} for p in prompts],
        "configs": configs, "runs": runs,
    }
    if b.compare:
        results["compare"] = run_compare(b, target, prompts, ids, drafts, ks)
    target.close()
    results["run"]["wall_s"] = round(time.perf_counter() - t_start, 2)
    return results


def _cid(c: dict) -> str:
    return f"{c['config']}@{c['temperature']}"


def _kv_bytes(eng) -> int:
    """The KV caches an engine holds: its target's and a model draft's."""
    draft = eng.proposer and eng.proposer.model
    return eng.target.memory().kv_cache_bytes + (draft.memory().kv_cache_bytes if draft is not None else 0)


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
    target.reset()
    ctx = prompt + prefix
    target.forward(ctx[:-1], last_only=True)
    row = np.array(target.forward(ctx[-1:])[0], dtype=np.float64)  # one-token kernel, as plain decoding ran it
    target.reset()
    top = np.partition(row, -2)[-2:]
    return float(top[1] - top[0])
