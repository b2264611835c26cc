"""Draft-length policies: how many tokens to draft before the next verifying forward.

A policy lives beside the loop, its state per generation: `choose()` before a round, `observe()` after.
"""
from __future__ import annotations


class DraftLengthPolicy:
    name = "policy"
    stop_drafting = None  # or f(confidences so far) -> bool, asked by a model draft after each token

    def choose(self) -> int:
        raise NotImplementedError

    def shadow_k(self) -> int:
        """Tokens to propose without verifying them when choose() said 0 (to watch a free draft)."""
        return 0

    def observe(self, k: int, num_accepted: int, draft_s: float, verify_s: float,
                shadow: list[int] | None = None, emitted: list[int] | None = None,
                conf: list[float] | None = None) -> None:
        """After a round: k drafts verified, num_accepted kept; `shadow` = an unverified draft, if any;
        `conf` = a model draft's probability for each token it proposed."""

    def observe_wall(self, wall_s: float) -> None:
        """The previous round's wall time, from its start to the next round's start."""


class FixedK(DraftLengthPolicy):
    """Always draft k tokens (k = 0 is plain decoding)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.name = f"fixed:{k}"

    def choose(self) -> int:
        return self.k


class HeuristicK(DraftLengthPolicy):
    """The common +2/-1 rule: k += 2 after a fully accepted draft, else k -= 1 (transformers' default)."""

    name = "heuristic"

    def __init__(self, k: int = 4, k_min: int = 1, k_max: int = 8) -> None:
        self.k, self.k_min, self.k_max = k, max(k_min, 1), k_max

    def choose(self) -> int:
        return self.k

    def observe(self, k: int, num_accepted: int, draft_s: float, verify_s: float,
                shadow: list[int] | None = None, emitted: list[int] | None = None,
                conf: list[float] | None = None) -> None:
        if k == 0:
            return
        self.k = min(self.k + 2, self.k_max) if num_accepted == k else max(self.k - 1, self.k_min)
