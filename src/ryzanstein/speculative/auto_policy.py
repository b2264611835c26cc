"""Policy `auto`: choose the draft length K from this machine's measured costs and the acceptance seen so far.

Before each round, pick K in {0, k_min..k_max} maximising the expected tokens per second

    rate(K) = E[tokens emitted | K] / (draft_cost(K) + v(K + 1)),   E = 1 + c * sum_j prod_{i<=j} alpha_i

where v(n) is the cost of one target forward over n tokens (costs.py), alpha_i the estimated chance that
draft i is accepted once drafts 0..i-1 were, and c the calibration of those estimates (the acceptance
forecast, acceptance_forecast.py).
K = 0 is a plain decoding step. A model draft then decides its length token by token: after each drafted
token it stops unless drafting on is predicted to raise the round's rate, with the tokens drafted so far
scored by the draft's own confidence in them.

When plain wins the policy keeps watching cheaply: a model-free draft is still proposed every round (it costs
microseconds) and scored against what the target actually emitted ("shadow" acceptance); a model draft is
probed with K = 1 at exponentially spaced rounds, and only if some K would win were the draft good (90%
accepted): a probe costs a verify of 2 tokens plus the draft catching up with the context, so a draft that
cannot pay is never probed, and one whose catch-up prefill would cost more than 5% of the plain time of the
tokens still expected is not either. A model draft is probed in the first round, before anything is known of
it on this text (its catch-up is then the prompt, allowed up to 10%): waiting 32 rounds first made the
prompt's catch-up a cost no later probe could afford, so a good draft was never tried (Qwen 1.5B + 0.5B on the
native backend: 89% of the tokens it drafted were accepted, yet it drafted in 5% of the rounds). Unless the
draft's record in this engine's earlier generations (its first drafted tokens, accepted or not, the last ~16
tries) says it cannot win: a weak head probed at every prompt's start paid its catch-up over each prompt
(on ~650-token retrieval prompts, 9% of the head's decode time on the 1.5B, 2026-12-07). Its probes then
stay spaced out as the earlier generations left them.

A model draft's catch-up (every context token its cache lacks: after a long prompt, a prefill of the draft) is
weighed against what drafting would save over the tokens the generation is still expected to emit: as many as
it has emitted so far (a generation that has run long tends to run on), HORIZON at its start, never more than
max_new_tokens leaves. max_new_tokens alone says nothing: a server asked for no limit passes the context's
end, and a retrieval answer of 12-96 tokens after a 700-token prompt then paid the draft's 0.9 s prefill of
the prompt in a 3.5 s request (0.80x of plain, 2026-12-07). A plan whose saving would not repay the catch-up
is not taken; a probe's catch-up stays within its budget of the tokens expected. Once taken, the catch-up is
fed a chunk a round (CATCH_UP_STEPS plain steps' worth, the round drafting nothing) until the draft is in
step, so no round stalls on a whole prefill and an answer that ends meanwhile has paid only the chunks fed.

Costs are refined online: the machine's live speed (`scale`, from every verifying forward), the extra cost of
multi-token verifies over the profile (`spec_bias`: the profile is taken at a short context), the draft's
cost per token, its catch-up's cost per token (from the chunk rounds) and the per-round overhead outside draft
and verify.
"""
from __future__ import annotations

from typing import Callable

from .acceptance_forecast import AcceptanceForecast
from .costs import CostProfile
from .policies import DraftLengthPolicy
from .round import Round

