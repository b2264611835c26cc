"""The prompt sets of `ryzanstein bench`: the shipped ones (9 categories x 6, and long-context) or a user's file."""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from ..errors import RyzansteinError


def load_prompts(path: str | None, long: bool = False, categories: list[str] | None = None,
                 per_category: int | None = None) -> list[dict]:
    """Our JSONL ({id, category, prompt}) or Spec-Bench's question.jsonl ({question_id, category, turns})."""
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
