"""Draft-length policies: how many tokens to draft (K) before the next verifying forward.

A policy lives beside the loop, its state per generation: `choose()` before a round, `observe(round)` after.
`fixed` and `heuristic` are here; `auto`, which plans from this machine's measured costs, is auto_policy.py.
"""
from __future__ import annotations

from .round import Round


class DraftLengthPolicy:
    name = "policy"

    def choose(self, context: list[int] | None = None) -> int:
        """K for the next round (0 = a plain decoding step); `context` is every token so far, for a policy whose
        plan depends on the text (the hybrid drafter's: whether prompt lookup has a match now)."""
        raise NotImplementedError

    def shadow_k(self) -> int:
        """Tokens to propose without verifying them when choose() said 0 (to watch a free draft)."""
        return 0

    def stop_drafting(self, conf: list[float]) -> bool:
        """Asked by a model draft after each token it drafts, with its confidence in each so far: stop here?"""
        return False

    def catch_up_limit(self) -> int | None:
        """At most this many context tokens a draft model may feed this round before drafting (None: all it
        lacks); one that lacks more only feeds them and drafts nothing."""
        return None

    def observe(self, r: Round) -> None:
        """After a round: what it verified, accepted and emitted, and how long it took."""

    def observe_wall(self, wall_s: float) -> None:
        """The previous round's wall time, from its start to the next round's start."""

    def prediction(self) -> tuple[float, float] | None:
        """(speedup over plain decoding, decode tokens/s) this policy predicted for the rounds it chose, or
        None for a policy that predicts nothing."""
        return None

    def learned(self) -> dict | None:
        """What this generation learned about the machine and the draft, for the engine's next generation."""
        return None


class FixedPolicy(DraftLengthPolicy):
    """Always draft k tokens (k = 0 is plain decoding)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.name = f"fixed:{k}"

    def choose(self, context: list[int] | None = None) -> int:
        return self.k


class HeuristicPolicy(DraftLengthPolicy):
    """The common +2/-1 rule: k += 2 after a fully accepted draft, else k -= 1 (transformers' default)."""

    name = "heuristic"

    def __init__(self, k: int = 4, k_min: int = 1, k_max: int = 8) -> None:
        self.k, self.k_min, self.k_max = k, max(k_min, 1), k_max

    def choose(self, context: list[int] | None = None) -> int:
        return self.k

    def observe(self, r: Round) -> None:
        if r.k == 0:
            return
        self.k = min(self.k + 2, self.k_max) if r.num_accepted == r.k else max(self.k - 1, self.k_min)
