"""The CUDA path, run for real (issue 16): what a lent GPU machine runs, in one run of at most ~8 minutes.

Nothing here has run on a GPU yet: it was written and smoke-tested on CPU (`--device cpu --quick`).

The run (steps in this order; each is timed, a failing step is reported and the next one runs, a step that
would overrun --budget-s is skipped and says so; report.md and results.json are rewritten after each step):
 1. the machine: torch, CUDA, the GPU, whether float32 matmuls may use TF32.
 2. SmolLM2-135M: its GGUF assembled from the parts that travelled (below), its sha256 checked, put in a store
    of this run's own (RYZANSTEIN_HOME), converted for the torch backend by the project's own gguf_convert.
 3. the tests on CUDA: tests/test_greedy_equivalence.py (SmolLM2 float32: target-itself, self:4 and ngram x K
    in 1, 2, 4, 8, and auto), tests/test_distribution.py (the chi-square tests on the GPU's logits; the decode
    loop's own sampling distribution end to end) and tests/test_device_path.py (greedy copies back ids only,
    sampling the rows it samples, device reductions equal the host's), with RYZANSTEIN_TEST_DEVICE=cuda.
 4. host synchronisations counted: torch.cuda.set_sync_debug_mode("warn") during greedy and sampled
    generations (plain, ngram, self:8); expected: one per forward (its ids, or its rows when sampling).
 5. Qwen2-1.5B- and Qwen2-0.5B-shaped models, RANDOM WEIGHTS (timing only; their output means nothing), bf16
    and fp32: v(n) for n = 1..16 and plain decode tokens/s; a round of the 1.5B target with the 0.5B draft at
    K = 4 timed against what those costs predict.
 6. the prediction (not a measurement): benchmarks/predict_profile.py with the bf16 1.5B-shaped v(n), the
    0.5B's v(1) as the draft's cost, and the acceptance measured on CPU for the real Qwen2.5-Coder pair
    (benchmarks/results/qwen/summary.json, qwen2.5-coder-0.5b:k8).
 7. SmolLM2 on CUDA, real weights, bf16 then fp32: plain against ngram and self:8 (auto and K = 4), the
    shipped prompts one per category, 128 new tokens, greedy: decode tokens/s, speedup (geometric mean over
    prompts), acceptance, outputs identical to plain (the top-2 logit gap where one is not).

The 64 MiB a device run carries: the tracked working tree travels with every run (~22 MB today) and the GGUF
is 98 MB, and dequantized weights are larger (bf16 270 MB), so SmolLM2 travels as byte-exact parts of its
GGUF over several runs made back to back on one warm machine (warm 30 s after each call). Here, once:

    .venv/bin/python benchmarks/gpu_check.py --prepare

writes .gpu_carry/1..N (git-ignored; N = 3 at today's tree size), each part sized so that its run stays under
64 MiB, the `gguf` package (for the conversion) with the last, and prints the N device calls. Runs 1..N-1 carry
one part each and run `python3 benchmarks/gpu_check.py --stage` (seconds: it checks the part's sha256 and keeps
it in /tmp/ryzanstein-gpu/parts); run N carries the last part and runs the check:

    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out $OUT        (timeout_s 600)

If the machine went cold between calls, a part is missing: the SmolLM2 steps (2, 3, 4, 7) say so and are
skipped, the random-weight steps (5, 6) still run; then rerun the N calls back to back.
Needs on that machine: python3 with torch (CUDA), numpy, safetensors, tokenizers, jinja2, psutil, pytest, scipy
(all in its image); not llama.cpp (its tests skip there) and not this project's venv (src/ is put on the path).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from collections import Counter
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout, installed or not

CARRY = ROOT / ".gpu_carry"  # what --prepare writes here, one folder per device run
WORK = Path(os.environ.get("RYZANSTEIN_GPU_WORK", "/tmp/ryzanstein-gpu"))  # on the device: staged parts, the store
RUN_LIMIT = 64 << 20  # bytes one device run carries, working tree included
MARGIN = 6 << 20  # room left in each run for the tree to grow
SMOL = "smollm2-135m"
QWEN_CPU_RESULTS = ROOT / "benchmarks/results/qwen/summary.json"
QWEN_CONFIG = "qwen2.5-coder-0.5b:k8"
_QWEN = dict(model_type="qwen2", vocab_size=151936, norm_eps=1e-6, rope_theta=1e6, n_ctx_train=32768,
             qkv_bias=True, o_bias=False, tie_embeddings=True)
SHAPES = {  # config.json of Qwen2-1.5B / Qwen2-0.5B (the Qwen2.5-Coder pair's shapes)
    "qwen2-1.5b-shape": dict(_QWEN, dim=1536, n_layers=28, n_heads=12, n_kv_heads=2, head_dim=128, hidden_dim=8960),
    "qwen2-0.5b-shape": dict(_QWEN, dim=896, n_layers=24, n_heads=14, n_kv_heads=2, head_dim=64, hidden_dim=4864),
}
QUICK_SHAPES = {  # --quick: the same code on shapes a CPU runs in seconds
    "qwen2-1.5b-shape": dict(_QWEN, vocab_size=4096, dim=128, n_layers=4, n_heads=4, n_kv_heads=2, head_dim=32,
                             hidden_dim=256),
    "qwen2-0.5b-shape": dict(_QWEN, vocab_size=4096, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16,
                             hidden_dim=128),
}


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(4 << 20):
            h.update(chunk)
    return h.hexdigest()


# here: --prepare -------------------------------------------------------------------------------------------
def travelling_bytes() -> int:
    """What every device run carries besides its parts: tracked and untracked-not-ignored files."""
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         capture_output=True, check=True).stdout.decode()
    return sum((ROOT / p).stat().st_size for p in out.split("\0") if p and (ROOT / p).is_file())


def prepare() -> int:
    """Split the SmolLM2 GGUF into parts that each fit one device run; print the calls to make."""
    import gguf
    from ryzanstein.models import store

    known, src = store.KNOWN_MODELS[SMOL], store.path_of(SMOL)
    if src is None:
        sys.exit(f"error: {SMOL} is not installed here: run ./install.sh")
    probe = CARRY / "1" / "probe"
    if subprocess.run(["git", "-C", str(ROOT), "check-ignore", "-q", str(probe)]).returncode != 0:
        sys.exit("error: .gpu_carry/ is not git-ignored: the parts would travel in every run (add /.gpu_carry/)")
    site = Path(gguf.__file__).parent
    site_bytes = sum(p.stat().st_size for p in site.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    tree = travelling_bytes()
    room = RUN_LIMIT - tree - MARGIN - site_bytes
    if room < 8 << 20:
        sys.exit(f"error: the working tree ({tree / 2**20:.1f} MiB) leaves under 8 MiB a run for the parts")
    n = math.ceil(known.size / room)
    size = math.ceil(known.size / n)
    shutil.rmtree(CARRY, ignore_errors=True)
    with open(src, "rb") as f:
        for i in range(1, n + 1):
            folder = CARRY / str(i)
            folder.mkdir(parents=True)
            part = folder / f"{known.file}.part{i}of{n}"
            part.write_bytes(f.read(size))
            meta = {"model": SMOL, "file": known.file, "index": i, "count": n, "bytes": part.stat().st_size,
                    "sha256": sha256(part), "whole_sha256": known.sha256, "whole_bytes": known.size}
            (folder / "part.json").write_text(json.dumps(meta, indent=1))
    shutil.copytree(site, CARRY / str(n) / "site" / "gguf", ignore=shutil.ignore_patterns("__pycache__"))
    print(f"prepared {n} device runs in {CARRY}: each carries the {tree / 2**20:.1f} MiB tree + a part of at most "
          f"{size / 2**20:.1f} MiB (the last also gguf {version('gguf')}, "
          f"{site_bytes / 2**20:.1f} MiB); limit 64 MiB. Make these calls back to back (warm 30 s after each):")
    for i in range(1, n):
        print(f'  run(command="python3 benchmarks/gpu_check.py --stage", carry=[".gpu_carry/{i}"], timeout_s=120)')
    print(f'  run(command="PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --out $OUT", '
          f'carry=[".gpu_carry/{n}"], timeout_s=600)')
    return 0


# there: --stage and the assembly ----------------------------------------------------------------------------
def parts_found() -> dict[int, tuple[Path, dict]]:
    """Every intact part this machine has (travelled now, or staged by an earlier run), by index."""
    found = {}
    for meta_path in [*CARRY.glob("*/part.json"), *(WORK / "parts").glob("*.json")]:
        meta = json.loads(meta_path.read_text())
        part = meta_path.parent / f"{meta['file']}.part{meta['index']}of{meta['count']}"
        if meta["index"] not in found and part.is_file() and sha256(part) == meta["sha256"]:
            found[meta["index"]] = (part, meta)
    return found


def stage() -> int:
    """Keep the parts that travelled with this run under WORK/parts, for the run that assembles them."""
    (WORK / "parts").mkdir(parents=True, exist_ok=True)
    found = parts_found()
    for i, (part, meta) in sorted(found.items()):
        if part.parent != WORK / "parts":
            shutil.copy(part, WORK / "parts" / part.name)
            (WORK / "parts" / f"part{i}.json").write_text(json.dumps(meta))
    count = next(iter(found.values()))[1]["count"] if found else "?"
    print(f"staged SmolLM2 GGUF parts {sorted(found)} of {count} in {WORK / 'parts'}")
    return 0


def assemble_smollm2(user_store_path: Path | None) -> tuple[Path | None, str]:
    """The SmolLM2 GGUF in this run's store: assembled from its parts (sha256 checked), or linked from this
    machine's own store when no part travelled (a CPU smoke run); (None, why) if parts are missing."""
    from ryzanstein.models import store

    known = store.KNOWN_MODELS[SMOL]
    dest = store.home() / "models" / SMOL / known.file
    if store.path_of(SMOL) == dest:
        return dest, "already in this run's store"
    found = parts_found()
    if not found and user_store_path is not None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.symlink_to(user_store_path)
        return dest, f"no parts travelled: linked from {user_store_path}"
    count = next(iter(found.values()))[1]["count"] if found else None
    missing = [i for i in range(1, (count or 0) + 1) if i not in found] if count else ["all"]
    if missing:
        return None, (f"SmolLM2 parts {missing} are missing: the runs before this one did not reach this machine "
                      "(it went cold between calls?); rerun the calls --prepare printed, back to back")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        for i in range(1, count + 1):
            with open(found[i][0], "rb") as f:
                shutil.copyfileobj(f, out)
    if sha256(tmp) != known.sha256:
        return None, "the assembled GGUF's sha256 does not match the store's: a part is corrupt"
    tmp.rename(dest)
    return dest, f"assembled from {count} parts, sha256 ok"


