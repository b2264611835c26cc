"""Two builds of the native extension side by side: is a kernel change faster, slower, or noise?

    .venv/bin/python benchmarks/native_ab.py --old /tmp/old/_native.so --new src/ryzanstein/models/_native*.so
    .venv/bin/python benchmarks/native_ab.py --old OLD.so --new NEW.so --model qwen2.5-coder-1.5b --rounds 4

Build the old one from another checkout (`git archive REV | tar -x -C /tmp/old && cd /tmp/old && python
setup.py build_ext --inplace`). Two measurements, both greedy-free and on an otherwise idle machine:
- per type (default): both builds loaded in one process, the same random weights (4096 x 1536) of every type
  in each, `Tensor.matmul` at n = 1, 8 and 16 rows, the two builds alternating within every repeat (order
  flipped each repeat); the paired ratio new/old, median over repeats. The outputs must be equal bit for bit.
  Weights of this size sit in L3, so this prices the kernels' compute, not DRAM.
- --model M: one process per build and round, rounds alternating the order, each loading M on its build:
  v(1), v(8), v(16) after a 256-token context (median of 7) and 48 one-token decode steps (median); the
  medians over rounds. Weights stream from memory here, as in real decoding.
Writes JSON (default bench-results/native_ab.json) and prints a table.
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# type id -> (columns of a block, bytes of a block, offsets of its f16 scale fields; None = a float type)
TYPES = {2: (32, 18, [0]), 3: (32, 20, [0, 2]), 6: (32, 22, [0]), 8: (32, 34, [0]), 12: (256, 144, [0, 2]),
         14: (256, 210, [208]), 1: (32, 64, None), 30: (32, 64, None), 0: (32, 128, None)}


def load_ext(so: str):
    """The extension module in file `so` (two builds can live in one process: each file is its own module)."""
    spec = importlib.util.spec_from_file_location("ryzanstein.models._native", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def weights(rng: np.random.Generator, tid: int, rows: int, cols: int) -> bytes:
    """Random GGUF-format rows of a type, with small positive f16 scales (finite, realistic magnitudes)."""
    bc, bb, offs = TYPES[tid]
    if offs is None:
        v = rng.standard_normal(rows * cols).astype(np.float32)
        return {0: v, 1: v.astype(np.float16), 30: (v.view(np.uint32) >> 16).astype(np.uint16)}[tid].tobytes()
    raw = rng.integers(0, 256, size=(rows * (cols // bc), bb), dtype=np.uint8)
    for o in offs:
        raw[:, o:o + 2] = (rng.random(len(raw)) * 0.01 + 0.001).astype(np.float16).view(np.uint8).reshape(-1, 2)
    return raw.tobytes()


def per_type(old: str, new: str, isa: str, threads: int, reps: int, rows: int = 4096, cols: int = 1536) -> dict:
    mods = {"old": load_ext(old), "new": load_ext(new)}
    rng = np.random.default_rng(1)
    out = {}
    for tid in TYPES:
        data = weights(rng, tid, rows, cols)
        ts = {k: m.Tensor(tid, rows, cols, data, len(data) // rows) for k, m in mods.items()}
        name = mods["new"].type_name(tid)
        for n in (1, 8, 16):
            x = rng.standard_normal(n * cols).astype(np.float32)
            ys = {k: np.zeros(n * rows, np.float32) for k in ts}
            inner = max(1, (16 if TYPES[tid][2] is None else 64) // n)  # ~1-10 ms per sample
            samples: dict[str, list[float]] = {k: [] for k in ts}
            for k in ts:
                ts[k].matmul(x, n, ys[k], isa, threads)  # warm-up
            for r in range(reps):
                for k in (("old", "new") if r % 2 == 0 else ("new", "old")):
                    t0 = time.perf_counter()
                    for _ in range(inner):
                        ts[k].matmul(x, n, ys[k], isa, threads)
                    samples[k].append((time.perf_counter() - t0) / inner)
            if not np.array_equal(ys["old"], ys["new"]):
                raise SystemExit(f"error: {name} at n={n}: the two builds' outputs differ")
            out[f"{name} n={n}"] = {
                "old_ms": 1e3 * statistics.median(samples["old"]), "new_ms": 1e3 * statistics.median(samples["new"]),
                "new_over_old": statistics.median(b / a for a, b in zip(samples["old"], samples["new"]))}
    return out


CHILD = "--child"


def model_child(so: str, model: str, threads: int) -> dict:
    """In a child process: `model` loaded on the build in `so`; v(n) and decode steps in milliseconds."""
    sys.path.insert(0, str(ROOT / "src"))
    import ryzanstein.models.native as native
    from ryzanstein.models import load_model

    ext = load_ext(so)
    native._ext = lambda: ext  # this build, not the installed one
    m = load_model(model, backend="native", threads=threads, n_ctx=1024)
    ids = m.tokenizer.encode("def fibonacci(n):\n    " * 20)[:256]
    m.reset()
    m.forward(ids, last_only=True)
    res = {}
    for n in (1, 8, 16):
        ts = []
        for _ in range(7):
            t0 = time.perf_counter()
            m.forward(list(range(100, 100 + n)))
            ts.append(time.perf_counter() - t0)
            m.truncate(len(ids))
        res[f"v{n}_ms"] = 1e3 * statistics.median(ts)
    tok, ts = ids[-1], []
    for _ in range(48):
        t0 = time.perf_counter()
        logits = m.forward([tok], last_only=True)
        ts.append(time.perf_counter() - t0)
        tok = int(np.asarray(logits)[-1].argmax())
    res["decode_ms"] = 1e3 * statistics.median(ts)
    return res


def per_model(old: str, new: str, model: str, threads: int, rounds: int) -> dict:
    runs: dict[str, list[dict]] = {"old": [], "new": []}
    for r in range(rounds):
        for k in (("old", "new") if r % 2 == 0 else ("new", "old")):
            so = old if k == "old" else new
            p = subprocess.run([sys.executable, __file__, CHILD, so, model, str(threads)], capture_output=True,
                               text=True, check=True)
            runs[k].append(json.loads(p.stdout.strip().splitlines()[-1]))
    keys = runs["old"][0].keys()
    return {k: {"old_ms": statistics.median(x[k] for x in runs["old"]),
                "new_ms": statistics.median(x[k] for x in runs["new"]), "runs": {b: [x[k] for x in runs[b]] for b in runs}}
            for k in keys}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", required=True, help="the old build's extension file (_native*.so)")
    ap.add_argument("--new", required=True, help="the new build's extension file")
    ap.add_argument("--isa", default="avx2", choices=("c", "avx2", "avx512-vnni"), help="per type: the kernels to time")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7, help="per type: repeats of each pair")
    ap.add_argument("--model", default=None, help="time a model's forwards instead (one process per build and round)")
    ap.add_argument("--rounds", type=int, default=4, help="with --model: rounds of the two builds")
    ap.add_argument("--out", default="bench-results/native_ab.json")
    return ap


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == CHILD:
        print(json.dumps(model_child(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
        return
    a = parser().parse_args()
    if a.model:
        res = per_model(a.old, a.new, a.model, a.threads, a.rounds)
        rows = [f"| {k} | {v['old_ms']:.1f} | {v['new_ms']:.1f} | {v['new_ms'] / v['old_ms']:.3f} |" for k, v in res.items()]
    else:
        res = per_type(a.old, a.new, a.isa, a.threads, a.reps)
        rows = [f"| {k} | {v['old_ms']:.3f} | {v['new_ms']:.3f} | {v['new_over_old']:.3f} |" for k, v in res.items()]
    print("| case | old ms | new ms | new / old |\n|---|---|---|---|\n" + "\n".join(rows))
    doc = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "args": vars(a), "results": res}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(out)


if __name__ == "__main__":
    main()
