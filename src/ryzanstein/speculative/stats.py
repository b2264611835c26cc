"""One stats dataclass per generation, fed one Round at a time by the decode loop.

Vocabulary (as in vLLM, see speculative/__init__.py): a round is one target forward over [last token + K drafts]; it
emits the accepted drafts plus one recovered or bonus token. `mean_acceptance_length` = tokens emitted per
target forward, including that recovered/bonus token, so plain decoding scores exactly 1.0.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .round import Round


def mean_acceptance_length(num_accepted: int, rounds: int) -> float | None:
    """Tokens emitted per target forward: (accepted + one recovered or bonus token a round) / rounds; None
    without a round."""
    return (num_accepted + rounds) / rounds if rounds else None


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
    queued_s: float = 0.0  # (server) request in -> its prompt's first rows in a forward: the wait for a slot
    # and for the prompts ahead of it in the batch's prefill
    rounds: int = 0  # target forwards after prefill (plain steps included)
    spec_rounds: int = 0  # rounds with K >= 1
    num_draft_tokens: int = 0
    num_accepted: int = 0
    draft_fed_tokens: int = 0  # context tokens a draft model fed to catch up (a long prompt's prefill, if paid)
    catch_up_rounds: int = 0  # rounds in which a draft model fed context tokens and drafted nothing
    accepted_per_position: list[int] = field(default_factory=list)  # [i]: rounds whose draft i was accepted
    drafted_per_position: list[int] = field(default_factory=list)  # [i]: rounds that drafted a token at i
    accepted_length_hist: list[int] = field(default_factory=list)  # [n]: spec rounds that accepted exactly n
    k_per_round: list[int] = field(default_factory=list)  # drafts verified per round
    k_chosen: list[int] = field(default_factory=list)  # the K the policy chose per round (a draft may be shorter)
    draft_s: float = 0.0
    verify_s: float = 0.0
    token_latencies_s: list[float] = field(default_factory=list)  # per emitted token: its round's time / tokens
    predicted_speedup: float = 0.0  # policy auto's own prediction of its speedup over plain decoding
    predicted_tokens_per_s: float = 0.0  # auto's predicted decode rate (compare: decode_tokens_per_s)
    peak_rss_bytes: int = 0
    target_memory_bytes: int = 0
    spec_memory_overhead_bytes: int = 0  # draft weights + draft KV + extra target KV rows
    fallback: str | None = None  # why speculation was switched off mid-generation, if it was
    draft: str = "none"  # the drafter (LoadConfig.draft's proposer, by name), "none" without one
    policy: str = "none"
    generations: int = 1

    def observe(self, r: Round) -> None:
        """Record one target forward that verified r.k drafts and accepted r.num_accepted of them."""
        k, num_accepted, n_emitted = r.k, r.num_accepted, len(r.emitted)
        draft_s, verify_s, round_s = r.draft_s, r.verify_s, r.round_s
        self.rounds += 1
        self.k_per_round.append(k)
        self.k_chosen.append(k if r.chosen is None else r.chosen)
        self.draft_s += draft_s
        self.verify_s += verify_s
        self.draft_fed_tokens += r.fed
        if n_emitted:
            self.token_latencies_s.extend([round_s / n_emitted] * n_emitted)
        if k == 0:
            self.catch_up_rounds += r.fed > 0
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

    # derived ----------------------------------------------------------------------------------------------
    @property
    def acceptance_rate(self) -> float:
        return self.num_accepted / self.num_draft_tokens if self.num_draft_tokens else 0.0

    @property
    def mean_acceptance_length(self) -> float:
        return mean_acceptance_length(self.num_accepted, self.rounds) or 0.0

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

    def speculation_stopped(self) -> dict | None:
        """Why the generation was not speculating at its end, or None if its last round drafted:
        {"reason": off | draft_failed | policy | no_draft, "detail": ..., "since_round": ...}."""
        if self.fallback:
            return {"reason": "draft_failed", "detail": self.fallback}
        if self.policy == "none":
            return {"reason": "off", "detail": "no draft for this generation (draft none, or k = 0)"}
        last = max((i for i, k in enumerate(self.k_chosen) if k > 0), default=None)
        if last is None or last < len(self.k_chosen) - 1:
            since = 0 if last is None else last + 1
            return {"reason": "policy", "since_round": since,
                    "detail": f"policy {self.policy} chose plain decoding (K = 0) from round {since} on: "
                              "speculating was predicted not to pay"}
        if self.k_per_round[last] == 0:
            return {"reason": "no_draft", "since_round": last,
                    "detail": "the proposer drafted nothing in the last round (prompt lookup found no match, "
                              "or a draft model was still catching up with the context)"}
        return None

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
            speculation_stopped=self.speculation_stopped(),
        )
        return {k: finite_or_none(v) for k, v in d.items()}


def finite_or_none(value):
    """A value for JSON: NaN and infinities (not JSON) become None, in lists too."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [finite_or_none(v) for v in value]
    return value
