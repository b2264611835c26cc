"""Pure-Python parts: config validation, stats arithmetic, n-gram lookup, sampling filters, policies."""
import math

import numpy as np
import pytest

from ryzanstein.speculative.acceptance_forecast import AcceptanceForecast
from ryzanstein.speculative.auto_policy import AutoPolicy
from ryzanstein.config import GenerationConfig, LoadConfig, SamplingParams
from ryzanstein.speculative.costs import CostProfile
from ryzanstein.errors import ConfigError
from ryzanstein.speculative.policies import HeuristicPolicy
from ryzanstein.speculative.proposers import NgramProposer
from ryzanstein.speculative.round import Round
from ryzanstein.speculative.sampling import probs_from_logits, sample
from ryzanstein.speculative.stats import GenerationStats


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": -0.1}, "invalid temperature=-0.1: must be a number in [0, 100]"),
        ({"top_p": 0}, "invalid top_p=0: must be a number in (0, 1]"),
        ({"top_p": 1.5}, "invalid top_p=1.5"),
        ({"top_k": -1}, "invalid top_k=-1: must be an integer >= 0"),
        ({"max_new_tokens": 0}, "invalid max_new_tokens=0: must be an integer >= 1"),
        ({"k": 17}, "invalid k=17: must be an integer in [0, 16] or 'auto'"),
        ({"k_max": 4, "k_min": 5}, "invalid k_min=5: must be an integer in [0, k_max=4]"),
        ({"policy": "magic"}, "invalid policy='magic': must be one of auto, fixed, heuristic, confidence"),
        ({"p_min": 1.0}, "invalid p_min=1.0"),
        ({"seed": -3}, "invalid seed=-3"),
        ({"fallback": "ignore"}, "invalid fallback='ignore': must be one of plain, error"),
        ({"temperature": float("nan")}, "invalid temperature=nan"),
    ],
)
def test_generation_config_errors(kwargs, message):
    with pytest.raises(ConfigError) as e:
        GenerationConfig(**kwargs)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"draft": "self:0"}, "invalid draft='self:0': must be self:N with N >= 1 layers"),
        ({"backend": "onnx"}, "invalid backend='onnx': must be one of native, llama.cpp, torch"),
        ({"threads": 0}, "invalid threads=0"),
        ({"ngram_min": 3, "ngram_max": 2}, "invalid ngram_max=2: must be an integer in [ngram_min=3, 32]"),
        ({"max_memory_overhead": -1.0}, "invalid max_memory_overhead=-1.0"),
        ({"draft_vocab": -5}, "invalid draft_vocab=-5: must be an integer >= 0 (0 = the whole vocabulary)"),
        ({"dtype": "float16"}, "invalid dtype='float16': must be one of float32, bfloat16"),
    ],
)
def test_load_config_errors(kwargs, message):
    with pytest.raises(ConfigError) as e:
        LoadConfig(**kwargs)
    assert message in str(e.value)


def test_every_backend_the_config_allows_has_a_loader():
    from ryzanstein.config import BACKENDS
    from ryzanstein.models import _LOADERS

    assert set(_LOADERS) == set(BACKENDS)  # a new backend joins both, or neither


def test_config_is_frozen_and_explicit_k_means_fixed():
    cfg = GenerationConfig(k=3)
    assert cfg.policy == "fixed"
    with pytest.raises(Exception):
        cfg.k = 4  # type: ignore[misc]
    assert GenerationConfig(stop="END").stop == ("END",)


def test_stats_arithmetic_on_a_hand_built_run():
    s = GenerationStats()
    s.observe(Round(k=4, num_accepted=4, emitted=[0] * 5, draft_s=0.01, verify_s=0.02, round_s=0.05))
    s.observe(Round(k=4, num_accepted=1, emitted=[0] * 2, draft_s=0.01, verify_s=0.02, round_s=0.04))
    s.observe(Round(k=0, num_accepted=0, emitted=[0], draft_s=0.0, verify_s=0.01, round_s=0.01))
    s.num_tokens, s.decode_s, s.prefill_s = 9, 0.1, 0.05
    assert s.rounds == 3 and s.spec_rounds == 2
    assert s.num_draft_tokens == 8 and s.num_accepted == 5
    assert s.acceptance_rate == pytest.approx(5 / 8)
    assert s.mean_acceptance_length == pytest.approx((5 + 3) / 3)  # 8 tokens from 3 target forwards
    assert s.accepted_per_position == [2, 1, 1, 1]
    assert s.acceptance_by_position == [1.0, 0.5, 0.5, 0.5]
    assert s.accepted_length_hist == [0, 1, 0, 0, 1]
    assert s.token_latencies_s == pytest.approx([0.01] * 5 + [0.02] * 2 + [0.01])
    assert s.decode_tokens_per_s == pytest.approx(8 / 0.1)  # tokens after the first
    assert s.other_s == pytest.approx(0.1 - 0.02 - 0.05)
    d = s.to_dict()
    assert d["latency_p50_s"] == pytest.approx(0.01) and d["acceptance_rate"] == pytest.approx(5 / 8)