# the steps -------------------------------------------------------------------------------------------------
class Skip(Exception):
    """A step that cannot run here, and why (not a failure)."""


class Failed(Exception):
    """A step whose check failed, with what it saw (no traceback: there is nothing wrong with the script)."""


class Run:
    """What the steps share: options, the budget, the report (markdown) and the results (JSON)."""

    def __init__(self, a: argparse.Namespace, user_store_path: Path | None, pythonpath: list[str]) -> None:
        self.a, self.t0 = a, time.perf_counter()
        self.user_store_path, self.pythonpath = user_store_path, pythonpath  # this machine's SmolLM2; src/, gguf
        self.dtypes = ["float32"] if a.quick else ["bfloat16", "float32"]
        self.shapes: dict = {}  # step 5's measurements, step 6's input
        default = ROOT / "bench-results" / time.strftime("gpu_check-%Y%m%d-%H%M%S")
        self.out = Path(a.out or os.environ.get("OUT") or default)
        self.out.mkdir(parents=True, exist_ok=True)
        self.md: list[str] = []
        self.results: dict = {"device": a.device, "quick": a.quick, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                              "steps": {}}
        self.smol: Path | None = None

    def left(self) -> float:
        return self.a.budget_s - (time.perf_counter() - self.t0)

    def say(self, line: str = "") -> None:
        print(line, flush=True)
        self.md.append(line)

    def step(self, name: str, need_s: float, fn, *args) -> None:
        """Run one step if the budget has need_s left; record its time, its result or its error."""
        self.say(f"\n## {name}\n")
        if self.left() < need_s:
            self.say(f"skipped: {self.left():.0f} s of the budget left, this step needs ~{need_s:.0f} s")
            self.results["steps"][name] = {"skipped": "budget"}
        else:
            t = time.perf_counter()
            try:
                self.results["steps"][name] = {"result": fn(self, *args)}
            except Skip as e:
                self.say(f"skipped: {e}")
                self.results["steps"][name] = {"skipped": str(e)}
            except Failed as e:
                self.say(f"FAILED: {e}")
                self.results["steps"][name] = {"error": str(e)}
            except Exception as e:  # one step's failure must not cost the others
                self.say(f"FAILED: {type(e).__name__}: {e}")
                self.say("```\n" + traceback.format_exc()[-3000:] + "```")
                self.results["steps"][name] = {"error": f"{type(e).__name__}: {e}"}
            self.results["steps"][name]["wall_s"] = round(time.perf_counter() - t, 1)
            self.say(f"\n({time.perf_counter() - t:.1f} s)")
        (self.out / "report.md").write_text("# gpu_check\n" + "\n".join(self.md) + "\n")
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1))