PROBE_FIRST, PROBE_MAX = 32, 512
ALPHA_GOOD = 0.9  # a model draft is probed only if it would win when this good
PROBE_BUDGET = 0.05  # ... and if the probe costs at most this share of the plain time of the tokens expected
FIRST_PROBE_BUDGET = 0.10  # a first-round probe may cost this share (its catch-up: the whole prompt)
HORIZON = 128  # tokens a generation is expected to emit, at its start (a bench budget of 96-128 is that anyway)
CATCH_UP_STEPS = 4  # a round feeds a model draft's catch-up this many plain steps' worth of its prefill
CATCH_UP_MIN = 32  # ... and at least this many tokens (a prefill's cost per token holds from about there)
REPLAN_EVERY = 32  # rounds: costs drift slowly; news about the draft (a shadow hit, a probe) re-plans at once
EMA = 0.1  # weight of the newest observation in the online cost estimates
# learned costs the next generation starts from
CARRY = ("scale", "spec_bias", "draft_token_s", "draft_prefill_token_s", "overhead_s")
CARRY_CALIBRATION = 8.0  # ... and the calibration, as at most this many predicted tokens of evidence
RECORD_MIN, RECORD_MAX = 3, 16  # a model draft's first-draft record across generations: trusted from 3 tries,
# kept to the last ~16 (older evidence scaled down, so a draft that turns good on new text is believed again)


def _ema(old: float, new: float, cap: float = 3.0, w: float = EMA, floor: float = 0.0) -> float:
    """Follow `new`, but let one observation (a scheduler stall) count at most `cap` times the estimate
    (plus `floor`, so an estimate starting at 0 can grow)."""
    return (1 - w) * old + w * min(new, cap * old + floor)


