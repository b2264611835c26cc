"""`ryzanstein bench --compare`: the same prompts through Hugging Face transformers' `generate` on the same
weights, so users see us against what they would otherwise run.

Needs the optional extra (`pip install ryzanstein[compare]`), imported only inside `run_compare`. The weights are
the Hugging Face folder our torch backend converts from the GGUF (dequantized), in --compare-dtype. Methods,
greedy only, on the same prompt token ids and max_new_tokens, interleaved per prompt after one warm-up:
`hf-plain` (plain generate), `hf-lookup:kK` (prompt-lookup decoding, prompt_lookup_num_tokens=K, the largest
fixed K asked for, else 8) and `hf-assisted:<draft>` (assisted generation with transformers' own defaults for
the assistant) for each draft that is a model (not ngram, not self:N).
Tokens/s = new tokens / wall time of the `generate` call (prefill included), as for our runs.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..errors import RyzansteinError
from ..models import hf_folder_for_gguf, store
from .config import BenchConfig
from .markdown import fmt, table
from ..progress import progress_bar
from .schema import short_name
from .summary import geomean


def _hf_folder(spec: str, path: str | None = None, sha: str | None = None) -> Path:
    if path is None:
        res = store.resolve(spec, auto_pull=True)
        path, sha = str(res.path), res.sha256
    p = Path(path)
    return p if p.is_dir() else hf_folder_for_gguf(p, sha)


def _load(folder: Path, dtype):
    import transformers  # the optional compare extra, seconds to import
    from transformers import AutoModelForCausalLM

    key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    return AutoModelForCausalLM.from_pretrained(str(folder), **{key: dtype}).eval()


def run_compare(b: BenchConfig, target, prompts: list[dict], ids: dict[str, list[int]], drafts: list[str], ks: list) -> dict:
    """Time transformers' generate on every prompt; returns results["compare"]."""
    try:
        import torch  # optional here (the compare extra) and seconds to import: only for --compare
        import transformers
    except ImportError as e:
        raise RyzansteinError(f"--compare needs transformers and torch ({e}): pip install 'ryzanstein[compare]'") from None
    torch.set_num_threads(target.info.threads)
    dtype = getattr(torch, b.compare_dtype)
    folder = _hf_folder(target.info.name, target.info.path, target.info.extra.get("sha256"))
    model = _load(folder, dtype)
    lookup_k = max((k for k in ks if isinstance(k, int)), default=8)
    methods = {"hf-plain": {}, f"hf-lookup:k{lookup_k}": {"prompt_lookup_num_tokens": lookup_k}}
    folders = {"target": str(folder)}
    for d in drafts:
        if d != "ngram" and not d.startswith("self:"):
            folders[d] = str(_hf_folder(d))
            methods[f"hf-assisted:{short_name(d)}"] = {"assistant_model": _load(Path(folders[d]), dtype)}
    stops = sorted(target.tokenizer.special.stop_ids)
    gen_cfg = transformers.GenerationConfig(
        max_new_tokens=b.max_new_tokens, do_sample=False, eos_token_id=None if b.ignore_eos else stops,
        pad_token_id=stops[0] if stops else 0)

    def generate(pid: str, kw: dict, max_new: int | None = None) -> tuple[list[int], float]:
        x = torch.tensor([ids[pid]])
        cfg = gen_cfg if max_new is None else transformers.GenerationConfig(**{**gen_cfg.to_dict(), "max_new_tokens": max_new})
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(x, attention_mask=torch.ones_like(x), generation_config=cfg, **kw)
        return out[0, x.shape[1]:].tolist(), time.perf_counter() - t0

    for kw in methods.values():  # warm-up
        generate(prompts[0]["id"], kw, max_new=8)
    runs, progress = [], progress_bar(len(prompts) * len(methods), "[bench] transformers runs")
    for p in prompts:
        block = {}
        for name, kw in methods.items():
            toks, secs = generate(p["id"], kw)
            block[name] = toks
            runs.append({"prompt_id": p["id"], "category": p["category"], "method": name, "num_tokens": len(toks),
                         "seconds": secs, "tokens_per_s": len(toks) / secs if secs > 0 else 0.0,
                         "identical_to_hf_plain": None if name == "hf-plain" else toks == block["hf-plain"]})
            progress.set_postfix_str(f"{p['id']} {name}", refresh=False)
            progress.update()
    return {"library": f"transformers {transformers.__version__}", "dtype": b.compare_dtype,
            "threads": target.info.threads, "folders": folders, "lookup_k": lookup_k,
            "methods": list(methods), "temperature": 0.0, "runs": runs}


def render_compare(results: dict) -> str:
    """Tokens/s of each transformers method, its speedup over transformers' plain and over our plain."""
    cmp = results["compare"]
    ours = {r["prompt_id"]: r["stats"]["tokens_per_s"] for r in results["runs"]
            if r["draft"] == "none" and r["temperature"] == 0}
    hf_plain = {r["prompt_id"]: r["tokens_per_s"] for r in cmp["runs"] if r["method"] == "hf-plain"}
    rows = []
    for m in cmp["methods"]:
        rs = [r for r in cmp["runs"] if r["method"] == m]
        secs = sum(r["seconds"] for r in rs)
        same = [r["identical_to_hf_plain"] for r in rs if r["identical_to_hf_plain"] is not None]
        rows.append([m, f"{sum(r['num_tokens'] for r in rs) / secs:.1f}" if secs else "-",
                     fmt(geomean([r["tokens_per_s"] / hf_plain[r["prompt_id"]] for r in rs if hf_plain.get(r["prompt_id"])])),
                     fmt(geomean([r["tokens_per_s"] / ours[r["prompt_id"]] for r in rs if ours.get(r["prompt_id"])])),
                     f"{sum(same)}/{len(same)}" if same else "-"])
    ours_rows = []
    for c in results["summary"]["configs"]:
        rs = [r for r in results["runs"] if r["config"] == c["config"] and r["temperature"] == 0]
        if rs:
            vs_hf = geomean([r["stats"]["tokens_per_s"] / hf_plain[r["prompt_id"]] for r in rs if hf_plain.get(r["prompt_id"])])
            ours_rows.append([f"ryzanstein {c['config']}", f"{c['overall']['tokens_per_s']:.1f}", fmt(vs_hf),
                              fmt(c["overall"]["speedup_geomean"]), "-"])
    return (f"{cmp['library']}, {cmp['dtype']} weights dequantized from the same GGUF, threads={cmp['threads']}, "
            "greedy. Speedups are geometric means of per-prompt tokens/s ratios.\n\n"
            + table(["method", "tok/s", "vs transformers plain", "vs ryzanstein plain", "same tokens as hf-plain"],
                     rows + ours_rows))
