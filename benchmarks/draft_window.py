"""What a draft model loses if it sees only the last W tokens of the prompt (a catch-up bounded by a window).

    .venv/bin/python benchmarks/draft_window.py --model qwen2.5-coder-0.5b --categories retrieval,extraction

For each shipped prompt of the categories: `--model`'s greedy answer with the whole context (native backend,
chat template); then `--draft` (default: the same model, so the figure is what the window alone changes) is
teacher-forced over [the last W prompt tokens + that answer], positions starting at 0, and its argmax at each
answer position compared with the answer's token. Prints per prompt and overall the share that agree for each
W; no timing is involved (a window would make a draft's catch-up cheaper; this says what it would cost it).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))  # run from a checkout, installed or not
from ryzanstein import Engine  # noqa: E402
from ryzanstein.bench.prompts import load_prompts  # noqa: E402
from ryzanstein.models import load_model  # noqa: E402


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qwen2.5-coder-0.5b", help="the model whose greedy answers are the reference")
    ap.add_argument("--draft", default=None, help="the windowed model (default: --model)")
    ap.add_argument("--categories", default="retrieval,extraction")
    ap.add_argument("--per-category", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--windows", default="32,64,128,256,0", help="prompt tokens the draft sees; 0 = all")
    ap.add_argument("--threads", type=int, default=1)
    return ap


def main() -> None:
    a = parser().parse_args()
    ref = load_model(a.model, backend="native", threads=a.threads, n_ctx=2048)
    draft = ref if a.draft in (None, a.model) else load_model(a.draft, backend="native", threads=a.threads, n_ctx=2048)
    engine = Engine.from_models(ref)
    windows = [int(w) for w in a.windows.split(",")]
    total = {w: [0, 0] for w in windows}  # agreeing, answer tokens
    for p in load_prompts(None, categories=a.categories.split(","), per_category=a.per_category):
        ids = engine.encode(p["prompt"])
        answer = engine.generate(ids, temperature=0, max_new_tokens=a.max_new_tokens).tokens
        row = []
        for w in windows:
            start = max(0, len(ids) - w) if w else 0
            draft.reset()
            top = draft.score((ids + answer)[start:]).argmax()  # row j predicts the view's token j + 1
            hits = sum(top[len(ids) + i - start - 1] == t for i, t in enumerate(answer))
            total[w][0] += hits
            total[w][1] += len(answer)
            row.append(f"{w or 'all'}:{hits}/{len(answer)}")
        print(p["id"], len(ids), " ".join(row), flush=True)
    print("overall", " ".join(f"{w or 'all'}:{h / n:.3f}" for w, (h, n) in total.items() if n))


if __name__ == "__main__":
    main()
