"""Speculative sampling keeps the target's distribution: chi-square tests on a real model's real logits.

Target rows p come from SmolLM2-135M at three real contexts; the draft rows q from the same logits pulled
toward other contexts' (a plausible but wrong guesser). Rows do not depend on the drafted prefix here, so the token emitted
at position j must follow p_j exactly. 20,000 draws per test: a 5% relative bias on a token of probability
0.2 shifts its count by ~200 against a standard deviation of ~57, far past the threshold. Significance 0.001.
A control with a deliberately wrong rule (recover from p instead of the residual) must fail the same test.
The rows come from llama.cpp on CPU, from the torch model on RYZANSTEIN_TEST_DEVICE otherwise (a GPU's, in
benchmarks/gpu_check.py).

End to end: the decode loop itself (Engine.generate, a model draft, top-k 3) against the exact joint
distribution of the first three tokens, computed from the target's own rows; on a tiny random-weight model on
the test device, so that thousands of generations take seconds; with the same control.
"""
import os

import numpy as np
import pytest
from scipy.stats import chisquare

from ryzanstein import Engine, GenerationConfig, SamplingParams
from ryzanstein.models.torch_model import ModelArgs, TorchModel
from ryzanstein.speculative import loop
from ryzanstein.speculative.proposers import ModelProposer
from ryzanstein.speculative.sampling import probs_from_logits, sample
from ryzanstein.speculative.acceptance_rules import accept_sampling

N = 20_000
ALPHA = 1e-3
K = 2
TEST_DEVICE = os.environ.get("RYZANSTEIN_TEST_DEVICE", "cpu")  # as conftest.py reads it


@pytest.fixture(scope="module")
def real_logits(request):
    m = request.getfixturevalue("llama_smol" if TEST_DEVICE == "cpu" else "torch_smol")
    tok = m.tokenizer
    rows = []
    for text in ["The weather today is", "My favourite colour is", "The cat sat on the",
                 "In 1492, Columbus", "Once upon a time", "The best way to learn"]:
        m.reset()
        rows.append(np.array(m.forward(tok.encode(text), last_only=True)[0], dtype=np.float64))
    m.reset()
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
    p = probs_from_logits(tgt, SamplingParams(**settings))  # (K+1, V)
    q = probs_from_logits(drf[:K], SamplingParams(**settings))  # (K, V)
    rng = np.random.default_rng(1234)
    first, second = run(accept_sampling, p, q, model_free, rng)
    assert chi2_pvalue(first, p[0]) > ALPHA
    assert chi2_pvalue(second, p[1]) > ALPHA


def test_control_wrong_rule_is_caught(real_logits):
    tgt, drf = real_logits
    p = probs_from_logits(tgt, SamplingParams(temperature=1.0))
    q = probs_from_logits(drf[:K], SamplingParams(temperature=1.0))
    rng = np.random.default_rng(1234)
    first, _ = run(wrong_accept, p, q, False, rng)
    assert chi2_pvalue(first, p[0]) < ALPHA


# end to end, through the decode loop -----------------------------------------------------------------------
N_E2E = 2000
E2E = dict(temperature=1.0, top_k=3, top_p=1.0, min_p=0.0)  # three candidates a position: 27 joint outcomes
PROMPT = [5, 17, 300, 400, 42, 9]


@pytest.fixture(scope="module")
def tiny_target(torch_smol):
    # 512 logits a row (SmolLM2's tokenizer covers them): the loop's cost, not the vocabulary's, sets the pace
    args = ModelArgs(model_type="llama", vocab_size=512, dim=64, n_layers=2, n_heads=4, n_kv_heads=2,
                     head_dim=16, hidden_dim=128, norm_eps=1e-5, rope_theta=10000.0, n_ctx_train=512,
                     qkv_bias=False, o_bias=False, tie_embeddings=False)
    return TorchModel.random(args, torch_smol.tokenizer, name="tiny", n_ctx=64, device=TEST_DEVICE, std=0.25)


def exact_joint(target) -> dict[tuple[int, int, int], float]:
    """P(t1, t2, t3) after PROMPT = p(t1) p(t2 | t1) p(t3 | t1, t2), from the target's rows (13 forwards)."""
    def probs(ctx):
        target.reset()
        return probs_from_logits(target.forward(ctx, last_only=True)[0], SamplingParams(**E2E))

    joint = {}
    p1 = probs(PROMPT)
    for t1 in np.flatnonzero(p1):
        p2 = probs(PROMPT + [int(t1)])
        for t2 in np.flatnonzero(p2):
            p3 = probs(PROMPT + [int(t1), int(t2)])
            for t3 in np.flatnonzero(p3):
                joint[int(t1), int(t2), int(t3)] = p1[t1] * p2[t2] * p3[t3]
    target.reset()
    return joint


def e2e_pvalue(target) -> float:
    """Chi-square p-value of N_E2E speculative generations (a 1-layer self-draft, K=2) against exact_joint."""
    joint = exact_joint(target)
    eng = Engine.from_models(target, ModelProposer(target.truncated(1), name="self:1", owns_weights=False))
    eng.reset()
    counts = dict.fromkeys(joint, 0)
    other = 0
    for seed in range(N_E2E):
        out = eng.generate(PROMPT, GenerationConfig(max_new_tokens=4, k=K, seed=seed, ignore_eos=True, **E2E))
        key = tuple(out.tokens[:3])
        if key in counts:
            counts[key] += 1
        else:
            other += 1  # an outcome of probability 0
    assert other == 0 and eng.generate(PROMPT, GenerationConfig(max_new_tokens=4, k=K, seed=0, **E2E)).stats.spec_rounds
    keys = sorted(joint, key=joint.get, reverse=True)
    expected = np.array([joint[k] for k in keys]) * N_E2E
    observed = np.array([counts[k] for k in keys])
    big = expected > 5  # the rest pooled into one bin
    exp = np.append(expected[big], expected[~big].sum())
    obs = np.append(observed[big], observed[~big].sum())
    keep = exp > 0
    return chisquare(obs[keep], exp[keep] * obs[keep].sum() / exp[keep].sum()).pvalue


def test_decode_loop_keeps_target_distribution_end_to_end(tiny_target):
    assert e2e_pvalue(tiny_target) > ALPHA


def test_control_wrong_rule_in_the_loop_is_caught(tiny_target, monkeypatch):
    monkeypatch.setattr(loop, "accept_sampling", wrong_accept)
    assert e2e_pvalue(tiny_target) < ALPHA
