"""Log-probabilities of emitted tokens, from the logits rows the decode loop has anyway.

Every emitted token was predicted by one row of a forward the loop made regardless: the prefill's last row
for the first token, row i of a round's verifying forward for its i-th emitted token (accepted, recovered or
bonus). So logprobs cost no extra forward, with or without a draft. They are the target's raw
distribution (temperature 1, no top-k/top-p/min-p), as OpenAI and vLLM report them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(slots=True)
class TokenLogprob:
    token: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)  # the n most likely (id, logprob), best first


def token_logprobs(rows: np.ndarray, tokens: list[int], n_top: int) -> list[TokenLogprob]:
    """The logprob of tokens[i] under the softmax of rows[i], with each row's n_top most likely tokens."""
    x = np.asarray(rows[:len(tokens)], dtype=np.float64)  # (n, V)
    x = x - x.max(axis=-1, keepdims=True)
    lp = x - np.log(np.exp(x).sum(axis=-1, keepdims=True))  # (n, V) log-softmax
    out = []
    for i, t in enumerate(tokens):
        top: list[tuple[int, float]] = []
        if n_top:
            idx = np.argpartition(-lp[i], n_top - 1)[:n_top]
            top = [(int(j), float(lp[i, j])) for j in idx[np.argsort(-lp[i, idx], kind="stable")]]
        out.append(TokenLogprob(int(t), float(lp[i, t]), top))
    return out
