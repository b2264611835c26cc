"""The decoding loop: prefill, then rounds of draft -> one verifying target forward -> accept -> roll back.

Plain decoding is the same loop with K = 0: the target forwards [last token] alone and the "bonus" token is
simply the next token. The target's KV cache always holds every emitted token but the last one.
The target's logits stay where its backend computed them (`Model.score`): greedy asks for the argmax ids,
sampling for the rows, so on a GPU a greedy step copies back K+1 ids, not K+1 rows of the vocabulary.
"""
from __future__ import annotations

import logging
from time import perf_counter
from typing import Callable, Iterator

import numpy as np

from ..config import GenerationConfig
from ..errors import RyzansteinError
from ..models.base import Model, Tokenizer
from .acceptance_rules import accept_greedy, accept_sampling
from .logprobs import TokenLogprob, token_logprobs
from .policies import DraftLengthPolicy
from .proposers import EMPTY, Proposer
from .round import Round
from .sampling import pick, probs_from_logits
from .stats import GenerationStats

log = logging.getLogger("ryzanstein")


def stop_ids(tokenizer: Tokenizer, cfg: GenerationConfig) -> frozenset[int]:
    """The token ids that end a generation: the model's end-of-generation ids, none with ignore_eos."""
    return frozenset() if cfg.ignore_eos else tokenizer.special.stop_ids


def decode(target: Model, prompt: list[int], cfg: GenerationConfig, rng: np.random.Generator,
           stats: GenerationStats, proposer: Proposer | None = None,
           policy: DraftLengthPolicy | None = None, clock: Callable[[], float] = perf_counter,
           logprobs: list[TokenLogprob] | None = None) -> Iterator[list[int]]:
    """Yield the tokens each target forward emits, until a stop id, max_new_tokens or the context end.

    `clock` times everything the stats and the policy see; a benchmark that interleaves generations gives
    each one a clock that runs only during its own steps (bench/lockstep.py StreamClocks). `logprobs`, if
    given, receives one TokenLogprob per emitted token, from the rows that predicted it (logprobs.py).
    """
    stops = stop_ids(target.tokenizer, cfg)
    t0 = clock()
    stats.prompt_tokens = len(prompt)
    stats.cached_prompt_tokens = target.reuse_prefix(prompt)
    logits = target.score(prompt[stats.cached_prompt_tokens:], last_only=True)  # (1, V)
    token = pick(logits, cfg.sampling, rng)
    if logprobs is not None:  # asked for: the row comes to the host
        logprobs.extend(token_logprobs(logits.numpy(), [token], cfg.logprobs or 0))
    stats.prefill_s = stats.ttft_s = clock() - t0
    context = list(prompt) + [token]
    emitted = 1
    stats.num_tokens = 1
    yield [token]
    t_decode = clock()
    t0 = None
    while token not in stops and emitted < cfg.max_new_tokens and target.pos < target.n_ctx:
        if policy is not None and t0 is not None:
            policy.observe_wall(clock() - t0)  # the last round, the caller's work on its output included
        t0 = clock()
        # a round writes [token + k drafts] to the cache and emits at most k + 1 tokens
        cap = min(cfg.max_new_tokens - emitted - 1, target.n_ctx - target.pos - 1)
        k = min(policy.choose(context), cap) if proposer and policy else 0
        want = k or (min(policy.shadow_k(), cap) if proposer and policy else 0)
        draft = shadow = EMPTY
        if want > 0:
            try:
                draft = proposer.propose(context, want, policy.stop_drafting if k else None, policy.catch_up_limit())
            except Exception as e:  # a failing draft must never cost the user their generation
                if cfg.fallback == "error":
                    raise RyzansteinError(f"draft {proposer.name} failed: {type(e).__name__}: {e}") from e
                stats.fallback = f"draft {proposer.name} failed at output token {emitted}: {type(e).__name__}: {e}"
                log.warning("%s; continuing with plain decoding", stats.fallback)
                proposer, draft = None, EMPTY
            if k == 0:  # proposed only to be scored against what the target emits
                draft, shadow = EMPTY, draft
        t1 = clock()
        base = target.pos
        logits = target.score([token] + draft.tokens)  # (K+1, V): the one verification forward
        if cfg.greedy:
            num_accepted, token = accept_greedy(draft.tokens, logits.argmax())
        else:
            p = probs_from_logits(logits.numpy(), cfg.sampling)
            num_accepted, token = accept_sampling(draft.tokens, draft.probs, p, rng)
        target.truncate(base + 1 + num_accepted)  # drop the rejected drafts' KV rows
        t2 = clock()
        out = draft.tokens[:num_accepted] + [token]
        for i, t in enumerate(out):  # EOS inside the accepted prefix ends the output there
            if t in stops:
                out, token = out[:i + 1], t
                break
        if logprobs is not None:  # row i of the verify forward predicted out[i]
            logprobs.extend(token_logprobs(logits.numpy(), out, cfg.logprobs or 0))
        context.extend(out)
        emitted += len(out)
        stats.num_tokens = emitted
        r = Round(k=len(draft.tokens), num_accepted=num_accepted, emitted=out, draft_s=t1 - t0, verify_s=t2 - t1,
                  round_s=clock() - t0, shadow=shadow.tokens, conf=draft.conf, chosen=k, fed=draft.fed)
        stats.observe(r)
        if policy is not None:
            policy.observe(r)
        stats.decode_s = clock() - t_decode
        yield out
