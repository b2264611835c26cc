"""The acceptance forecast behind policy `auto`: how likely is each draft token to be accepted, this generation?

A forecast, not a rule: which drafts are accepted is decided by acceptance_rules.py; this predicts it.

Three kinds of evidence, all forgotten at DECAY per round so the estimates follow the text:
- by position: of the rounds whose draft reached position i, the share that accepted it (conditional on
  drafts 0..i-1 having been accepted, which is what the expected-tokens product needs);
- by the draft's own confidence (model drafts): acceptance per bin of the probability the draft gave the
  token it proposed, pulled toward the positional rate while a bin has little evidence;
- calibration: realised over predicted extra tokens in the rounds actually verified. K is chosen when the
  estimates look good, so the rounds taken see optimistic estimates (the winner's curse), and nobody predicts
  the end of a copied span: on prompt lookup (SmolLM2), uncalibrated predictions of accepted tokens ran
  10-40% high.
"""
from __future__ import annotations

from bisect import bisect_right
from itertools import accumulate

# Plain Python floats, not numpy: the policy runs this before a round, with the caches still cold from the
# last forward, where ~25 small numpy calls cost ~155 us (measured in the decode loop, SmolLM2 + prompt
# lookup: 1.6% of a 9.7 ms step); on at most 17 numbers Python lists cost a fraction of that.
DECAY = 0.97  # per round: evidence older than ~30 rounds fades
PRIOR = 1.0  # pseudo-counts pulling each position toward the pooled rate
CONF_EDGES = (0.3, 0.5, 0.7, 0.85, 0.95)  # bins of the draft's probability for its own token
CONF_PRIOR = 2.0  # pseudo-counts pulling a confidence bin toward the positional rate
CAL_PRIOR = 2.0  # pseudo-tokens holding the calibration at 1 until rounds say otherwise
CAL_RANGE = (0.25, 1.5)


def extra_tokens(alphas) -> list[float]:
    """E[accepted drafts | K] for K = 0..len(alphas): sum over j < K of prod over i <= j of alpha_i."""
    return [0.0, *accumulate(accumulate(alphas, lambda a, b: a * b))]


def _bin(c: float) -> int:
    return bisect_right(CONF_EDGES, c)


class AcceptanceForecast:
    def __init__(self, k_max: int) -> None:
        self.acc, self.tried = [0.0] * k_max, [0.0] * k_max  # decayed counts per draft position
        nb = len(CONF_EDGES) + 1
        self.conf_acc, self.conf_tried = [0.0] * nb, [0.0] * nb  # ... per confidence bin
        self.pred_extra = self.real_extra = 0.0  # decayed sums over verified rounds, for the calibration
        self.pending = 0  # rounds whose decay is not applied yet (a plain round must cost microseconds)

    def positional(self) -> list[float]:
        """(k_max,) acceptance of draft i given drafts 0..i-1 were accepted."""
        self._decay()
        pooled = (sum(self.acc) + 1.0) / (sum(self.tried) + 2.0)
        return [(a + PRIOR * pooled) / (t + PRIOR) for a, t in zip(self.acc, self.tried)]

    def alphas(self, conf: list[float] | None = None) -> list[float]:
        """(k_max,) acceptance per position; the first len(conf) use the draft's confidence in its tokens."""
        a = self.positional()
        if conf:
            for i, c in enumerate(conf[:len(a)]):
                b = _bin(c)
                a[i] = (self.conf_acc[b] + CONF_PRIOR * a[i]) / (self.conf_tried[b] + CONF_PRIOR)
        return a

    def calibration(self) -> float:
        self._decay()
        c = (self.real_extra + CAL_PRIOR) / (self.pred_extra + CAL_PRIOR)
        return min(max(c, CAL_RANGE[0]), CAL_RANGE[1])

    def expected_tokens(self, alphas, calibrated: bool = True) -> list[float]:
        """E[tokens emitted | K] for K = 0..len(alphas) (the target's own token included)."""
        c = self.calibration() if calibrated else 1.0
        return [1.0 + c * x for x in extra_tokens(alphas)]

    def calibration_evidence(self, limit: float) -> tuple[float, float]:
        """(predicted, realised) extra tokens, scaled down to at most `limit` predicted: a prior to carry over."""
        self._decay()
        f = min(1.0, limit / self.pred_extra) if self.pred_extra > 0 else 0.0
        return self.pred_extra * f, self.real_extra * f

    def new_round(self) -> None:
        self.pending += 1

    def _decay(self) -> None:
        if self.pending:
            f = DECAY ** self.pending
            for x in (self.acc, self.tried, self.conf_acc, self.conf_tried):
                x[:] = [v * f for v in x]
            self.pred_extra *= f
            self.real_extra *= f
            self.pending = 0

    def verified(self, k: int, num_accepted: int, conf: list[float] | None = None) -> None:
        """A round verified k drafts and accepted num_accepted (conf: the draft's probability per token)."""
        # before this round's evidence; a separate statement, since alphas() applies the pending decay to
        # pred_extra, which `self.pred_extra += ...` would have read before it
        pred = extra_tokens(self.alphas(conf)[:k])[k]
        self.pred_extra += pred
        self.real_extra += num_accepted
        reached = min(num_accepted + 1, k)  # positions 0..reached-1 were tested
        for i in range(reached):
            self.tried[i] += 1
            if i < num_accepted:
                self.acc[i] += 1
        for i, c in enumerate((conf or [])[:reached]):
            b = _bin(c)
            self.conf_tried[b] += 1
            if i < num_accepted:
                self.conf_acc[b] += 1

    def shadowed(self, hit: bool) -> None:
        """An unverified draft's first token was (or was not) the token the target emitted."""
        if self.pending > 64:  # keep the weight below ~7
            self._decay()
        w = DECAY ** -self.pending  # the pending decay will scale it back to 1 (called every plain round:
        self.tried[0] += w          # decaying the arrays here cost ~4 us, more with caches cold)
        self.acc[0] += hit * w