def step_machine(r: Run) -> dict:
    import numpy as np
    import torch

    d = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
         "numpy": np.__version__, "cuda_available": torch.cuda.is_available(),
         "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "fp32_precision": torch.get_float32_matmul_precision()}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        d.update(gpu=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gib=round(p.total_memory / 2**30, 1),
                 multiprocessors=p.multi_processor_count)
    r.say(" ".join(f"{k}={v}" for k, v in d.items()))
    return d


def step_smollm2(r: Run) -> dict:
    from ryzanstein.models import load_model

    r.smol, how = assemble_smollm2(r.user_store_path)
    if r.smol is None:
        raise Skip(how)
    r.say(how)
    t = time.perf_counter()
    m = load_model(SMOL, backend="torch", dtype="float32", device=r.a.device, n_ctx=256)  # converts once
    r.say(f"converted and loaded on {m.device} in {time.perf_counter() - t:.1f} s: {m.info.n_layers} layers")
    out = {"how": how, "load_s": round(time.perf_counter() - t, 1), "path": str(r.smol)}
    del m
    return out


def step_tests(r: Run) -> dict:
    if r.smol is None:
        raise Skip("SmolLM2 is not here (step 2): the tests need it")
    files = ["tests/test_greedy_equivalence.py", "tests/test_distribution.py", "tests/test_device_path.py"]
    cmd = [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", *files]
    if r.a.quick:
        cmd += ["-k", "ngram-4 or device_path or end_to_end"]
    paths = [*r.pythonpath, *filter(None, [os.environ.get("PYTHONPATH")])]  # carried wheels' path kept
    env = {**os.environ, "RYZANSTEIN_TEST_DEVICE": r.a.device, "PYTHONPATH": os.pathsep.join(paths)}
    log, limit = r.out / "pytest.log", max(r.left() - 150, 60)  # leave the later steps ~150 s
    r.say(f"`RYZANSTEIN_TEST_DEVICE={r.a.device} {' '.join(cmd[1:])}` (limit {limit:.0f} s; log: pytest.log)")
    with open(log, "w") as f:
        try:
            rc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=limit).returncode
        except subprocess.TimeoutExpired:
            rc = None
    lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
    r.say("```\n" + "\n".join(lines[-25:]) + "\n```")
    if rc != 0:
        raise Failed(f"pytest {'timed out' if rc is None else f'exited {rc}'}: {lines[-1] if lines else 'no output'}")
    return {"returncode": rc, "summary": lines[-1] if lines else ""}


