"""Turning a logits row into the distribution we sample from, and sampling from it.

Target and draft go through the same `probs_from_logits`, so the p and q that the acceptance rule compares
are the distributions each model actually samples from after temperature / top-k / top-p / min-p: the
condition for speculative sampling to be lossless. The order is transformers' (temperature, top-k, top-p,
min-p). Temperature 0 never builds a distribution: it is an argmax.
"""
from __future__ import annotations

import numpy as np

from ..config import SamplingParams
from ..models.base import Logits

# A nucleus almost always lives in the few hundred most likely tokens: look there first and fall back to a
# full sort only when they do not reach top_p. Exact either way.
_NUCLEUS_CANDIDATES = 1024


def probs_from_logits(logits: np.ndarray, sampling: SamplingParams) -> np.ndarray:
    """(n, V) or (V,) logits -> float64 distributions after temperature, then top-k, then top-p, then min-p
    (drop tokens less likely than min_p times the row's most likely one)."""
    if sampling.greedy:
        raise ValueError("temperature 0 is greedy: use argmax, not a distribution")
    top_k, top_p, min_p = sampling.top_k, sampling.top_p, sampling.min_p
    x = np.asarray(logits, dtype=np.float64) / sampling.temperature
    squeeze = x.ndim == 1
    x = np.atleast_2d(x)
    V = x.shape[-1]
    if 0 < top_k < V:
        kth = np.partition(x, V - top_k, axis=-1)[:, V - top_k, None]  # (n, 1) k-th largest
        x = np.where(x < kth, -np.inf, x)  # ties with the k-th value are kept, as in transformers
    x = x - x.max(axis=-1, keepdims=True)
    p = np.exp(x)
    p /= p.sum(axis=-1, keepdims=True)
    if top_p < 1.0:
        for row in p:
            _nucleus_inplace(row, top_p)
    if min_p > 0.0:
        p = np.where(p >= min_p * p.max(axis=-1, keepdims=True), p, 0.0)  # (n, V); the top token always stays
        p /= p.sum(axis=-1, keepdims=True)
    return p[0] if squeeze else p


def _nucleus_inplace(p: np.ndarray, top_p: float) -> None:
    """Keep the smallest set of most likely tokens whose mass reaches top_p (always the top one); renormalise."""
    V = p.shape[0]
    cand = np.argpartition(p, V - _NUCLEUS_CANDIDATES)[V - _NUCLEUS_CANDIDATES:] if V > _NUCLEUS_CANDIDATES else None
    if cand is None or p[cand].sum() < top_p:
        cand = np.arange(V)
    order = cand[np.argsort(-p[cand], kind="stable")]
    cum = np.cumsum(p[order])
    # first index where the mass reaches top_p (a 1e-9 slack so that 0.5 + 0.3 reaches 0.8 despite rounding)
    n_keep = min(int(np.searchsorted(cum, top_p - 1e-9, side="left")) + 1, len(order))
    keep = order[:n_keep]
    kept = p[keep]
    p[:] = 0.0
    p[keep] = kept / kept.sum()


def sample(probs: np.ndarray, rng: np.random.Generator) -> int:
    """One token id drawn from a (V,) distribution; zero-probability ids are never drawn."""
    cdf = np.cumsum(probs)
    # side="right": a zero-probability id has cdf equal to its predecessor's, so it can never be the first
    # index whose cdf exceeds u.
    return int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))


def pick(logits: Logits, sampling: SamplingParams, rng: np.random.Generator) -> int:
    """The next token from a forward's last logits row: its argmax at temperature 0 (found where the backend
    keeps the row), else a sample (from the row brought to the host)."""
    if sampling.greedy:
        return logits.argmax()[-1]
    return sample(probs_from_logits(logits.numpy()[-1], sampling), rng)
