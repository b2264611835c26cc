"""One stats dataclass per generation, mergeable across generations.

Vocabulary (as in vLLM): a round is one target forward over [last token + K drafts]; it emits the accepted
drafts plus one recovered or bonus token. `mean_acceptance_length` = tokens emitted per target forward,
including that recovered/bonus token, so plain decoding scores exactly 1.0.
"""
from __future__ import annotations

import resource
import sys
from dataclasses import asdict, dataclass, field

import numpy as np


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far."""
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kb if sys.platform == "darwin" else kb * 1024)


def _grow(xs: list[int], n: int) -> None:
    xs.extend([0] * (n - len(xs)))


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # prompt positions reused from the previous generation's KV cache
    num_tokens: int = 0  # tokens emitted (after EOS / budget / stop-string cut)
    prefill_s: float = 0.0
    decode_s: float = 0.0  # everything after the first token
    ttft_s: float = 0.0  # prompt in -> first token out (prefill + first pick)
    rounds: int = 0  # target forwards after prefill (plain steps included)
    spec_rounds: int = 0  # rounds with K >= 1
    num_draft_tokens: int = 0
    num_accepted: int = 0
    accepted_per_position: list[int] = field(default_factory=list)  # [i]: rounds whose draft i was accepted
    drafted_per_position: list[int] = field(default_factory=list)  # [i]: rounds that drafted a token at i
    accepted_length_hist: list[int] = field(default_factory=list)  # [n]: spec rounds that accepted exactly n
    k_per_round: list[int] = field(default_factory=list)
    draft_s: float = 0.0
    verify_s: float = 0.0
    token_latencies_s: list[float] = field(default_factory=list)  # per emitted token: its round's time / tokens
    predicted_speedup: float = 0.0  # policy auto's own prediction of its speedup over plain decoding
    predicted_tokens_per_s: float = 0.0  # auto's predicted decode rate (compare: decode_tokens_per_s)
    peak_rss_bytes: int = 0
    target_memory_bytes: int = 0
    spec_memory_overhead_bytes: int = 0  # draft weights + draft KV + extra target KV rows
    fallback: str | None = None  # why speculation was switched off mid-generation, if it was
    proposer: str = "none"
    policy: str = "none"
    generations: int = 1

    def observe_round(self, k: int, num_accepted: int, n_emitted: int, draft_s: float, verify_s: float,
                      round_s: float) -> None:
        """Record one target forward that scored k drafts and accepted num_accepted of them."""
        self.rounds += 1
        self.k_per_round.append(k)
        self.draft_s += draft_s
        self.verify_s += verify_s
        if n_emitted:
            self.token_latencies_s.extend([round_s / n_emitted] * n_emitted)
        if k == 0:
            return
        self.spec_rounds += 1
        self.num_draft_tokens += k
        self.num_accepted += num_accepted
        _grow(self.drafted_per_position, k)
        _grow(self.accepted_per_position, k)
        _grow(self.accepted_length_hist, num_accepted + 1)
        for i in range(k):
            self.drafted_per_position[i] += 1
        for i in range(num_accepted):
            self.accepted_per_position[i] += 1
        self.accepted_length_hist[num_accepted] += 1

    def merge(self, other: "GenerationStats") -> "GenerationStats":
        """Totals of two generations (lists add position-wise, latencies concatenate)."""
        out = GenerationStats(**asdict(self))
        for name in ("prompt_tokens", "cached_prompt_tokens", "num_tokens", "prefill_s", "decode_s", "ttft_s",
                     "rounds", "spec_rounds", "num_draft_tokens", "num_accepted", "draft_s", "verify_s",
                     "spec_memory_overhead_bytes", "generations"):
            setattr(out, name, getattr(self, name) + getattr(other, name))
        for name in ("accepted_per_position", "drafted_per_position", "accepted_length_hist"):
            a, b = list(getattr(self, name)), getattr(other, name)
            _grow(a, len(b))
            setattr(out, name, [x + (b[i] if i < len(b) else 0) for i, x in enumerate(a)])
        out.k_per_round = self.k_per_round + other.k_per_round
        out.token_latencies_s = self.token_latencies_s + other.token_latencies_s
        out.peak_rss_bytes = max(self.peak_rss_bytes, other.peak_rss_bytes)
        out.target_memory_bytes = max(self.target_memory_bytes, other.target_memory_bytes)
        out.spec_memory_overhead_bytes = max(self.spec_memory_overhead_bytes, other.spec_memory_overhead_bytes)
        out.fallback = self.fallback or other.fallback
        return out

    # derived ----------------------------------------------------------------------------------------------
    @property
    def acceptance_rate(self) -> float:
        return self.num_accepted / self.num_draft_tokens if self.num_draft_tokens else 0.0

    @property
    def mean_acceptance_length(self) -> float:
        return (self.num_accepted + self.rounds) / self.rounds if self.rounds else 0.0

    @property
    def acceptance_by_position(self) -> list[float]:
        return [a / d if d else 0.0 for a, d in zip(self.accepted_per_position, self.drafted_per_position)]

    @property
    def prefill_tokens_per_s(self) -> float:
        n = self.prompt_tokens - self.cached_prompt_tokens
        return n / self.prefill_s if self.prefill_s > 0 else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens after the first, per second of decoding."""
        return (self.num_tokens - self.generations) / self.decode_s if self.decode_s > 0 and self.num_tokens > self.generations else 0.0

    @property
    def tokens_per_s(self) -> float:
        """All emitted tokens per second of prefill + decode: what a user waits for."""
        total = self.prefill_s + self.decode_s
        return self.num_tokens / total if total > 0 else 0.0

    @property
    def other_s(self) -> float:
        return max(self.decode_s - self.draft_s - self.verify_s, 0.0)

    @property
    def spec_memory_overhead_fraction(self) -> float:
        return self.spec_memory_overhead_bytes / self.target_memory_bytes if self.target_memory_bytes else 0.0

    def latency_percentile(self, q: float) -> float:
        return float(np.percentile(self.token_latencies_s, q)) if self.token_latencies_s else 0.0

    def to_dict(self) -> dict:
        """Everything, raw counts and derived figures, JSON-ready (the names of `--json` output)."""
        d = asdict(self)
        d.pop("token_latencies_s")
        d.update(
            acceptance_rate=self.acceptance_rate,
            mean_acceptance_length=self.mean_acceptance_length,
            acceptance_by_position=self.acceptance_by_position,
            prefill_tokens_per_s=self.prefill_tokens_per_s,
            decode_tokens_per_s=self.decode_tokens_per_s,
            tokens_per_s=self.tokens_per_s,
            other_s=self.other_s,
            spec_memory_overhead_fraction=self.spec_memory_overhead_fraction,
            latency_p50_s=self.latency_percentile(50),
            latency_p95_s=self.latency_percentile(95),
            latency_p99_s=self.latency_percentile(99),
        )
        return d