class AutoPolicy(DraftLengthPolicy):
    name = "auto"

    def __init__(self, *, target_costs: CostProfile, draft_token_s: float, model_free: bool, k_min: int = 0,
                 k_max: int = 8, min_speedup: float = 1.0, draft_prefill_token_s: float = 0.0,
                 prompt_tokens: int = 0, max_new_tokens: int = 1 << 30,
                 load: Callable[[], tuple[int, int]] | None = None) -> None:
        self.costs, self.model_free = target_costs, model_free
        self.load, self._load = load, (0, 0)
        self.draft_token_s = draft_token_s  # seconds per drafted token (refined online)
        self.k_min, self.k_max, self.min_speedup = max(k_min, 1), k_max, min_speedup
        self._v = [target_costs.v(n) for n in range(1, k_max + 2)]  # v(K+1) for K = 0..k_max
        self._v1 = self._v[0]
        self._replan_at = 0  # while plain wins and no news arrives, choose() re-plans only every REPLAN_EVERY
        self.forecast = AcceptanceForecast(k_max)
        self.scale = 1.0  # live machine speed / profiled speed, from observed forwards
        self.spec_bias = 1.0  # observed / profiled cost of multi-token verifies, relative to one-token steps
        self.spec_rounds = 0
        self.overhead_s = 0.0  # per round, outside draft and verify: bookkeeping, detokenizing, the caller
        self._last_fwd_s = 0.0
        self.since_spec, self.probe_every = 0, PROBE_FIRST
        self._probe_check_at = 0  # a probe that did not pay is not reconsidered before this round
        # a model draft must first catch up with every token it has not seen (a prefill): at the start, the
        # prompt less what the draft's cache already holds (prompt_tokens, as the engine passes it) and the
        # token the prefill emitted
        self.draft_prefill_token_s, self.remaining = draft_prefill_token_s, max_new_tokens
        self.lag = prompt_tokens + 1
        self.emitted = 0  # tokens emitted by the rounds so far
        self.catching_up = 0  # K to ask for while a model draft feeds its catch-up chunk by chunk (0: none)
        self.pred_tokens = self.pred_time = self.pred_plain_time = 0.0  # sums over the rounds taken
        self.pred_rounds = 0  # ... and their count
        self.rounds = 0
        self._rows_last = 1  # rows this sequence put in its last verify (in a batch: not the others')
        self.first_hits = self.first_tries = 0.0  # a model draft's first drafted tokens: accepted, verified
        self._verified = 0  # rounds of this generation that verified drafts

    def learned(self) -> dict:
        """What this generation learned about the machine and the draft (not the text), for the next one."""
        d = {k: float(getattr(self, k)) for k in CARRY}
        d["spec_rounds"] = min(self.spec_rounds, 5)  # a carried spec_bias still moves fast at first
        d["calibration"] = self.forecast.calibration_evidence(CARRY_CALIBRATION)
        scale = min(1.0, RECORD_MAX / self.first_tries) if self.first_tries else 1.0
        d["first_draft"] = (self.first_hits * scale, self.first_tries * scale)
        d["probe_every"] = self.probe_every
        return d

    def resume(self, d: dict) -> None:
        for k in CARRY:
            setattr(self, k, d[k])
        self.spec_rounds = d["spec_rounds"]
        self.forecast.pred_extra, self.forecast.real_extra = d["calibration"]
        self.first_hits, self.first_tries = d.get("first_draft", (0.0, 0.0))
        if not self.record_may_win():  # probed and failed in earlier generations: keep spacing the probes out
            self.probe_every = d.get("probe_every", PROBE_FIRST)

    # the plan ----------------------------------------------------------------------------------------------
    # (lists of Python floats, as in acceptance_forecast.py: this runs before every round that re-plans)
    def alphas(self, conf: list[float] | None = None) -> list[float]:
        return self.forecast.alphas(conf)

    def expected_tokens(self, alphas=None, calibrated: bool = True) -> list[float]:
        """E[tokens emitted | K] for K = 0..k_max."""
        return self.forecast.expected_tokens(self.alphas() if alphas is None else alphas, calibrated)

    def plain_round_cost(self) -> float:
        """Predicted seconds of a plain round (K = 0)."""
        return self.scale * self._v1 + self.overhead_s

    def round_cost(self) -> list[float]:
        """Predicted seconds of a round for K = 0..k_max."""
        spec, d = self.scale * self.spec_bias, self.draft_token_s
        return [self.plain_round_cost()] + [
            spec * v + k * d + self.overhead_s for k, v in enumerate(self._v[1:], 1)]

    def rates(self, alphas=None, calibrated: bool = True) -> list[float]:
        return [e / c for e, c in zip(self.expected_tokens(alphas, calibrated), self.round_cost())]

    def best_k(self, alphas=None, calibrated: bool = True) -> int:
        r = self.rates(alphas, calibrated)
        k = max(range(self.k_min, len(r)), key=r.__getitem__, default=0)
        return k if k and r[k] > r[0] and r[k] >= self.min_speedup * r[0] else 0

    def can_ever_win(self) -> bool:
        """Would some K beat plain decoding with a good draft (90% of tokens accepted)?"""
        return self.best_k([ALPHA_GOOD] * self.k_max, calibrated=False) > 0

    def record_may_win(self) -> bool:
        """Could the model draft win at the first-draft acceptance it showed in this engine's generations
        (every draft accepted that often)? True until it has RECORD_MIN tries."""
        if self.first_tries < RECORD_MIN:
            return True
        alpha = (self.first_hits + 1) / (self.first_tries + 2)
        return self.best_k([alpha] * self.k_max, calibrated=False) > 0

    def expected_left(self) -> float:
        """Tokens this generation is still expected to emit: as many as it has emitted, HORIZON at first, at
        most what max_new_tokens leaves."""
        return min(self.remaining, max(self.emitted, HORIZON))

    def catch_up_s(self) -> float:
        """Predicted seconds of a model draft's catch-up before it can draft (its last token is fed by any
        draft: part of its cost per token)."""
        return max(self.lag - 1, 0) * self.draft_prefill_token_s

    def catch_up_pays(self, k: int) -> bool:
        """Would drafting at K save, over the tokens still expected, what the draft's catch-up costs first?"""
        s = self.catch_up_s()
        if s == 0:  # in step (every round after one that drafted)
            return True
        e, c = self.expected_tokens(), self.round_cost()
        return s <= (c[0] / e[0] - c[k] / e[k]) * self.expected_left()

    def probe_pays(self, budget: float = PROBE_BUDGET) -> bool:
        """Is a probe (the draft's catch-up prefill + a 2-token verify) within budget of what is expected?"""
        cost = self.round_cost()
        probe = self.catch_up_s() + cost[1] - cost[0]
        return probe <= budget * self.expected_left() * cost[0]

    def catch_up_limit(self) -> int | None:
        """Tokens of its catch-up a model draft may feed in one round: CATCH_UP_STEPS plain steps' worth."""
        if self.model_free or self.draft_prefill_token_s <= 0:
            return None
        return max(CATCH_UP_MIN, int(CATCH_UP_STEPS * self.plain_round_cost() / self.draft_prefill_token_s))

    def _draft(self, k: int) -> int:
        """Ask a model draft for K tokens, this round or, if it lacks more than a round feeds, once in step."""
        limit = self.catch_up_limit()
        if limit is not None and self.lag > limit:
            self.catching_up = k
        return k

    def _price_batch(self) -> None:
        """In a batch, a round's cost is this sequence's share of a plain step plus the marginal cost of its
        drafted rows: with the others' rows R and sequences S in the last step,
        cost(K) = v(R + 1) / (S + 1) + v(R + 1 + K) - v(R + 1). Drafting then pays only where its extra tokens
        per extra second beat the batch's tokens per second, so K shrinks as the batch fills (alone: v(K + 1))."""
        rows, seqs = self.load()
        if (rows, seqs) == self._load:
            return
        self._load = (rows, seqs)
        mine = max(1, self._rows_last)
        r, s = max(rows - mine, 0), max(seqs - 1, 0)  # the others'
        v = self.costs.v
        base = v(r + 1)
        self._v = [base / (s + 1) + v(r + 1 + k) - base for k in range(self.k_max + 1)]
        self._v1 = self._v[0]
        self._replan_at = 0

    # the policy interface ----------------------------------------------------------------------------------
    def choose(self, context: list[int] | None = None) -> int:
        if self.load is not None:
            self._price_batch()
        if self.catching_up:  # a model draft feeding its catch-up a chunk a round: it drafts once in step
            return self.catching_up
        if self.rounds >= self._replan_at:
            k = self.best_k()
            if k and not self.model_free and not self._verified and not self.record_may_win():
                k = 0  # a plan from the prior alone, for a draft this engine has seen fail: wait for a probe
            if k and self.model_free:
                return k
            if k and self.catch_up_pays(k):
                return self._draft(self.k_max)  # a model draft picks its own length, by confidence
            # plain wins; until new evidence for the draft arrives, re-planning each round would only cost
            # time (a plan costs ~40 us with caches cold after a forward, measured in the decode loop)
            self._replan_at = self.rounds + REPLAN_EVERY
        if not self.model_free:
            # nothing is known of the draft on this text yet: probe it now
            if (self.rounds == 0 and self.can_ever_win() and self.record_may_win()
                    and self.probe_pays(FIRST_PROBE_BUDGET)):
                return self._draft(1)
            self.since_spec += 1
            if self.since_spec >= self.probe_every and self.rounds >= self._probe_check_at:
                if self.can_ever_win() and self.probe_pays():
                    self.probe_every = min(2 * self.probe_every, PROBE_MAX)
                    return self._draft(1)  # a cheap probe: has the draft become good?
                # the answer changes only as slowly as the learned costs: asking every round cost ~1% of a
                # 9 ms step (measured in the decode loop, SmolLM2 self-draft)
                self._probe_check_at = self.rounds + REPLAN_EVERY
        return 0

    def stop_drafting(self, conf: list[float]) -> bool:
        """Called by a model draft after each token: would drafting more lower the round's expected rate?"""
        n = len(conf)
        r = self.rates(self.alphas(conf))
        return n >= self.k_max or max(r[n + 1:]) <= r[n]

    def shadow_k(self) -> int:
        """How many tokens to propose (not verify) when choose() said 0: model-free drafts only."""
        return self.k_max if self.model_free else 0

    def observe(self, r: Round) -> None:
        k, num_accepted, draft_s, verify_s = r.k, r.num_accepted, r.draft_s, r.verify_s
        shadow, emitted, conf = r.shadow, r.emitted, r.conf
        n_out, fed = len(emitted), r.fed
        self.rounds += 1
        self.pred_rounds += 1
        self._rows_last = k + 1
        self.remaining -= n_out
        self.emitted += n_out
        self._last_fwd_s = draft_s + verify_s
        self.forecast.new_round()  # forget by rounds, not by observations: stale evidence fades even while plain
        if self.catching_up and (k or fed < CATCH_UP_MIN):  # drafted, or was not cut short: in step
            self.catching_up = 0
        if k == 0:  # the common case where speculation does not pay: scalars only
            c0 = self.plain_round_cost()
            self.pred_tokens += 1.0
            self.pred_time += c0 + fed * self.draft_prefill_token_s  # a catch-up round's chunk
            self.pred_plain_time += c0
            self.lag = max(self.lag - fed, 0) + n_out
            if fed >= CATCH_UP_MIN:  # a chunk of catch-up, all of the round's draft time
                self.draft_prefill_token_s = _ema(self.draft_prefill_token_s, draft_s / fed)
            self.scale = _ema(self.scale, verify_s / self._v1)
            if shadow and emitted:  # score what the free draft would have said
                hit = shadow[0] == emitted[0]
                self.forecast.shadowed(hit)
                if hit:
                    self._replan_at = 0  # news that could make speculation pay: plan again now
            return
        cost = self.round_cost()  # what was predicted for the round taken, and for a plain step instead
        # a model draft first caught up with the tokens it had not seen (a prefill): not its cost per token,
        # but part of the round's predicted time (left out, the 0.5B draft's predicted decode speedup ran
        # 1.94x against 1.35x measured on the long extraction prompts, 2026-12-07)
        catch_up_s = max(fed - 1, 0) * self.draft_prefill_token_s
        self.pred_tokens += self.expected_tokens(self.alphas(conf))[k]
        self.pred_time += cost[min(k, self.k_max)] + catch_up_s
        self.pred_plain_time += cost[0]
        self.lag = 1  # after a spec round the draft is (nearly) in step
        if k <= self.k_max:
            self.spec_rounds += 1  # a running mean at first (a generation has few speculative rounds), then an EMA
            w = max(EMA, 1.0 / (1 + self.spec_rounds))
            self.spec_bias = _ema(self.spec_bias, verify_s / (self.scale * self._v[k]), w=w)
            self.scale = _ema(self.scale, verify_s / (self.spec_bias * self._v[k]))
        self.since_spec = 0
        if num_accepted:
            self._replan_at = 0  # news (a probe accepted): plan again next round
        self._verified += 1
        if not self.model_free:
            self.first_tries += 1
            self.first_hits += num_accepted > 0
            self.probe_every = PROBE_FIRST if num_accepted else self.probe_every
        if draft_s > catch_up_s:  # else the round says nothing about the cost per token
            self.draft_token_s = _ema(self.draft_token_s, (draft_s - catch_up_s) / k)
        self.forecast.verified(k, num_accepted, conf)

    def elsewhere(self, r: Round, shadow: list[int]) -> None:
        """A round this policy did not plan (in a hybrid drafter, the other drafter's, or a plain step its partner
        accounted): keep the generation's counts and the draft's lag, and score `shadow`, what this drafter
        proposed without it being verified, against what the round emitted."""
        n_out = len(r.emitted)
        self.rounds += 1
        self.remaining -= n_out
        self.emitted += n_out
        self.lag += n_out
        self.forecast.new_round()
        if shadow and r.emitted:
            hit = shadow[0] == r.emitted[0]
            self.forecast.shadowed(hit)
            if hit:
                self._replan_at = 0

    def observe_wall(self, wall_s: float) -> None:
        """The last round's wall time, start to next start (so the caller's time per round counts too)."""
        self.overhead_s = _ema(self.overhead_s, max(wall_s - self._last_fwd_s, 0.0), floor=1e-3)

    def prediction(self) -> tuple[float, float]:
        """(predicted speedup over plain, predicted decode tokens/s) of the rounds taken."""
        return prediction_of(self.pred_tokens, self.pred_time, self.pred_rounds, self.pred_plain_time)


def prediction_of(tokens: float, time: float, rounds: float, plain_time: float) -> tuple[float, float]:
    """(speedup over plain, tokens/s) of rounds predicted to emit `tokens` in `time`, where plain decoding would
    have taken `plain_time` for `rounds` tokens; (1, 0) before any round."""
    if not time:
        return 1.0, 0.0
    return (tokens / time) / (rounds / plain_time), tokens / time

