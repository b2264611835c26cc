"""Proposers: guess the next k tokens cheaply (the draft) so the target can check them in one forward.

`propose(context, k, stop=None) -> Draft`. `context` is every token so far (prompt + output); its last token is
the one the target has not cached yet. A Draft carries the distributions its tokens were sampled from
(`probs`), or None for a model-free draft, which the acceptance rule treats as one-hot; a model draft also
gives its probability for each token it proposed (`conf`) and asks `stop(conf so far) -> bool`, the policy's
rule, after each token (a model-free proposer has no confidence to ask with, and ignores it).

A draft model must first feed every context token its KV cache lacks (its catch-up: after a long prompt, a
prefill of the draft). `catch_up` bounds that work for one call: a draft lacking more feeds that many and
drafts nothing (a catch-up round), so a policy can spread the catch-up over rounds, or never start it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..config import GREEDY, SamplingParams
from ..models.base import Model
from .sampling import probs_from_logits, sample


@dataclass
class Draft:
    tokens: list[int]
    probs: np.ndarray | None = None  # (len(tokens), V) or None = model-free (q one-hot)
    conf: list[float] | None = None  # the draft's probability for each of its tokens (model drafts)
    fed: int = 0  # context tokens a draft model fed before drafting (its catch-up; the last token counts)


EMPTY = Draft([])


StopRule = Callable[[list[float]], bool]  # the draft's confidences so far -> stop drafting now?


class Proposer(ABC):
    name: str = "proposer"
    model: Model | None = None  # the draft model, for a proposer that has one

    @property
    def is_model_free(self) -> bool:
        """No draft model: the draft has no distributions (one-hot q) and no confidences."""
        return self.model is None

    @abstractmethod
    def propose(self, context: list[int], k: int, stop: StopRule | None = None,
                catch_up: int | None = None) -> Draft:
        """At most k draft tokens to follow `context`; a draft model feeds at most `catch_up` context tokens
        first (None: all it lacks) and drafts nothing if it still lacks some."""

    def uncached(self, context: list[int]) -> int:
        """Tokens of `context` a draft model has still to feed before drafting after it (its catch-up; what
        its KV cache already holds from earlier generations is reused); 0 for a model-free proposer."""
        return 0 if self.model is None else len(context) - self.model.cached_prefix(context)

    def configure(self, sampling: SamplingParams, p_min: float, rng: np.random.Generator | None) -> None:
        """Per-generation sampling settings (a model draft samples as the target does)."""

    def memory_bytes(self) -> int:
        """Memory speculation adds for this proposer (weights it owns + its KV cache)."""
        return 0

    def reset(self) -> None:
        """Forget per-generation state."""

    def twin(self, target: Model | None = None) -> "Proposer":
        """A proposer like this one with its own state (and KV cache), sharing any weights; `target` is the
        context it will draft for (a draft head reads that context's hidden states)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be twinned")


def draft_chain(p: Proposer, logits, k: int, stop: StopRule | None, after: Callable[[int], object],
                ids: np.ndarray | None = None, vocab: int = 0) -> Draft:
    """A model drafter's chain from its first logits on: each token sampled under the proposer's settings (the
    argmax when greedy), stopping below its p_min or on the policy's rule; after(t) gives the logits that
    follow t. `ids` maps the drafter's ids to the target's (a head's reduced vocabulary, of a target `vocab`
    wide: its distributions are widened to the target's ids)."""
    tokens: list[int] = []
    rows: list[np.ndarray] = []
    conf: list[float] = []
    for i in range(k):
        if not p.sampling.greedy:
            q = probs_from_logits(logits.numpy()[0], p.sampling)
            if p.p_min > 0 and q.max() < p.p_min:
                break
            j = sample(q, p.rng)
            if ids is not None:
                full = np.zeros(vocab, dtype=q.dtype)
                full[ids] = q
                rows.append(full)
            else:
                rows.append(q)
            conf.append(float(q[j]))
        else:
            (j,), (p_top,) = logits.top()  # the id and its probability: two numbers cross to the host
            if p_top < p.p_min:
                break
            conf.append(p_top)
        tokens.append(int(ids[j]) if ids is not None else j)
        if i + 1 < k and not (stop and stop(conf)):  # the last draft's logits are not needed
            logits = after(tokens[-1])
        else:
            break
    probs = np.stack(rows) if rows and not p.sampling.greedy else None
    return Draft(tokens, probs, conf)


class NgramProposer(Proposer):
    """Prompt lookup: find the most recent earlier occurrence of the longest suffix (ngram_max down to
    ngram_min tokens) of the context, and propose the tokens that followed it."""

    def __init__(self, ngram_min: int = 1, ngram_max: int = 4) -> None:
        self.ngram_min, self.ngram_max = ngram_min, ngram_max
        self.name = "ngram"
        self.reset()

    def reset(self) -> None:
        self._buf, self._ctx_id = bytearray(), None

    def twin(self, target: Model | None = None) -> NgramProposer:
        return NgramProposer(self.ngram_min, self.ngram_max)

    def _bytes(self, context: list[int]) -> bytearray:
        """The context as int32 bytes. The decode loop only appends to its context list, so only the new
        tokens are converted (converting all of a 700-token context took 20 of the 27 us a call cost)."""
        n = len(self._buf) // 4
        same = (id(context) == self._ctx_id and n <= len(context)
                and (n == 0 or int.from_bytes(self._buf[-4:], "little", signed=True) == context[n - 1]))
        if not same:
            self._buf, self._ctx_id, n = bytearray(), id(context), 0
        self._buf += np.asarray(context[n:], dtype=np.int32).tobytes()
        return self._buf

    def propose(self, context: list[int], k: int, stop: StopRule | None = None,
                catch_up: int | None = None) -> Draft:
        if k <= 0:
            return EMPTY
        # Search the int32 bytes of the context with bytes.rfind (C speed); a hit must be 4-byte aligned.
        buf = self._bytes(context)
        T = len(context)
        self.last_match = 0  # tokens of the context's suffix the draft's source matched
        for n in range(min(self.ngram_max, T - 1), self.ngram_min - 1, -1):
            pattern = buf[4 * (T - n):]
            end = 4 * (T - 1)  # a match must end before the last token, so something follows it
            idx = buf.rfind(pattern, 0, end)
            while idx >= 0 and idx % 4:
                idx = buf.rfind(pattern, 0, idx + 4 * n - 1)
            if idx >= 0:
                start = idx // 4 + n
                self.last_match = n
                return Draft(list(context[start:start + k]))
        return EMPTY


class ModelProposer(Proposer):
    """A draft model sharing the target's tokenizer, sampling with the same settings as the target.

    Its KV cache is re-synced to the context by longest common prefix at every call, so there is no
    accept() callback: rejected drafts fall off, and the case "all k accepted, the draft never saw its own
    last token" is just one more token to feed here.
    """

    def __init__(self, model: Model, *, sampling: SamplingParams = GREEDY, p_min: float = 0.0,
                 rng: np.random.Generator | None = None, name: str | None = None, owns_weights: bool = True,
                 vocab: int = 0) -> None:
        self.model = model
        self.name = name or model.info.name
        self.owns_weights = owns_weights
        self.configure(sampling, p_min, rng)
        self.vocab = 0
        self._seen: list[int] = []
        if 0 < vocab < model.vocab_size:
            self._restrict(vocab)

    def _restrict(self, vocab: int) -> None:
        """Draft over a reduced vocabulary: the first `vocab` ids (BPE merges in order, so the most common
        tokens), every special id, and every id of the current context (the prompt's identifiers, the tokens
        generated so far); the draft model's output layer then computes only those. Lossless, as the target
        decides; only how often a draft is accepted can change."""
        keep = np.zeros(self.model.vocab_size, dtype=bool)
        keep[:vocab] = True
        keep[sorted(self.model.tokenizer.special_ids(len(keep)))] = True
        if self.model.restrict_vocab(keep):
            self.vocab, self._base, self._keep = vocab, keep, keep.copy()
            self.model.info.extra["draft_vocab"] = vocab  # its cost profile is then its own

    def _sync_vocab(self, context: list[int]) -> None:
        """Keep the context's ids in the draft's vocabulary: a set that depends only on the context, so a
        generation's drafts do not depend on the ones before it."""
        seen, changed = self._seen, False
        if len(context) < len(seen) or context[:len(seen)] != seen:  # not a continuation: start over
            self._keep, seen, changed = self._base.copy(), [], True
        new = np.asarray(context[len(seen):], dtype=np.int64)
        new = new[(new >= 0) & (new < len(self._keep))]
        if new.size and not self._keep[new].all():
            self._keep[new] = True
            changed = True
        self._seen = list(context)
        if changed:
            self.model.restrict_vocab(self._keep)

    def configure(self, sampling: SamplingParams, p_min: float, rng: np.random.Generator | None) -> None:
        """Per-generation sampling settings (the same as the target's, or the output is not lossless)."""
        self.sampling, self.p_min = sampling, p_min
        self.rng = rng or np.random.default_rng()

    def propose(self, context: list[int], k: int, stop: StopRule | None = None,
                catch_up: int | None = None) -> Draft:
        m = self.model
        if k <= 0:
            return EMPTY
        k = min(k, m.n_ctx - len(context))  # the draft cache must hold context + k - 1 drafts
        if k <= 0:
            return EMPTY
        if self.vocab:
            self._sync_vocab(context)
        lcp = m.reuse_prefix(context)  # always feeds at least the last token: we need its logits
        fed = len(context) - lcp
        if catch_up is not None and fed > catch_up:  # a catch-up round: one chunk of what the cache lacks
            m.score(context[lcp:lcp + catch_up], last_only=True)
            return Draft([], fed=catch_up)
        logits = m.score(context[lcp:], last_only=True)  # (1, V), where the draft's backend keeps it
        draft = draft_chain(self, logits, k, stop, lambda t: m.score([t], last_only=True))
        draft.fed = fed
        return draft

    def memory_bytes(self) -> int:
        mem = self.model.memory()
        return mem.kv_cache_bytes + (mem.weights_bytes if self.owns_weights else 0)

    def reset(self) -> None:
        self.model.reset()

    def twin(self, target: Model | None = None) -> ModelProposer:
        return ModelProposer(self.model.new_context(), name=self.name, owns_weights=False, vocab=self.vocab)


class HeadProposer(ModelProposer):
    """A draft head (models/head.py) over the target's own hidden states.

    Each call feeds the head the rows the target has computed since the last one (the accepted tokens of the
    last round, with the hidden states its verification forward captured: no extra target pass), which ends on
    the row that drafts the first token; the chain goes on from the head's own output. Its drafted rows are
    dropped again at the end of the call: its cache holds only rows the target has confirmed.
    """

    def __init__(self, head, target: Model, *, sampling: SamplingParams = GREEDY, p_min: float = 0.0,
                 rng: np.random.Generator | None = None, name: str = "head", owns_weights: bool = True) -> None:
        self.model, self.target, self.name, self.owns_weights, self.vocab = head, target, name, owns_weights, 0
        target.capture(head.spec.layers)  # resets the target's cache: every position from now on is captured
        self.configure(sampling, p_min, rng)

    def _fed(self, context: list[int]) -> int:
        """Head rows still valid for `context`: row i read context[i + 1] (and the target's state at i)."""
        cached, n = self.model.tokens, 0
        limit = min(len(cached), len(context) - 1)
        while n < limit and cached[n] == context[n + 1]:
            n += 1
        return n

    def uncached(self, context: list[int]) -> int:
        return max(0, len(context) - 1 - self._fed(context))

    def propose(self, context: list[int], k: int, stop: StopRule | None = None,
                catch_up: int | None = None) -> Draft:
        head, target = self.model, self.target
        P = len(context) - 1  # positions the target holds; their hidden states are captured
        k = min(k, head.n_ctx - P)
        if k <= 0 or P < 1 or target.pos < P:
            return EMPTY
        fed = min(self._fed(context), P - 1)  # the row at P - 1 is always run: its logits draft the first token
        head.truncate(fed)
        if catch_up is not None and P - fed > catch_up:  # a catch-up round: one chunk of the rows it lacks
            head.teacher(context[fed + 1:fed + 1 + catch_up], target.hidden_states(fed, fed + catch_up))
            return Draft([], fed=catch_up)
        logits = head.teacher(context[fed + 1:P + 1], target.hidden_states(fed, P))
        draft = draft_chain(self, logits, k, stop, lambda t: head.score([t], last_only=True), head.d2t,
                            target.vocab_size)
        head.truncate(P)  # keep only rows the target has confirmed
        draft.fed = P - fed
        return draft

    def twin(self, target: Model | None = None) -> HeadProposer:
        if target is None:
            raise ValueError("a draft head's twin drafts for another target context: pass it")
        return HeadProposer(self.model.over(target), target, name=self.name, owns_weights=False)


class HybridProposer(Proposer):
    """Prompt lookup and a model drafter at once (`head+ngram`). Under policy `auto` each drafter has its own
    plan (hybrid_policy.py), which sets `route` before the round: "lookup" verifies the lookup's draft the plan
    asked for (`plan_lookup`), "main" lets the model draft. Under the other policies each round takes the
    proposal expected to yield more: prompt lookup is free, so it is asked first; its draft is taken when rounds
    like it (the same matched suffix length) have yielded at least what the model's drafts yield, both learned
    online from the rounds of this proposer's generations (kept from one generation to the next); otherwise the
    model drafts. The model is what a policy prices (its cost) and what the loop sees (`model`)."""

    MATCH_BINS = 5  # matched suffix lengths 1, 2, 3, 4 and more

    def __init__(self, main: Proposer, lookup: NgramProposer, name: str | None = None) -> None:
        self.main, self.lookup = main, lookup
        self.model = main.model
        self.name = name or f"{main.name}+{lookup.name}"
        # accepted tokens per round, summed, and rounds: [main] + one per matched-length bin of prompt lookup;
        # what the two drafters yield on this machine's text, so it is kept across generations (not by reset)
        self._sum = np.zeros(1 + self.MATCH_BINS)
        self._n = np.zeros(1 + self.MATCH_BINS)
        self.lookup_rounds = 0
        self.route: str | None = None  # set by HybridPolicy before each round; None: choose by the yields
        self._planned: list[int] = []
        self.reset()

    def configure(self, sampling: SamplingParams, p_min: float, rng: np.random.Generator | None) -> None:
        self.main.configure(sampling, p_min, rng)
        self.route = None  # a new generation: its policy routes, if it is auto

    def plan_lookup(self, context: list[int], k: int) -> list[int]:
        """Prompt lookup's draft of at most k tokens for this round (HybridPolicy asks before it plans)."""
        self._planned = self.lookup.propose(context, k).tokens
        return self._planned

    def uncached(self, context: list[int]) -> int:
        return self.main.uncached(context)

    def reset(self) -> None:
        self.main.reset()
        self.lookup.reset()
        self._last: tuple[int, int, list[int]] | None = None  # (source, context length, tokens) of the last draft

    def _learn(self, context: list[int]) -> None:
        """Score the last draft by how much of it the context now continues with."""
        if self._last is None:
            return
        src, at, tokens = self._last
        self._last = None
        if len(context) <= at or context[:1] == []:
            return
        got = 0
        for t, c in zip(tokens, context[at:]):
            if t != c:
                break
            got += 1
        self._sum[src] += got
        self._n[src] += 1

    def _mean(self, src: int, prior: float) -> float:
        """Mean accepted tokens a round, with one pseudo-round at `prior`: an untried source is tried."""
        return (self._sum[src] + prior) / (self._n[src] + 1)

    def propose(self, context: list[int], k: int, stop: StopRule | None = None,
                catch_up: int | None = None) -> Draft:
        route, self.route = self.route, None
        if route == "lookup":
            self.lookup_rounds += 1
            return Draft(self._planned[:k]) if k > 0 else EMPTY
        if route == "main":
            return self.main.propose(context, k, stop, catch_up)
        self._learn(context)
        if k <= 0:
            return EMPTY
        lookup = self.lookup.propose(context, k)
        if lookup.tokens:
            src = min(self.lookup.last_match, self.MATCH_BINS)
            if self._mean(src, prior=float(len(lookup.tokens))) >= self._mean(0, prior=float(k)):
                self.lookup_rounds += 1
                self._last = (src, len(context), list(lookup.tokens))
                return lookup
        draft = self.main.propose(context, k, stop, catch_up)
        self._last = (0, len(context), list(draft.tokens)) if draft.tokens else None  # a catch-up round: no say
        return draft

    @property
    def owns_weights(self) -> bool:
        return getattr(self.main, "owns_weights", False)

    def memory_bytes(self) -> int:
        return self.main.memory_bytes()

    def twin(self, target: Model | None = None) -> HybridProposer:
        return HybridProposer(self.main.twin(target), self.lookup.twin(), self.name)