def load_smol(r: Run, dtype: str):
    from ryzanstein.models import load_model

    if r.smol is None:
        raise Skip("SmolLM2 is not here (step 2)")
    return load_model(SMOL, backend="torch", dtype=dtype, device=r.a.device, n_ctx=2048)


def step_syncs(r: Run) -> dict:
    import torch
    from ryzanstein import Engine, GenerationConfig
    from ryzanstein.models.torch_model import TorchModel
    from ryzanstein.speculative.proposers import ModelProposer, NgramProposer

    target = load_smol(r, r.dtypes[0])
    cuda = r.a.device == "cuda"
    score, calls = TorchModel._score, [0]

    def counted(self, *a, **kw):
        calls[0] += 1
        return score(self, *a, **kw)

    self8 = ModelProposer(target.truncated(8), name="self:8", owns_weights=False)
    cases = [("plain greedy", None, None, 0.0), ("ngram K=4 greedy", NgramProposer(), 4, 0.0),
             ("self:8 K=4 greedy", self8, 4, 0.0), ("self:8 K=4 sampled (t=0.8)", self8, 4, 0.8)]
    out = {}
    TorchModel._score = counted
    try:
        for name, proposer, k, temp in cases:
            eng = Engine.from_models(target, proposer)
            cfg = GenerationConfig(max_new_tokens=16 if r.a.quick else 64, temperature=temp, k=k, seed=1)
            eng.generate("Write a haiku about the sea.", cfg)  # warm-up
            eng.reset()
            calls[0] = 0
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                if cuda:
                    torch.cuda.set_sync_debug_mode("warn")
                res = eng.generate("Write a haiku about the sea.", cfg)
                if cuda:
                    torch.cuda.set_sync_debug_mode(0)
            syncs = [w for w in caught if "synchronizing CUDA operation" in str(w.message)]
            where = Counter(f"{Path(w.filename).name}:{w.lineno}" for w in syncs)
            out[name] = {"forwards": calls[0], "syncs": len(syncs) if cuda else None, "where": dict(where),
                         "tokens": res.num_tokens}
            r.say(f"- {name}: {res.num_tokens} tokens, {calls[0]} forwards (target + draft), host syncs: "
                  + (f"{len(syncs)} at {dict(where)}" if cuda else "not counted (no CUDA)"))
    finally:
        TorchModel._score = score
    if cuda:
        r.say("expected: syncs == forwards (one copy back per forward: its ids when greedy, its rows when sampled)")
        if any(c["syncs"] != c["forwards"] for c in out.values()):
            raise Failed("host synchronisations other than one per forward: see where above")
    return out