def test_ngram_proposes_what_followed_the_longest_recent_match():
    ng = NgramProposer(1, 3)
    ctx = [5, 6, 7, 8, 9, 1, 2, 5, 6, 7]
    assert ng.propose(ctx, 3).tokens == [8, 9, 1]
    assert ng.propose(ctx, 10).tokens == [8, 9, 1, 2, 5, 6, 7]
    assert ng.propose([1, 2, 3, 4], 3).tokens == []  # no earlier occurrence of any suffix
    assert NgramProposer(2, 3).propose([4, 1, 2, 4], 2).tokens == []  # 1-gram "4" not allowed
    # token ids whose bytes could match across int32 boundaries must not produce misaligned hits
    assert ng.propose([256, 1, 0, 65536], 2).tokens == []


def test_ngram_reuses_its_converted_context_only_while_the_list_grows():
    rng = np.random.default_rng(0)
    ng, ctx = NgramProposer(1, 4), [int(t) for t in rng.integers(0, 20, 50)]
    for _ in range(200):  # the decode loop's use: one list, appended to between calls
        assert ng.propose(ctx, 5).tokens == NgramProposer(1, 4).propose(list(ctx), 5).tokens
        ctx.extend(int(t) for t in rng.integers(0, 20, rng.integers(1, 4)))
    ctx[-1] += 1  # the list changed under it (not by appending): converted afresh
    assert ng.propose(ctx, 5).tokens == NgramProposer(1, 4).propose(list(ctx), 5).tokens
    assert ng.propose([1, 2, 1], 1).tokens == [2]  # another list


def test_acceptance_shadow_evidence_decays_like_verified_evidence():
    lazy, eager = AcceptanceForecast(4), AcceptanceForecast(4)
    for i in range(300):  # lazy: the decay waits until an estimate is needed; eager: applied every round
        lazy.new_round(), eager.new_round()
        eager.positional()
        lazy.shadowed(i % 3 == 0), eager.shadowed(i % 3 == 0)
        if i % 50 == 49:
            lazy.verified(3, 1), eager.verified(3, 1)
    assert lazy.positional() == pytest.approx(eager.positional())
    assert lazy.positional()[0] == pytest.approx(1 / 3, abs=0.05)


def test_top_k_top_p_filters():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    p = probs_from_logits(logits, SamplingParams(temperature=1.0, top_k=2))
    assert np.allclose(p, [0.625, 0.375, 0, 0])
    p = probs_from_logits(logits, SamplingParams(temperature=1.0, top_p=0.8))  # 0.5 + 0.3 reaches 0.8
    assert np.allclose(p, [0.625, 0.375, 0, 0])
    p = probs_from_logits(logits, SamplingParams(temperature=1.0, top_p=0.81))
    assert np.count_nonzero(p) == 3
    rng = np.random.default_rng(0)
    assert all(sample(np.array([0, 0, 1.0, 0]), rng) == 2 for _ in range(50))


def test_min_p_filter():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    p = probs_from_logits(logits, SamplingParams(temperature=1.0, min_p=0.2))  # keeps p >= 0.2 * 0.5 = 0.1
    assert np.allclose(p, np.array([0.5, 0.3, 0.15, 0]) / 0.95)
    p = probs_from_logits(np.stack([logits, logits[::-1]]), SamplingParams(temperature=1.0, min_p=0.5))  # row by row, relative to its top
    assert np.allclose(p, [[0.625, 0.375, 0, 0], [0, 0, 0.375, 0.625]])
    assert np.count_nonzero(probs_from_logits(logits, SamplingParams(temperature=1.0, min_p=0.0))) == 4
    with pytest.raises(ConfigError, match="invalid min_p=1.0"):
        GenerationConfig(min_p=1.0)


