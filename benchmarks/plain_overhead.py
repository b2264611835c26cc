"""Python orchestration overhead of plain decoding: Ryzanstein's llama.cpp backend vs a bare llama-cpp-python
decode loop on the same GGUF and thread count, measured side by side in one process, interleaved.

The bare loop is the least Python one can write: one preallocated batch, llama_decode, argmax over a zero-copy
view of the logits row. Bar (docs/benchmarks.md): ours >= 0.9x its decode tokens/s.

    .venv/bin/python benchmarks/plain_overhead.py --model qwen2.5-coder-1.5b --threads 2 --tokens 128 --reps 3
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from ryzanstein import Engine, GenerationConfig  # noqa: E402
from ryzanstein.models import load_model  # noqa: E402
from ryzanstein.models.llamacpp import _init_backend  # noqa: E402

PROMPT = "Write a Python function that parses an ISO 8601 date string and returns a datetime object."


def bare_loop(path: str, prompt_ids: list[int], n_tokens: int, threads: int) -> float:
    """Decode tokens/s of the plainest llama-cpp-python greedy loop (prefill excluded)."""
    import llama_cpp as L

    _init_backend(verbose=False)
    mp = L.llama_model_default_params()
    model = L.llama_model_load_from_file(path.encode(), mp)
    cp = L.llama_context_default_params()
    cp.n_ctx, cp.n_batch, cp.n_ubatch, cp.n_threads, cp.n_threads_batch = 4096, 512, 512, threads, threads
    ctx = L.llama_init_from_model(model, cp)
    n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
    batch = L.llama_batch_init(512, 0, 1)
    for i, t in enumerate(prompt_ids):
        batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.seq_id[i][0] = t, i, 1, 0
        batch.logits[i] = i == len(prompt_ids) - 1
    batch.n_tokens = len(prompt_ids)
    L.llama_decode(ctx, batch)
    tok = int(np.argmax(np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))))
    pos = len(prompt_ids)
    batch.n_tokens, batch.logits[0] = 1, 1
    t0 = time.perf_counter()
    for _ in range(n_tokens - 1):
        batch.token[0], batch.pos[0] = tok, pos
        L.llama_decode(ctx, batch)
        tok = int(np.argmax(np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1), shape=(n_vocab,))))
        pos += 1
    dt = time.perf_counter() - t0
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(model)
    return (n_tokens - 1) / dt


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="qwen2.5-coder-1.5b")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=None, help="write the result JSON here too")
    return ap


def main() -> int:
    a = parser().parse_args()
    target = load_model(a.model, backend="llama.cpp", threads=a.threads, n_ctx=4096)
    engine = Engine.from_models(target)  # plain decoding: no proposer
    ids = engine.encode(PROMPT)
    # ignore_eos: the bare loop does not stop at EOS either
    cfg = GenerationConfig(max_new_tokens=a.tokens, temperature=0.0, ignore_eos=True)
    ours, bare = [], []
    engine.generate(ids, cfg)  # warm-up
    for r in range(a.reps):  # interleaved, so drift hits both alike
        target.reset()
        res = engine.generate(ids, cfg)
        ours.append(res.stats.decode_tokens_per_s)
        bare.append(bare_loop(target.info.path, ids, a.tokens, a.threads))
        print(f"rep {r + 1}: ryzanstein {ours[-1]:.2f} tok/s, bare llama-cpp-python {bare[-1]:.2f} tok/s", file=sys.stderr)
    result = {
        "model": a.model, "threads": a.threads, "new_tokens": a.tokens, "reps": a.reps,
        "ryzanstein_decode_tok_s": ours, "bare_decode_tok_s": bare,
        "median_ryzanstein": statistics.median(ours), "median_bare": statistics.median(bare),
        "ratio_of_medians": statistics.median(ours) / statistics.median(bare),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(json.dumps(result, indent=1))
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
