"""Policy `auto` for a combined drafter (`head+ngram`, proposers.HybridProposer): two plans, one per drafter.

Prompt lookup and a model draft differ in everything the plan depends on: lookup costs microseconds and is
accepted on grounded text only, a model draft costs a share of a step and is accepted (or not) everywhere.
Priced as one drafter, the pair got the model's plan: with a weak head, `auto` chose plain steps and the
lookup's matches went unused (the 1.5B's first head: `head+ngram` 1.00x against `ngram` 1.10x, below it in
every category, 2026-12-07). So each drafter has its own AutoPolicy, the machine's costs shared between them:

- Before each round prompt lookup is asked (free). If it has a draft and its plan drafts, the lookup's draft
  is verified, at the K that plan chose: a round the lookup alone would have taken just the same.
- Otherwise the model draft's plan decides (draft, probe, catch up, or a plain step), as it would alone.
- The lookup's draft of a round it did not take is scored against what the target emitted (its shadow), as
  `ngram` alone scores the rounds it lets pass; the model draft keeps count of the context it has not seen.

So rounds with a lookup match go as `ngram` would take them, the rest as the model draft would: the design
aims at the better of the two in every category (measured on the 54 bench prompts with the 1.5B's head, which
never pays: within 0.01x of `ngram` alone in every category, docs/distill.md).
"""
from __future__ import annotations

from .auto_policy import AutoPolicy, prediction_of
from .policies import DraftLengthPolicy
from .round import Round

SHARED = ("scale", "spec_bias", "overhead_s")  # the machine and the target, the same whichever drafter ran


class HybridPolicy(DraftLengthPolicy):
    name = "auto"

    def __init__(self, proposer, lookup: AutoPolicy, main: AutoPolicy) -> None:
        self.proposer, self.lookup, self.main = proposer, lookup, main
        self._owner = main  # the plan of the last round
        self._shadow: list[int] = []  # the lookup's draft this round
        self._share(main)  # the model draft's plan may resume what earlier generations learned

    def _share(self, src: AutoPolicy) -> None:
        dst = self.main if src is self.lookup else self.lookup
        for a in SHARED:
            setattr(dst, a, getattr(src, a))

    def choose(self, context: list[int] | None = None) -> int:
        lookup = self.proposer.plan_lookup(context, self.lookup.k_max) if context is not None else []
        self._shadow = lookup
        if lookup:
            k = self.lookup.choose()
            if k:
                self._owner = self.lookup
                self.proposer.route = "lookup"
                return k
        self._owner = self.main
        self.proposer.route = "main"
        return self.main.choose()

    def stop_drafting(self, conf: list[float]) -> bool:
        return self.main.stop_drafting(conf)

    def catch_up_limit(self) -> int | None:
        return self.main.catch_up_limit() if self._owner is self.main else None

    def observe(self, r: Round) -> None:
        if self._owner is self.lookup and r.k:
            self.lookup.observe(r)
            self.main.elsewhere(r, [])
            self._share(self.lookup)
        else:  # the model draft's round, or a plain step
            self.main.observe(r)
            self.lookup.elsewhere(r, self._shadow)
            self._share(self.main)
            self._owner = self.main

    def observe_wall(self, wall_s: float) -> None:
        self._owner.observe_wall(wall_s)
        self._share(self._owner)

    def prediction(self) -> tuple[float, float]:
        a, b = self.lookup, self.main  # the rounds each drafter took, as one generation's
        return prediction_of(a.pred_tokens + b.pred_tokens, a.pred_time + b.pred_time,
                             a.pred_rounds + b.pred_rounds, a.pred_plain_time + b.pred_plain_time)

    def learned(self) -> dict:
        return self.main.learned()  # the model draft's costs; the shared ones are the same in both
