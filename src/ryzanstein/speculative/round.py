"""What one round did, as the decode loop hands it to the stats and to the draft-length policy."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True, kw_only=True)  # made every round: a plain __init__, no frozen-dataclass overhead
class Round:
    """One target forward over [last token + K draft tokens] and its outcome."""

    k: int  # draft tokens verified (0: a plain decoding step)
    num_accepted: int  # of them, accepted
    emitted: list[int]  # tokens the round emitted: the accepted ones + a recovered or bonus token (cut at a stop id)
    draft_s: float  # seconds the proposer took
    verify_s: float  # seconds of the target forward, the acceptance rule and the KV rollback
    round_s: float = 0.0  # seconds of the whole round, start to emitted tokens
    shadow: list[int] = field(default_factory=list)  # a draft proposed, not verified (K = 0): the policy scores it
    conf: list[float] | None = None  # a model draft's probability for each token it proposed
    chosen: int | None = None  # the K the policy chose (k may be fewer: the proposer found less); None = k
    fed: int = 0  # context tokens a draft model fed before drafting (its catch-up; all of it if k = 0)


TOKEN_KINDS = ("step", "accepted", "recovered", "bonus")  # how an emitted token came (token_kinds)


def token_kinds(k: int, num_accepted: int, n_emitted: int) -> list[str]:
    """How each of a round's `n_emitted` tokens came: its `num_accepted` accepted drafts, then one token of the
    target's own: `recovered` where a draft was rejected, `bonus` after all k were accepted, `step` in a plain
    step (k = 0; the prefill's token is one too). A stop id among the accepted drafts ends the list there."""
    own = "step" if k == 0 else "bonus" if num_accepted == k else "recovered"
    return (["accepted"] * num_accepted + [own])[:n_emitted]
