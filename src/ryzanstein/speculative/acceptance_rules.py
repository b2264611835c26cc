"""Acceptance rules: which drafted tokens the target keeps, and the token it adds.

Pure functions of (draft, target scores, rng). The target scored [last token + K drafts] in one forward, so
there are K+1 rows: row i is the target's prediction for the position of draft i; row K follows the last
draft. Output tokens of a round = accepted drafts + one recovered (at the first rejection) or bonus token
(when all K were accepted). An empty draft therefore yields just the bonus token: plain decoding.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .sampling import sample


def accept_greedy(draft_tokens: Sequence[int], target_argmax: Sequence[int]) -> tuple[int, int]:
    """Temperature 0: accept while draft == target argmax. Returns (num_accepted, next token)."""
    assert len(target_argmax) == len(draft_tokens) + 1
    n = 0
    while n < len(draft_tokens) and draft_tokens[n] == target_argmax[n]:
        n += 1
    return n, int(target_argmax[n])


def accept_sampling(
    draft_tokens: Sequence[int],
    draft_probs: np.ndarray | None,  # (K, V) distributions the drafts were sampled from; None = one-hot q
    target_probs: np.ndarray,  # (K+1, V) target distributions after the same temperature/top-k/top-p
    rng: np.random.Generator,
) -> tuple[int, int]:
    """Speculative sampling (Leviathan et al. 2023, Chen et al. 2023). Returns (num_accepted, next token).

    Draft x_i is accepted with probability min(1, p(x_i) / q(x_i)); at the first rejection the next token is
    drawn from normalize(max(p - q, 0)); if all K are accepted a bonus token is drawn from row K.
    The output then has exactly the target's distribution, whatever q is.

    A model-free draft (one-hot q, `draft_probs` None) takes the same rule in its coupled form: the target's
    token y_i ~ p_i is drawn with one uniform, exactly as plain decoding draws it, and the draft is accepted
    iff y_i == x_i, else y_i is the next token. Accepting has probability p(x_i) = min(1, p/q), and a rejected
    y_i is distributed as p without x_i, renormalised: max(p - onehot, 0), the rule above. Each emitted
    token then costs one uniform, whatever K was: a seeded generation gives the same text with prompt lookup
    at any K (or none) as plain decoding, wherever the backend's logits are batch-invariant (native).
    """
    K = len(draft_tokens)
    assert target_probs.shape[0] == K + 1
    if draft_probs is None:
        for i, x in enumerate(draft_tokens):
            y = sample(target_probs[i], rng)
            if y != x:
                return i, y
        return K, sample(target_probs[K], rng)
    for i, x in enumerate(draft_tokens):
        p_x = target_probs[i, x]
        q_x = draft_probs[i, x]
        if q_x > 0 and rng.random() * q_x < p_x:  # u < p/q without dividing
            continue
        residual = np.maximum(target_probs[i] - draft_probs[i], 0.0)
        if residual.sum() <= 0.0:  # p <= q everywhere means p == q: a rejection has probability 0
            residual = target_probs[i]
        return i, sample(residual, rng)
    return K, sample(target_probs[K], rng)