def test_defaults_sample_like_llama_cpp_and_zero_temperature_is_greedy():
    cfg = GenerationConfig()
    assert (cfg.temperature, cfg.top_k, cfg.top_p, cfg.min_p) == (0.8, 40, 0.95, 0.05) and not cfg.greedy
    assert GenerationConfig(temperature=0).greedy


def test_sampling_params_travel_as_one_validated_record():
    cfg = GenerationConfig(temperature=0.7, top_k=5, top_p=0.9, min_p=0.1)
    assert cfg.sampling == SamplingParams(temperature=0.7, top_k=5, top_p=0.9, min_p=0.1)
    assert cfg.replace(temperature=0).sampling.greedy and SamplingParams().greedy
    with pytest.raises(ConfigError, match="invalid top_p=0"):
        SamplingParams(temperature=1.0, top_p=0)
    with pytest.raises(TypeError):
        SamplingParams(1.0)  # keyword-only: four numbers in a row are too easy to swap
    with pytest.raises(ValueError, match="greedy"):
        probs_from_logits(np.zeros(4), SamplingParams())


def test_round_and_auto_policy_are_built_by_keyword():
    with pytest.raises(TypeError):
        Round(1, 1, [0, 0], 0.0, 0.0)
    with pytest.raises(TypeError):
        AutoPolicy(flat(), 1e-5, True)
    assert AutoPolicy(target_costs=flat(), draft_token_s=1e-5, model_free=True).k_max == 8


def rnd(k, num_accepted, draft_s, verify_s, shadow=(), emitted=None, conf=None, fed=0):
    """A Round for a policy; unless told, it emitted the accepted drafts + one token."""
    emitted = [0] * (num_accepted + 1) if emitted is None else emitted
    return Round(k=k, num_accepted=num_accepted, emitted=emitted, draft_s=draft_s, verify_s=verify_s,
                 shadow=list(shadow), conf=conf, fed=fed)


def flat(v1=0.01, n=16):
    return CostProfile([v1 * (1 + 0.01 * i) for i in range(n)])


def steep(v1=0.01, n=16):
    ratios = [1, 1.81, 2.23, 2.65, 3.1, 3.5, 3.9, 4.3, 4.8, 5.45, 5.9, 6.3, 6.7, 7.0, 7.4, 7.75]
    return CostProfile([v1 * r for r in ratios[:n]])


def feed(policy, rounds, accept_prob, rng):
    for _ in range(rounds):
        k = policy.choose()
        if k:
            n = 0
            while n < k and rng.random() < accept_prob:
                n += 1
            policy.observe(rnd(k, n, 1e-5 * k, policy.costs.v(k + 1)))
        else:
            hit = rng.random() < accept_prob
            policy.observe(rnd(0, 0, 0.0, policy.costs.v(1), shadow=[1], emitted=[1 if hit else 2]))


def test_auto_flat_costs_high_acceptance_choose_large_k():
    rng = np.random.default_rng(0)
    pol = AutoPolicy(target_costs=flat(), draft_token_s=1e-5, model_free=True, k_max=8)
    feed(pol, 60, 0.9, rng)
    assert pol.choose() >= 6


def test_auto_steep_costs_choose_plain():
    rng = np.random.default_rng(0)
    pol = AutoPolicy(target_costs=steep(), draft_token_s=1e-5, model_free=True, k_max=8)
    feed(pol, 60, 0.5, rng)
    assert pol.choose() == 0


def test_auto_model_draft_that_can_never_win_is_not_probed():
    pol = AutoPolicy(target_costs=steep(), draft_token_s=0.63 * 0.01, model_free=False, k_max=8)  # the 0.5B -> 1.5B pair on 2 cores
    assert not pol.can_ever_win()
    assert all(pol.choose() == 0 for _ in range(600))