def synthetic_tokenizer(folder: Path, vocab_size: int):
    """A word-level tokenizer with vocab_size ids ("w0".."wN"), for random-weight models: ids, not text."""
    import tokenizers
    from ryzanstein.models.hf_tokenizer import HFTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel({f"w{i}": i for i in range(vocab_size)}, unk_token="w0"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok.save(str(folder / "tokenizer.json"))
    (folder / "config.json").write_text(json.dumps({"eos_token_id": 0}))
    return HFTokenizer(folder)


def decode_rate(model, proposer=None, k=None, n_new=128, prompt_len=128, reps=3) -> tuple[float, object]:
    """Median decode tokens/s of greedy generations of n_new tokens after a random prompt (ignore_eos)."""
    import numpy as np
    from ryzanstein import Engine, GenerationConfig

    eng = Engine.from_models(model, proposer)
    prompt = np.random.default_rng(0).integers(1, model.vocab_size, prompt_len).tolist()
    cfg = GenerationConfig(max_new_tokens=n_new, temperature=0.0, k=k, ignore_eos=True)
    runs = []
    for i in range(reps + 1):  # the first is a warm-up
        eng.reset()
        res = eng.generate(prompt, cfg)
        if i:
            runs.append(res.stats)
    stats = sorted(runs, key=lambda s: s.decode_tokens_per_s)[(len(runs) - 1) // 2]
    return stats.decode_tokens_per_s, stats


def step_shapes(r: Run) -> dict:
    import torch
    from ryzanstein.models.torch_model import ModelArgs, TorchModel
    from ryzanstein.speculative.costs import measure
    from ryzanstein.speculative.proposers import ModelProposer

    shapes = QUICK_SHAPES if r.a.quick else SHAPES
    tok = synthetic_tokenizer(WORK / "synthetic_tokenizer", next(iter(shapes.values()))["vocab_size"])
    n_new, ctx = (16, 16) if r.a.quick else (128, 128)
    out = r.shapes  # filled as it goes: step 6 reads it
    r.say("RANDOM WEIGHTS (timing only: the tokens mean nothing, acceptance neither).\n")
    r.say("| model | dtype | v(1) ms | v(n)/v(1) for n = 2, 4, 8, 16 | plain decode tok/s |")
    r.say("|---|---|---|---|---|")
    for dtype in r.dtypes:
        models = {}
        for name, shape in shapes.items():
            m = TorchModel.random(ModelArgs(**shape), tok, name=name, n_ctx=1024, dtype=dtype, device=r.a.device)
            v = measure(m, context=ctx, reps=2 if r.a.quick else 5, quiet=True).v_s
            rate, _ = decode_rate(m, n_new=n_new, prompt_len=ctx, reps=1 if r.a.quick else 3)
            models[name] = m
            out[f"{name}:{dtype}"] = {"v_s": v, "decode_tokens_per_s": rate}
            ratios = ", ".join(f"{v[n - 1] / v[0]:.2f}" for n in (2, 4, 8, 16))
            r.say(f"| {name} | {dtype} | {v[0] * 1e3:.2f} | {ratios} | {rate:.1f} |")
        t, d = models["qwen2-1.5b-shape"], models["qwen2-0.5b-shape"]
        _, st = decode_rate(t, ModelProposer(d), k=4, n_new=n_new, prompt_len=ctx, reps=1)
        vt, vd = out[f"qwen2-1.5b-shape:{dtype}"]["v_s"], out[f"qwen2-0.5b-shape:{dtype}"]["v_s"]
        measured, predicted = st.decode_s / st.rounds, 4 * vd[0] + vt[4]
        out[f"pair:{dtype}"] = {"round_s": measured, "predicted_round_s": predicted, "rounds": st.rounds}
        r.say(f"| 1.5B + 0.5B draft, K=4 | {dtype} | round {measured * 1e3:.2f} ms, predicted 4 v_d(1) + v_t(5) = "
              f"{predicted * 1e3:.2f} ms | | |")
        del models, t, d
        if r.a.device == "cuda":
            torch.cuda.empty_cache()
    return out


def step_predict(r: Run) -> dict:
    gpu = r.results["steps"].get("1. machine", {}).get("result", {}).get("gpu", r.a.device)
    out = {}
    for dtype in r.dtypes:
        vt, vd = r.shapes[f"qwen2-1.5b-shape:{dtype}"]["v_s"], r.shapes[f"qwen2-0.5b-shape:{dtype}"]["v_s"]
        prof = {"note": f"measured by benchmarks/gpu_check.py on {gpu}, {dtype}, RANDOM-weight Qwen2-1.5B/0.5B "
                        "shapes; draft_ratio = the 0.5B shape's v(1) / the 1.5B shape's v(1)",
                "version": 1, "key": {"model": "qwen2-1.5b-shape", "device": gpu, "dtype": dtype},
                "v_s": vt, "draft_ratio": vd[0] / vt[0]}
        path = r.out / f"profile_qwen1.5b_{dtype}.json"
        path.write_text(json.dumps(prof, indent=1))
        p = subprocess.run([sys.executable, str(ROOT / "benchmarks/predict_profile.py"), str(QWEN_CPU_RESULTS),
                            str(path), "--config", QWEN_CONFIG], capture_output=True, text=True, timeout=60)
        r.say(f"{dtype}: `benchmarks/predict_profile.py {QWEN_CPU_RESULTS.relative_to(ROOT)} {path.name} "
              f"--config {QWEN_CONFIG}`\n```\n{p.stdout}{p.stderr}```")
        out[dtype] = {"profile": prof, "table": p.stdout}
    return out


def median_run(results: list):
    """The run of median decode speed (the lower middle of an even count)."""
    return sorted(results, key=lambda x: x.stats.decode_tokens_per_s)[(len(results) - 1) // 2]


def step_smollm2_speedup(r: Run, dtype: str) -> dict:
    from ryzanstein import Engine, GenerationConfig
    from ryzanstein.bench.prompts import load_prompts
    from ryzanstein.bench.runner import first_divergence, top2_gap
    from ryzanstein.bench.summary import geomean
    from ryzanstein.speculative.proposers import ModelProposer, NgramProposer

    target = load_smol(r, dtype)
    cats = ["code", "summarization"] if r.a.quick else None
    prompts = load_prompts(None, categories=cats, per_category=1)
    n_new, reps = (16, 1) if r.a.quick else (128, r.a.reps)
    self8 = ModelProposer(target.truncated(8), name="self:8", owns_weights=False)
    engines = {"plain": Engine.from_models(target), "ngram": Engine.from_models(target, NgramProposer()),
               "self:8": Engine.from_models(target, self8)}
    configs = [("plain", None)] + [(d, k) for d in ("ngram", "self:8") for k in ("auto", 4)]
    for eng in engines.values():  # warm-up; auto measures its costs (v(n) on this device) here
        eng.reset()
        eng.generate("Hello", GenerationConfig(max_new_tokens=8, temperature=0.0))
    runs: dict = {}
    for rep in range(reps):
        for i, p in enumerate(prompts):
            for j in range(len(configs)):
                d, k = configs[(i + j + rep) % len(configs)]  # order rotated per prompt and repeat
                eng = engines[d]
                eng.reset()
                cfg = GenerationConfig(max_new_tokens=n_new, temperature=0.0, seed=i, k=k if k != "auto" else None)
                runs.setdefault((d, k), {}).setdefault(i, []).append(eng.generate(p["prompt"], cfg))
    plain = {i: median_run(rs) for i, rs in runs[("plain", None)].items()}
    prof = engines["ngram"].costs.target_profile().v_s
    ratios = ", ".join(f"{prof[n - 1] / prof[0]:.2f}" for n in (2, 4, 8, 16))
    r.say(f"{target.info.name} {dtype} on {target.device}: v(1) = {prof[0] * 1e3:.2f} ms, v(n)/v(1) for n = 2, 4, 8, "
          f"16: {ratios}; {len(prompts)} prompts x {n_new} tokens, {reps} repeat(s), greedy")
    r.say("\n| config | decode tok/s | speedup (decode) | speedup (end to end) | acceptance | tokens/forward "
          "| identical to plain |")
    r.say("|---|---|---|---|---|---|---|")
    out = {"v_s": prof, "configs": {}}
    for d, k in configs:
        med = {i: median_run(rs) for i, rs in runs[(d, k)].items()}
        dec = geomean([med[i].stats.decode_tokens_per_s / plain[i].stats.decode_tokens_per_s for i in med])
        e2e = geomean([med[i].stats.tokens_per_s / plain[i].stats.tokens_per_s for i in med])
        drafted = sum(m.stats.num_draft_tokens for m in med.values())
        acc = sum(m.stats.num_accepted for m in med.values()) / drafted if drafted else 0.0
        tpf = statistics.mean(m.stats.mean_acceptance_length for m in med.values())
        gaps = []
        for i, m in med.items():
            div = first_divergence(m.tokens, plain[i].tokens)
            if div is not None:
                ids = engines["plain"].encode(prompts[i]["prompt"])
                gaps.append(round(top2_gap(target, ids, plain[i].tokens[:div + 1]), 3))
        rate = statistics.mean(m.stats.decode_tokens_per_s for m in med.values())
        name = "plain" if d == "plain" else f"{d}:{'auto' if k == 'auto' else f'k{k}'}"
        same = f"{len(med) - len(gaps)}/{len(med)}" + (f" (top-2 gaps at divergence {gaps})" if gaps else "")
        x = lambda v: f"{v:.2f}x" if v else "-"  # noqa: E731 (geomean is None without a positive rate)
        r.say(f"| {name} | {rate:.1f} | {x(dec)} | {x(e2e)} | {acc:.0%} | {tpf:.2f} | {same} |")
        out["configs"][name] = {"decode_tokens_per_s": rate, "decode_speedup": dec, "e2e_speedup": e2e,
                                "acceptance": acc, "tokens_per_forward": tpf, "divergence_gaps": gaps}
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prepare", action="store_true", help="here: split SmolLM2 into parts for the device runs")
    ap.add_argument("--stage", action="store_true", help="there: keep the part that travelled with this run")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: a smoke run of the same code")
    ap.add_argument("--quick", action="store_true", help="tiny shapes, few prompts and tokens: a smoke run")
    ap.add_argument("--reps", type=int, default=2, help="SmolLM2 runs: repeats per prompt (median kept)")
    ap.add_argument("--budget-s", type=float, default=450.0, help="stop starting steps after this (default 450)")
    ap.add_argument("--out", default=None, help="report folder (default: $OUT, else bench-results/gpu_check-*)")
    return ap


def main() -> int:
    a = parser().parse_args()
    if a.prepare:
        return prepare()
    if a.stage:
        return stage()
    import torch

    if a.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA GPU visible to torch here; use --device cpu for a smoke run", file=sys.stderr)
        return 2
    from ryzanstein.models import store

    user_store_path = store.path_of(SMOL)  # this machine's own store, before the run's own replaces it
    os.environ["RYZANSTEIN_HOME"] = str(WORK / "home")
    site = next(iter(sorted(CARRY.glob("*/site"))), None)  # the gguf package, travelled with the last part
    pythonpath = [str(ROOT / "src")] + ([str(site)] if site else [])
    sys.path[1:1] = pythonpath[1:]
    r = Run(a, user_store_path, pythonpath)
    r.say(f"device={a.device} quick={a.quick} budget={a.budget_s:.0f}s out={r.out}")
    r.step("1. machine", 0, step_machine)
    r.step("2. SmolLM2-135M (real weights)", 30, step_smollm2)
    r.step("3. tests on the device", 120, step_tests)
    r.step("4. host synchronisations", 20, step_syncs)
    r.step("5. Qwen2-1.5B/0.5B shapes, random weights: v(n) and decode tok/s", 60, step_shapes)
    r.step("6. predicted speedup for the Qwen pair (acceptance measured on CPU)", 5, step_predict)
    for dtype in r.dtypes:
        r.step(f"7. SmolLM2 + ngram / self:8 on {a.device}, {dtype}", 60, step_smollm2_speedup, dtype)
    r.say(f"\ndone in {time.perf_counter() - r.t0:.0f} s; report: {r.out / 'report.md'}")
    failed = [k for k, v in r.results["steps"].items() if "error" in v]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
