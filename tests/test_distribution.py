"""Speculative sampling keeps the target's distribution: chi-square tests on a real model's real logits.

Target rows p come from SmolLM2-135M at three real contexts; the draft rows q from the same logits pulled
toward other contexts' (a plausible but wrong guesser). Rows do not depend on the drafted prefix here, so the token emitted
at position j must follow p_j exactly. 20,000 draws per test: a 5% relative bias on a token of probability
0.2 shifts its count by ~200 against a standard deviation of ~57, far past the threshold. Significance 0.001.
A control with a deliberately wrong rule (recover from p instead of the residual) must fail the same test.
"""
import numpy as np
import pytest
from scipy.stats import chisquare

from ryzanstein.spec.sampling import probs_from_logits, sample
from ryzanstein.spec.acceptance_rules import accept_sampling

N = 20_000
ALPHA = 1e-3
K = 2


@pytest.fixture(scope="module")
def real_logits(llama_smol):
    tok = llama_smol.tokenizer
    rows = []
    for text in ["The weather today is", "My favourite colour is", "The cat sat on the",
                 "In 1492, Columbus", "Once upon a time", "The best way to learn"]:
        llama_smol.reset()
        rows.append(np.array(llama_smol.forward(tok.encode(text), last_only=True)[0], dtype=np.float64))
    llama_smol.reset()
    tgt = np.stack(rows[:3])
    # a close but wrong guesser: the target's logits pulled toward another context's
    return tgt, 0.6 * tgt + 0.4 * np.stack(rows[3:])


def bins(p, n_top=12):
    """Indices of the n_top most likely tokens of p; everything else pools into one bin."""
    return np.argsort(-p)[:n_top]


def chi2_pvalue(samples, p):
    top = bins(p)
    expected = np.append(p[top], max(1.0 - p[top].sum(), 0.0)) * len(samples)
    counts = np.array([np.sum(samples == t) for t in top] + [np.sum(~np.isin(samples, top))])
    keep = expected > 5  # chi-square needs expected counts above ~5
    exp, obs = expected[keep], counts[keep]
    return chisquare(obs, exp * obs.sum() / exp.sum()).pvalue


def wrong_accept(draft, q, p, rng):
    """The classic bug: on rejection, resample from p instead of the residual max(p - q, 0)."""
    for i, x in enumerate(draft):
        qx = 1.0 if q is None else q[i, x]
        if rng.random() * qx < p[i, x]:
            continue
        return i, sample(p[i], rng)
    return len(draft), sample(p[len(draft)], rng)


def run(rule, p, q, model_free, rng):
    """Emitted tokens at positions 0 and 1 over N rounds of K drafts."""
    first, second = [], []
    drafts = np.stack([rng.choice(q.shape[1], size=N, p=q[i]) for i in range(K)], axis=1)  # (N, K)
    for draft in drafts.tolist():
        n, nxt = rule(draft, None if model_free else q, p, rng)
        out = draft[:n] + [nxt]
        first.append(out[0])
        if len(out) > 1:
            second.append(out[1])
    return np.array(first), np.array(second)


@pytest.mark.parametrize("settings", [dict(temperature=1.0), dict(temperature=0.8, top_k=40, top_p=0.9),
                                      dict(temperature=1.0, min_p=0.1),
                                      dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05)],  # the defaults
                         ids=["t1", "t0.8-k40-p0.9", "t1-minp0.1", "defaults"])
@pytest.mark.parametrize("model_free", [False, True])
def test_speculative_sampling_keeps_target_distribution(real_logits, settings, model_free):
    tgt, drf = real_logits
    p = probs_from_logits(tgt, **settings)  # (K+1, V)
    q = probs_from_logits(drf[:K], **settings)  # (K, V)
    rng = np.random.default_rng(1234)
    first, second = run(accept_sampling, p, q, model_free, rng)
    assert chi2_pvalue(first, p[0]) > ALPHA
    assert chi2_pvalue(second, p[1]) > ALPHA


def test_control_wrong_rule_is_caught(real_logits):
    tgt, drf = real_logits
    p = probs_from_logits(tgt, 1.0)
    q = probs_from_logits(drf[:K], 1.0)
    rng = np.random.default_rng(1234)
    first, _ = run(wrong_accept, p, q, False, rng)
    assert chi2_pvalue(first, p[0]) < ALPHA