def test_auto_shadow_and_probing_bring_speculation_back():
    rng = np.random.default_rng(0)
    pol = AutoPolicy(target_costs=steep(), draft_token_s=1e-5, model_free=True, k_max=8)
    feed(pol, 80, 0.2, rng)  # unrepetitive text: plain decoding
    assert pol.choose() == 0
    feed(pol, 80, 0.97, rng)  # the text turns repetitive: the shadow draft notices
    assert pol.choose() >= 2
    # a model draft cheap enough to win sometimes is probed and switches back on
    pol = AutoPolicy(target_costs=flat(), draft_token_s=0.05 * 0.01, model_free=False, k_max=8)
    for _ in range(40):
        pol.observe(rnd(2, 0, 1e-3, pol.costs.v(3)))  # drafts keep failing
    assert pol.choose() == 0
    ks = []
    for _ in range(200):
        k = pol.choose()
        ks.append(k)
        pol.observe(rnd(k, k, 1e-3 * k, pol.costs.v(k + 1)))  # now every draft is accepted
    assert max(ks[-20:]) >= 4


def test_auto_probes_a_model_draft_in_the_first_round():
    """Nothing is known of the draft on this text: round 0 probes it (its catch-up, a 100-token prompt, is
    within 10% of the generation), an accepted probe re-plans at once, and good drafts keep it on."""
    native = CostProfile([0.01 * r for r in (1, 1.10, 1.14, 1.18, 1.25, 1.32, 1.40, 1.47, 1.55)])  # the 1.5B's
    pol = AutoPolicy(target_costs=native, draft_token_s=0.43 * 0.01, model_free=False, k_max=8, draft_prefill_token_s=2e-4,
                     prompt_tokens=100, max_new_tokens=96)
    assert pol.best_k() == 0 and pol.can_ever_win()  # at the prior's 50% plain wins; at 90% the draft would
    assert pol.choose() == 1
    pol.observe(rnd(1, 1, 0.43 * 0.01 + 99 * 2e-4, pol.costs.v(2), fed=100))  # accepted, after a 99-token catch-up
    ks = []
    for _ in range(20):
        ks.append(pol.choose())
        pol.observe(rnd(min(ks[-1], 3), min(ks[-1], 3), 0.43 * 0.01 * min(ks[-1], 3), pol.costs.v(4)))
    assert min(ks) > 0
    # the probe's draft time held its catch-up over the prompt: that is not its cost per token
    assert abs(pol.draft_token_s - 0.43 * 0.01) < 0.1 * 0.43 * 0.01
    first = AutoPolicy(target_costs=native, draft_token_s=0.43 * 0.01, model_free=False, k_max=8, draft_prefill_token_s=2e-4,
                       prompt_tokens=100, max_new_tokens=96)
    assert first.choose() == 1
    first.observe(rnd(1, 0, 0.43 * 0.01 + 99 * 2e-4, first.costs.v(2), fed=100))  # rejected, after a 99-token catch-up
    assert abs(first.draft_token_s - 0.43 * 0.01) < 1e-9 and first.can_ever_win()
    # the same draft after a prompt whose catch-up would cost more than that: plain, probed later
    pol = AutoPolicy(target_costs=native, draft_token_s=0.43 * 0.01, model_free=False, k_max=8, draft_prefill_token_s=2e-4,
                     prompt_tokens=1000, max_new_tokens=96)
    assert pol.choose() == 0


def test_auto_stops_probing_a_draft_its_earlier_generations_found_useless():
    """A generation's first draft (a plan from the prior, or the first-round probe, with its catch-up over the
    prompt) is skipped once this engine's earlier generations saw the draft's first tokens rejected often enough
    that no K would win at that rate; a draft with a good record drafts at once."""
    native = CostProfile([0.01 * r for r in (1, 1.10, 1.14, 1.18, 1.25, 1.32, 1.40, 1.47, 1.55)])

    def generation(learned, accept):
        pol = AutoPolicy(target_costs=native, draft_token_s=0.06 * 0.01, model_free=False, k_max=8,
                         draft_prefill_token_s=1e-4, prompt_tokens=100, max_new_tokens=96)
        if learned:
            pol.resume(learned)
        first = pol.choose()
        if first:
            pol.observe(rnd(1, int(accept), 0.06 * 0.01 + 99 * 1e-4, native.v(2), fed=100))
        return first, pol.learned()

    learned, probes = None, []
    for _ in range(8):
        k, learned = generation(learned, accept=False)
        probes.append(k)
    # drafted until the record (1 + hits) / (2 + tries) fell to where no K wins on this profile: 5 tries
    assert min(probes[:3]) > 0 and probes[5:] == [0, 0, 0], probes
    learned = None
    for _ in range(6):
        k, learned = generation(learned, accept=True)
        assert k > 0


