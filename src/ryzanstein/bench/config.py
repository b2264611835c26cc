"""What one `ryzanstein bench` run measures: a frozen BenchConfig (fields named like the flags), and the
parsers of the flags' comma lists."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

DEFAULT_KS = (1, 2, 4, 8, "auto")
DEFAULT_MAX_NEW_TOKENS = 128
QUICK = dict(per_category=1, max_new_tokens=48, ks=(2, "auto"))  # --quick, where the flag was left at its default


@dataclass(frozen=True)
class BenchConfig:
    """One run: plain decoding and every draft x K x temperature, over the selected prompts."""

    model: str = "smollm2-135m"
    drafts: tuple[str, ...] = ("ngram",)  # ngram, self:N or draft models; plain always runs
    ks: tuple[int | str, ...] = DEFAULT_KS  # fixed K in 1..8 and/or "auto"
    temperatures: tuple[float, ...] = (0.0,)
    prompts: str | None = None  # a JSONL file; None = the shipped set
    categories: tuple[str, ...] | None = None
    per_category: int | None = None
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    ignore_eos: bool = False
    seed: int = 0  # prompt i uses seed + i in every configuration
    reps: int = 1  # each (prompt, configuration) this many times, interleaved; the median-speed run is kept
    threads: int | None = None
    backend: str | None = None
    ctx_size: int | None = None  # None = large enough for the longest prompt
    quick: bool = False
    long: bool = False  # the long-context prompt set
    lockstep: bool = False  # a prompt's configurations advance one target forward each in turn
    compare: bool = False  # also transformers' generate on the same weights
    compare_dtype: str = "bfloat16"
    draft_vocab: int | None = None  # a draft model's reduced output layer (LoadConfig.draft_vocab)

    def __post_init__(self) -> None:
        if self.draft_vocab is not None and self.draft_vocab < 0:
            raise ConfigError(f"invalid --draft-vocab {self.draft_vocab}: must be an integer >= 0 (0 = all ids)")
        if self.reps < 1:
            raise ConfigError(f"invalid --reps {self.reps}: must be an integer >= 1")
        if self.quick:
            object.__setattr__(self, "per_category", self.per_category or QUICK["per_category"])
            if self.max_new_tokens == DEFAULT_MAX_NEW_TOKENS:
                object.__setattr__(self, "max_new_tokens", QUICK["max_new_tokens"])
            if tuple(self.ks) == DEFAULT_KS:
                object.__setattr__(self, "ks", QUICK["ks"])


def parse_drafts(text: str) -> tuple[str, ...]:
    """--drafts: a comma list; "none" (plain) always runs, so it is dropped."""
    return tuple(d.strip() for d in text.split(",") if d.strip() and d.strip() != "none")


def parse_ks(text: str) -> list[int | str]:
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
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"invalid --temperatures {text!r}: a comma list of numbers, e.g. 0,0.7") from None


def parse_categories(text: str | None) -> tuple[str, ...] | None:
    return tuple(c.strip() for c in text.split(",")) if text else None
