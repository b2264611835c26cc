"""Verifier table tests: the acceptance rules as pure functions."""
import numpy as np
import pytest

from ryzanstein.speculative.acceptance_rules import accept_greedy, accept_sampling
from ryzanstein.speculative.sampling import sample

V = 6


def onehot(i):
    p = np.zeros(V)
    p[i] = 1.0
    return p


@pytest.mark.parametrize(
    "draft, argmax, expected",
    [
        ([1, 2, 3], [1, 2, 3, 4], (3, 4)),  # perfect match: all accepted + bonus
        ([1, 2, 3], [5, 2, 3, 4], (0, 5)),  # early mismatch: only the target's token
        ([], [4], (0, 4)),  # empty draft: just the bonus (a plain step)
        ([1], [1, 0], (1, 0)),  # K = 1 accepted
        ([1], [2, 0], (0, 2)),  # K = 1 rejected
        ([1, 2, 3], [1, 2, 5, 4], (2, 5)),  # mismatch at the last position
        ([1, 2, 3, 1], [1, 2, 3, 0, 9], (3, 0)),
    ],
)
def test_greedy_table(draft, argmax, expected):
    assert accept_greedy(draft, argmax) == expected


def test_sampling_certain_target_accepts_matching_onehot_draft():
    rng = np.random.default_rng(0)
    target = np.stack([onehot(1), onehot(2), onehot(3), onehot(4)])
    assert accept_sampling([1, 2, 3], None, target, rng) == (3, 4)


def test_sampling_rejects_impossible_token_and_recovers_from_residual():
    rng = np.random.default_rng(0)
    target = np.stack([onehot(1), onehot(5), onehot(3)])
    n, tok = accept_sampling([1, 2], None, target, rng)  # p(2) = 0 at position 1
    assert (n, tok) == (1, 5)


def test_sampling_empty_draft_gives_bonus_from_last_row():
    rng = np.random.default_rng(0)
    assert accept_sampling([], None, onehot(4)[None], rng) == (0, 4)


def test_a_model_free_draft_costs_one_uniform_per_emitted_token():
    """The coupled form of the one-hot rule: with the same seed, speculative rounds of any K emit exactly the
    tokens plain sampling draws, position by position (drafts right, wrong, or partly right)."""
    rng = np.random.default_rng(1)
    T, V = 200, 12
    P = rng.dirichlet(np.full(V, 0.3), size=T)  # one target distribution per position
    plain_rng = np.random.default_rng(7)
    plain = [sample(P[t], plain_rng) for t in range(T)]
    spec_rng, pos, rounds, accepted = np.random.default_rng(7), 0, 0, 0
    while pos < T - 9:
        K = int(rng.integers(0, 9))
        draft = list(plain[pos:pos + K])
        if K and rng.random() < 0.5:
            j = int(rng.integers(0, K))
            draft[j] = (draft[j] + 1) % V  # a wrong token somewhere
        n, tok = accept_sampling(draft, None, P[pos:pos + K + 1], spec_rng)
        assert draft[:n] + [tok] == plain[pos:pos + n + 1]
        pos, rounds, accepted = pos + n + 1, rounds + 1, accepted + n
    assert accepted > rounds  # the drafts were accepted often, not only the one-token rounds


def test_residual_excludes_rejected_token_with_model_draft():
    # p = (0.5, 0.5), q = (1, 0): accept token 0 w.p. 0.5; on rejection the residual is onehot(1)
    rng = np.random.default_rng(1)
    p = np.zeros((2, V))
    p[0, :2] = 0.5
    p[1, 3] = 1
    q = np.zeros((1, V))
    q[0, 0] = 1
    outcomes = {accept_sampling([0], q, p, rng) for _ in range(200)}
    assert outcomes == {(1, 3), (0, 1)}


def test_accept_probability_is_min_one_p_over_q():
    rng = np.random.default_rng(2)
    p = np.full((2, V), 1 / V)
    q = np.zeros((1, V))
    q[0, 0], q[0, 1] = 0.5, 0.5  # p/q = (1/6)/(1/2) = 1/3 for token 0
    n = 20000
    accepted = sum(accept_sampling([0], q, p, rng)[0] for _ in range(n))
    assert abs(accepted / n - 1 / 3) < 0.015