def test_hybrid_auto_plans_each_drafter_apart():
    """head+ngram under auto: text that copies its prompt half the time, a model draft never right. The rounds
    with a lookup match go to prompt lookup at its own K; the others to the model draft's plan, which soon
    settles on plain steps. Priced as one drafter (before HybridPolicy), the failing model draft dragged the
    pair to plain steps and the matches went unused."""
    from ryzanstein.speculative.hybrid_policy import HybridPolicy
    from ryzanstein.speculative.proposers import HybridProposer

    native = CostProfile([0.01 * r for r in (1, 1.10, 1.14, 1.18, 1.25, 1.32, 1.40, 1.47, 1.55)])  # the 1.5B's
    hybrid = HybridProposer(NgramProposer(), NgramProposer())  # the model draft's own proposals are simulated
    main = AutoPolicy(target_costs=native, draft_token_s=0.06 * 0.01, model_free=False, k_max=8)
    pol = HybridPolicy(hybrid, AutoPolicy(target_costs=native, draft_token_s=2e-5, model_free=True, k_max=8), main)
    source = list(range(1000, 4000))  # the prompt: what the copying phases copy
    context, j, fresh = [1] + source + [2], 0, iter(range(5000, 9000))
    copy_rounds = lookup_rounds = model_rounds = 0
    for i in range(400):
        copying = (i // 20) % 2 == 0
        truth = source[j:j + 9] if copying else [next(fresh) for _ in range(9)]
        k = pol.choose(context)
        draft, conf = [], None
        if k and hybrid.route == "lookup":
            draft = hybrid.propose(context, k).tokens
            lookup_rounds += copying and i % 20 > 2
        elif k:
            draft, conf = [-1] * min(k, 2), [0.5] * min(k, 2)  # the model draft: always wrong
            model_rounds += 1
        n = 0
        while n < len(draft) and draft[n] == truth[n]:
            n += 1
        out = truth[:n + 1]
        pol.observe(rnd(len(draft), n, 6e-4 * len(draft) if conf else 2e-5, native.v(len(draft) + 1),
                        emitted=out, conf=conf))
        context += out
        j += len(out) if copying else 0
        copy_rounds += copying and i % 20 > 2
    assert lookup_rounds >= 0.8 * copy_rounds, (lookup_rounds, copy_rounds)
    assert model_rounds < 40  # probes, then plain: the model draft's plan is its own
    speedup, _ = pol.prediction()
    assert speedup > 1.5


def test_acceptance_model_learns_from_the_drafts_confidence():
    m = AcceptanceForecast(8)
    for _ in range(30):  # a draft whose sure tokens are accepted and unsure ones rejected
        m.new_round()
        m.verified(3, 2, conf=[0.97, 0.9, 0.2])
    sure, unsure = m.alphas([0.97]), m.alphas([0.2])
    assert sure[0] > 0.9 and unsure[0] < 0.25
    assert m.alphas()[0] > 0.9  # positionally, first drafts are (here) always accepted


def test_acceptance_calibration_corrects_optimistic_estimates():
    m = AcceptanceForecast(4)
    for _ in range(40):  # the free shadow draft scores well, the rounds actually verified accept nothing
        for _ in range(3):
            m.new_round()
            m.shadowed(True)
        m.new_round()
        m.verified(4, 0)
    assert m.alphas()[0] > 0.6  # the per-position estimate alone would promise ~2 extra tokens a round
    assert m.calibration() < 0.5 and m.expected_tokens(m.alphas())[4] < 1.0 + 0.5 * m.expected_tokens(m.alphas(), calibrated=False)[4]
    honest, rng = AcceptanceForecast(4), np.random.default_rng(0)
    for _ in range(300):  # independent per-token acceptance: the product model is right, calibration ~1
        honest.new_round()
        n = 0
        while n < 4 and rng.random() < 0.7:
            n += 1
        honest.verified(4, n)
    assert 0.8 < honest.calibration() < 1.2


def test_auto_model_draft_stops_at_an_unsure_token():
    pol = AutoPolicy(target_costs=flat(), draft_token_s=0.02 * 0.01, model_free=False, k_max=8)  # cheap draft, flat costs: drafting pays
    for _ in range(40):  # sure tokens are accepted, unsure ones rejected
        k = pol.choose()
        conf = [0.97, 0.97, 0.97, 0.2, 0.97, 0.97, 0.97, 0.97][:k]
        n = next((i for i, c in enumerate(conf) if c < 0.5), len(conf))
        pol.observe(rnd(len(conf), n, 1e-5 * k, pol.costs.v(k + 1), conf=conf))
    assert pol.choose() == 8  # a model draft picks its length itself, up to k_max
    assert not pol.stop_drafting([0.97, 0.97])  # sure so far: draft on
    assert pol.stop_drafting([0.97, 0.97, 0.97, 0.2])  # the next token is unlikely to survive an unsure one
    assert pol.stop_drafting([0.97] * 8)  # k_max reached


def test_auto_learns_that_multi_token_verifies_cost_more_than_profiled():
    pol = AutoPolicy(target_costs=flat(), draft_token_s=1e-5, model_free=True, k_max=8)
    for _ in range(20):
        pol.observe(rnd(4, 4, 1e-5, 1.3 * pol.costs.v(5)))  # speculative rounds 30% dearer than profiled
        pol.observe(rnd(0, 0, 0.0, pol.costs.v(1)))  # one-token steps as profiled
    assert 1.2 < pol.spec_bias < 1.4 and 0.9 < pol.scale < 1.1
    # the engine's next generation starts from what this one learned about the machine (not about the text)
    nxt = AutoPolicy(target_costs=flat(), draft_token_s=1e-5, model_free=True, k_max=8)
    nxt.resume(pol.learned())
    assert nxt.spec_bias == pol.spec_bias and sum(nxt.forecast.tried) == 0
    assert nxt.forecast.pred_extra <= 8.0 and abs(nxt.forecast.calibration() - pol.forecast.calibration()) < 0.3


def test_heuristic_policy():
    h = HeuristicPolicy(4, 1, 8)
    h.observe(rnd(4, 4, 0, 0))
    assert h.choose() == 6
    h.observe(rnd(6, 2, 0, 0))
    assert h.choose() == 5


def test_auto_prediction_counts_the_draft_catch_up_prefill():
    """A model draft's first round catches up with the whole prompt: that time is in the predicted speedup."""
    preds = []
    for prefill_token_s in (0.0, 1e-4):
        pol = AutoPolicy(target_costs=flat(), draft_token_s=1e-3, model_free=False, k_max=8, draft_prefill_token_s=prefill_token_s,
                         prompt_tokens=1001, max_new_tokens=1 << 20)
        assert pol.choose() > 0  # a flat profile: drafting pays from the start
        pol.observe(rnd(2, 2, 2e-3 + 1000 * prefill_token_s, pol.costs.v(3), fed=1001))
        preds.append(pol.pred_time)
    assert preds[1] == pytest.approx(preds[0] + 1000 * 1e-4)


def test_auto_skips_a_probe_whose_catch_up_prefill_costs_too_much():
    # a cheap model draft that would pay on 2 cores if it were good (so it is worth probing), but its
    # catch-up over a 2000-token prompt (0.1 ms a token) costs more than the 10% of a 128-token generation a
    # first-round probe may take, and more than the 5% of later ones
    pol = AutoPolicy(target_costs=steep(), draft_token_s=0.05 * 0.01, model_free=False, k_max=8, draft_prefill_token_s=1e-4,
                prompt_tokens=2000, max_new_tokens=128)
    assert pol.can_ever_win()
    ks = []
    for _ in range(120):
        k = pol.choose()
        ks.append(k)
        pol.observe(rnd(k, 0, 0.0, pol.costs.v(k + 1), emitted=[1]))
    assert max(ks) == 0
    pol.remaining, pol.lag = 100_000, 10  # a long generation with the draft nearly in step: worth a probe
    ks = []
    for _ in range(600):
        ks.append(pol.choose())
        pol.observe(rnd(ks[-1], 0, 0.0, pol.costs.v(ks[-1] + 1), emitted=[1]))
        pol.lag = 10
    assert max(ks) == 1


def _catch_up_policy(prompt_tokens, max_new_tokens=100_000):
    """A model draft whose plan wins (flat verifies, a cheap draft), its catch-up 0.1 of a step a token."""
    return AutoPolicy(target_costs=flat(), draft_token_s=0.05 * 0.01, model_free=False, k_max=8,
                      draft_prefill_token_s=1e-3, prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens)


def plain_round(pol):
    pol.observe(rnd(0, 0, 0.0, pol.costs.v(1), emitted=[1]))


def test_auto_weighs_a_model_drafts_catch_up_against_the_tokens_still_expected():
    """Behind a 700-token catch-up (70 steps) the plan waits: the answer may be short, and drafting would save
    ~0.4 of a step a token over the 128 tokens expected at first. A generation that has run long enough to
    repay it is expected to run on: then the catch-up is fed a chunk a round (4 steps' worth: 40 tokens), K
    asked for every round, and the draft drafts once in step. A short prompt's catch-up is paid at once."""
    short_prompt = _catch_up_policy(30)
    assert short_prompt.choose() == 8 and not short_prompt.catching_up
    pol = _catch_up_policy(700)
    assert pol.best_k() > 0 and pol.catch_up_limit() == 40
    plain = 0
    while not pol.choose():
        plain_round(pol)
        plain += 1
    # (700 + t) * 1e-3 s <= ~0.004 s * t from t ~ 240 tokens on; plans are re-made every 32 rounds
    assert 240 <= plain <= 320 and plain % 32 == 0 and pol.catching_up == 8
    lag, chunks = pol.lag, 0
    while pol.lag > 40:  # the draft feeds 40 tokens a round (the round emits one) and drafts nothing
        pol.observe(rnd(0, 0, 40 * 1e-3, pol.costs.v(1), emitted=[1], fed=40))
        chunks += 1
        assert pol.choose() == 8
    assert lag == 700 + 1 + plain and chunks == math.ceil((lag - 40) / 39)
    pol.observe(rnd(3, 3, pol.lag * 1e-3 + 3 * 0.05 * 0.01, pol.costs.v(4), fed=pol.lag))  # in step: it drafted
    assert not pol.catching_up and pol.lag == 1 and pol.choose() == 8
    assert pol.draft_prefill_token_s == pytest.approx(1e-3)  # the chunks cost what was predicted
    # the same generation with max_new_tokens = 100: never worth it
    capped = _catch_up_policy(700, max_new_tokens=100)
    for _ in range(99):
        assert capped.choose() == 0
        plain_round(capped)


def test_auto_learns_what_a_catch_up_chunk_costs():
    pol = _catch_up_policy(700)
    pol.catching_up = 8
    for _ in range(10):  # chunks at half the predicted cost per token
        pol.observe(rnd(0, 0, 40 * 0.5e-3, pol.costs.v(1), emitted=[1], fed=40))
    assert 0.5e-3 < pol.draft_prefill_token_s < 0.8e-3 and pol.catch_up_limit() > 40
    nxt = _catch_up_policy(700)
    nxt.resume(pol.learned())  # the engine's next generation starts from it
    assert nxt.draft_prefill_token_s == pol.draft_prefill_token_s


def native_like(v1=0.01, n=16):
    """A forward's cost rising ~8% a row past the first, as the native kernels' v(n) does (docs/benchmarks.md)."""
    return CostProfile([v1 * (1 + 0.08 * i) for i in range(n)])


def test_auto_in_a_batch_prices_drafts_at_their_marginal_cost():
    load = [(0, 0)]
    pol = AutoPolicy(target_costs=native_like(), draft_token_s=1e-5, model_free=True, k_max=8,
                     load=lambda: load[0])
    alone = AutoPolicy(target_costs=native_like(), draft_token_s=1e-5, model_free=True, k_max=8)
    pol.choose()
    assert pol.round_cost() == alone.round_cost()  # no one else in the step: v(K + 1), as alone
    rng = np.random.default_rng(0)
    feed(pol, 60, 0.6, rng)
    feed(alone, 60, 0.6, np.random.default_rng(0))
    k_alone = alone.choose()
    assert k_alone >= 2
    load[0] = (15 * 4 + pol._rows_last, 16)  # the last step: 15 others verifying 3 drafts each, and this one
    k_busy = pol.choose()
    v = pol.costs.v
    assert pol.round_cost()[0] == pytest.approx(pol.scale * v(61) / 16 + pol.overhead_s)  # a plain step's share
    assert k_busy < k_alone  # the same drafts are worth less where the forward is shared
    load[0] = (1, 1)  # the load falls: drafting returns
    assert pol.choose() >= k_busy
