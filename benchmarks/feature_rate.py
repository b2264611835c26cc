"""The rate of distill's feature pass: the target scoring every id against only the head's draft vocabulary.

    .venv/bin/python benchmarks/feature_rate.py --model qwen2.5-coder-1.5b

`ryzanstein distill` runs the target over its training text with the head's layers captured and keeps the
target's top ids per position (distill/train.py), scoring every id. The head drafts only its draft vocabulary,
so the target could score only that (restrict_vocab; docs/distill.md says why distill does not). This times
the same loop both ways, interleaved (`--reps` each), on
held-out documents, with the draft vocabulary of an earlier distill's plan.json (default: the store's run for
the model) or, without one, the most frequent ids of the documents themselves. Writes JSON (tokens/s per pass,
medians) to --out.
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
from ryzanstein.distill import data  # noqa: E402
from ryzanstein.models import load_model, store  # noqa: E402
from ryzanstein.models.head import default_layers  # noqa: E402

TOP_K = 8


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="qwen2.5-coder-1.5b")
    p.add_argument("--plan", help="a distill run's plan.json (default: the store's run for the model, if any)")
    p.add_argument("--tokens", type=int, default=1536, help="held-out tokens per pass")
    p.add_argument("--doc-tokens", type=int, default=512)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="bench-results/feature_rate.json")
    return p


def one_pass(target, docs, cols) -> float:
    n, t0 = 0, time.perf_counter()
    for ids in docs:
        target.reset()
        for s in range(0, len(ids), 128):
            logits = target.score(ids[s:s + 128]).numpy()
            logits = logits[:, cols] if cols is not None else logits
            np.argpartition(-logits, TOP_K, axis=1)[:, :TOP_K]
            m = logits.max(axis=1, keepdims=True)
            np.exp(logits - m, dtype=np.float32).sum(axis=1)
        target.hidden_states(0, len(ids)).astype(np.float16)
        n += len(ids)
    return n / (time.perf_counter() - t0)


def main(argv=None) -> int:
    a = parser().parse_args(argv)
    target = load_model(a.model, backend="native", threads=a.threads, n_ctx=max(1024, a.doc_tokens))
    docs = []
    for d in data.documents(target, code_share=0.3, max_tokens=a.doc_tokens, seed=7, split="held_out"):
        docs.append([int(x) for x in d.tokens][:a.doc_tokens])
        if sum(map(len, docs)) >= a.tokens:
            break
    run_dir = store.home() / "distill" / store.head_path(target.info.path).parent.name  # distill's, by sha256
    plan_path = Path(a.plan) if a.plan else run_dir / "plan.json"
    if plan_path.is_file():
        plan = json.loads(plan_path.read_text())
        d2t, layers = np.asarray(plan["d2t"], dtype=np.int64), plan["layers"]
    else:  # no run yet: the documents' most frequent ids, as a plan would choose from its training text
        counts = np.bincount(np.concatenate(docs), minlength=target.vocab_size)
        d2t = np.sort(np.argsort(-counts, kind="stable")[:8192])
        layers = list(default_layers(target.info.n_layers))
    keep = np.zeros(target.vocab_size, dtype=bool)
    keep[d2t] = True
    target.capture(layers)
    rates: dict[str, list[float]] = {"all_ids": [], "draft_vocab": []}
    for _ in range(a.reps):
        for mode in rates:
            target.restrict_vocab(keep if mode == "draft_vocab" else None)
            rates[mode].append(one_pass(target, docs, d2t if mode == "draft_vocab" else None))
            print(f"{mode}: {rates[mode][-1]:.1f} tokens/s", flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    out = {"date": dt.datetime.now().isoformat(timespec="seconds"), "model": a.model, "threads": a.threads,
           "tokens": sum(map(len, docs)), "doc_tokens": a.doc_tokens, "draft_vocab": int(len(d2t)),
           "tokens_per_s": rates, "median": med, "ratio": med["draft_vocab"] / med["all_ids"]}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1))
    print(f"draft vocabulary / all ids: {out['ratio']:.2f}x ({med['draft_vocab']:.1f} vs {med['all_ids']:.1f} "
          f"tokens/s); wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
