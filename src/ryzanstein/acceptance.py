"""The acceptance model behind policy `auto`: how likely is each draft token to be accepted, this generation?

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

import numpy as np

DECAY = 0.97  # per round: evidence older than ~30 rounds fades
PRIOR = 1.0  # pseudo-counts pulling each position toward the pooled rate
CONF_EDGES = np.array([0.3, 0.5, 0.7, 0.85, 0.95])  # bins of the draft's probability for its own token
CONF_PRIOR = 2.0  # pseudo-counts pulling a confidence bin toward the positional rate
CAL_PRIOR = 2.0  # pseudo-tokens holding the calibration at 1 until rounds say otherwise
CAL_RANGE = (0.25, 1.5)


def extra_tokens(alphas: np.ndarray) -> np.ndarray:
    """E[accepted drafts | K] for K = 0..len(alphas): sum over j < K of prod over i <= j of alpha_i."""
    return np.concatenate(([0.0], np.cumsum(np.cumprod(alphas))))


class AcceptanceModel:
    def __init__(self, k_max: int) -> None:
        self.acc, self.tried = np.zeros(k_max), np.zeros(k_max)  # decayed counts per draft position
        nb = len(CONF_EDGES) + 1
        self.conf_acc, self.conf_tried = np.zeros(nb), np.zeros(nb)  # ... per confidence bin
        self.pred_extra = self.real_extra = 0.0  # decayed sums over verified rounds, for the calibration
        self.pending = 0  # rounds whose decay is not applied yet (a plain round must cost microseconds)

    def positional(self) -> np.ndarray:
        """(k_max,) acceptance of draft i given drafts 0..i-1 were accepted."""
        self._decay()
        pooled = (self.acc.sum() + 1.0) / (self.tried.sum() + 2.0)
        return (self.acc + PRIOR * pooled) / (self.tried + PRIOR)

    def alphas(self, conf: list[float] | None = None) -> np.ndarray:
        """(k_max,) acceptance per position; the first len(conf) use the draft's confidence in its tokens."""
        a = self.positional()
        if conf:
            n = min(len(conf), len(a))
            b = np.searchsorted(CONF_EDGES, conf[:n], side="right")
            a[:n] = (self.conf_acc[b] + CONF_PRIOR * a[:n]) / (self.conf_tried[b] + CONF_PRIOR)
        return a

    def calibration(self) -> float:
        self._decay()
        c = (self.real_extra + CAL_PRIOR) / (self.pred_extra + CAL_PRIOR)
        return float(np.clip(c, *CAL_RANGE))

    def expected_tokens(self, alphas: np.ndarray, calibrated: bool = True) -> np.ndarray:
        """E[tokens emitted | K] for K = 0..len(alphas) (the target's own token included)."""
        return 1.0 + (self.calibration() if calibrated else 1.0) * extra_tokens(alphas)

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
                x *= f
            self.pred_extra *= f
            self.real_extra *= f
            self.pending = 0

    def verified(self, k: int, num_accepted: int, conf: list[float] | None = None) -> None:
        """A round verified k drafts and accepted num_accepted (conf: the draft's probability per token)."""
        pred = float(extra_tokens(self.alphas(conf)[:k])[k])  # before this round's evidence (applies the decay)
        self.pred_extra += pred
        self.real_extra += num_accepted
        reached = min(num_accepted + 1, k)  # positions 0..reached-1 were tested
        self.tried[:reached] += 1
        self.acc[:num_accepted] += 1
        if conf:
            b = np.searchsorted(CONF_EDGES, conf[:reached], side="right")
            np.add.at(self.conf_tried, b, 1)
            np.add.at(self.conf_acc, b[:num_accepted], 1)

    def shadowed(self, hit: bool) -> None:
        """An unverified draft's first token was (or was not) the token the target emitted."""
        self._decay()
        self.tried[0] += 1
        self.acc[0] += hit
