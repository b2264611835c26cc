"""The Python API: load a target (and a draft) once, generate many times.

    from ryzanstein import Engine
    eng = Engine(model="smollm2-135m", draft="ngram")
    print(eng.generate("Write a haiku about the sea", max_new_tokens=64).text)
    for piece in (gen := eng.stream("Count to ten")):
        print(piece, end="", flush=True)
    print(gen.result.stats.acceptance_rate)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from time import perf_counter
from typing import Callable, Iterator

import numpy as np

from .batching import PREFILL_MIN_ROWS, Batcher
from .config import GenerationConfig, LoadConfig
from .errors import ContextOverflow, IncompatibleDraft, ModelNotFound, RyzansteinError
from .machine import peak_rss_bytes
from .models import Model, load_model
from .models.chat import encode_prompt
from .models.head import DraftHead
from .models.store import head_path
from .models.textstream import TextStream
from .speculative.auto_policy import AutoPolicy
from .speculative.costs import NGRAM_TOKEN_S, SpecCosts
from .speculative.hybrid_policy import HybridPolicy
from .speculative.logprobs import TokenLogprob
from .speculative.loop import decode, stop_ids
from .speculative.policies import DraftLengthPolicy, FixedPolicy, HeuristicPolicy
from .speculative.proposers import HeadProposer, HybridProposer, ModelProposer, NgramProposer, Proposer
from .speculative.round import token_kinds
from .speculative.stats import GenerationStats



@dataclass
class GenerationResult:
    text: str
    tokens: list[int]  # generated ids
    finish_reason: str  # "stop" (EOS or stop string) | "length" (max_new_tokens or context full)
    prompt_tokens: int
    seed: int | None
    stats: GenerationStats = field(repr=False)
    logprobs: list[TokenLogprob] | None = field(default=None, repr=False)  # per shown token (EOS not shown)

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    def to_dict(self) -> dict:
        return {"text": self.text, "tokens": self.tokens, "num_tokens": self.num_tokens,
                "finish_reason": self.finish_reason, "prompt_tokens": self.prompt_tokens, "seed": self.seed,
                "stats": self.stats.to_dict(),
                **({"logprobs": [asdict(e) for e in self.logprobs]} if self.logprobs is not None else {})}


@dataclass(frozen=True)
class RoundTrace:
    """One decoding round as a stream hands it out (Generation.pieces), from the loop's stats."""

    k: int  # the K the policy chose
    drafted: int  # draft tokens verified (the proposer may find fewer than K; 0: a plain step)
    accepted: int  # of them, accepted


@dataclass(frozen=True)
class Piece:
    """A piece of streamed text and how its tokens came (Generation.pieces)."""

    text: str
    spans: list[tuple[str, str]]  # (text, kind) per token, covering `text` in order; kind: round.TOKEN_KINDS
    rounds: list[RoundTrace]  # the rounds completed since the previous piece


class Generation:
    """One generation in progress: iterate for text pieces (or `pieces()` for how each token came); `.result` is
    set once it is exhausted, `.stats` holds the figures so far while it runs."""

    def __init__(self, engine: "Engine", prompt_ids: list[int], cfg: GenerationConfig,
                 clock: Callable[[], float] = perf_counter) -> None:
        self.engine, self.prompt_ids, self.cfg, self.clock = engine, prompt_ids, cfg, clock
        self.result: GenerationResult | None = None
        self.stats: GenerationStats | None = None
        # with cfg.logprobs: one entry per shown token so far (a stream's consumer reads the new ones)
        self.logprobs: list[TokenLogprob] | None = [] if cfg.logprobs is not None else None
        self._halt = False

    def halt(self) -> None:
        """End the generation after the round in progress, from any thread (finish_reason "cancelled"). A
        consumer that only checks between pieces may wait long: tokens that show no text (a stop id generated
        with ignore_eos, a held-back stop string) make no piece."""
        self._halt = True

    def __iter__(self) -> Iterator[str]:
        return (p.text for p in self._stream(trace=False) if p.text)

    def pieces(self) -> Iterator[Piece]:
        """The text pieces as Piece records: each token's text with its kind (an accepted draft, a recovered or
        bonus token, a plain step), and each round's K, drafted and accepted counts, as the decode loop
        recorded them in the stats. A token whose text a held-back stop string splits appears in two pieces;
        the last piece may hold only rounds."""
        return self._stream(trace=True)

    def _stream(self, trace: bool) -> Iterator[Piece]:
        eng, cfg = self.engine, self.cfg
        seed = cfg.seed if cfg.seed is not None else int(np.random.SeedSequence().entropy % 2**63)
        rng = np.random.default_rng(seed)
        self.stats = stats = GenerationStats(draft=eng.proposer.name if eng.proposer else "none")
        proposer, policy = eng._prepare_speculation(cfg, rng, stats, self.prompt_ids)
        text = TextStream(eng.target.tokenizer, cfg.stop, positions=trace)
        stops = stop_ids(eng.target.tokenizer, cfg)
        tokens: list[int] = []
        rows: list[TokenLogprob] | None = [] if self.logprobs is not None else None  # one per emitted token
        kinds: list[str] = []  # per shown token (text.ids), with trace
        rounds: list[RoundTrace] = []  # not yet handed out
        accepted_so_far = 0
        for out in decode(eng.target, self.prompt_ids, cfg, rng, stats, proposer, policy, self.clock, rows):
            if rows is not None:
                self.logprobs.extend(e for e in rows[len(tokens):] if e.token not in stops)
            if trace:  # the first output is the prefill's token; each later one is the round stats just observed
                how = ["step"]
                if tokens:
                    drafted, accepted = stats.k_per_round[-1], stats.num_accepted - accepted_so_far
                    accepted_so_far = stats.num_accepted
                    rounds.append(RoundTrace(stats.k_chosen[-1], drafted, accepted))
                    how = token_kinds(drafted, accepted, len(out))
                kinds.extend(kind for t, kind in zip(out, how) if t not in stops)
            tokens.extend(out)
            piece = text.add([t for t in out if t not in stops])  # the EOS is generated, not shown
            if piece:
                yield self._piece(piece, text, kinds, rounds)
            if text.stopped or self._halt:  # halt: between two rounds, every emitted token in the caches
                break
        piece = text.finish()
        if piece or rounds:
            yield self._piece(piece, text, kinds, rounds)
        if text.stopped:  # cut after the token that completed the stop string
            tokens, reason = tokens[:text.n_ids_at_stop], "stop"
        elif self._halt:
            reason = "cancelled"
        else:
            reason = "stop" if tokens and tokens[-1] in stops else "length"
        stats.num_tokens = len(tokens)
        if policy is not None:
            if (learned := policy.learned()) is not None:
                eng.auto_learned = learned
            if (prediction := policy.prediction()) is not None:
                stats.predicted_speedup, stats.predicted_tokens_per_s = prediction
        stats.peak_rss_bytes = peak_rss_bytes()
        if rows is not None:  # cut where the tokens were cut (a stop string)
            self.logprobs[:] = [e for e in rows[:len(tokens)] if e.token not in stops]
        self.result = GenerationResult(text.text, tokens, reason, len(self.prompt_ids), seed, stats, self.logprobs)

    @staticmethod
    def _piece(piece: str, text: TextStream, kinds: list[str], rounds: list[RoundTrace]) -> Piece:
        """A Piece for `piece`, the text just released (the end of text.text handed out so far); empties
        `rounds` into it."""
        spans: list[tuple[str, str]] = []
        if text.char_ids is not None and piece:
            start = text.sent - len(piece)
            owners = text.char_ids[start:text.sent]
            i = 0
            for j in range(1, len(owners) + 1):
                if j == len(owners) or owners[j] != owners[i]:
                    spans.append((piece[i:j], kinds[owners[i]]))
                    i = j
        out = Piece(piece, spans, rounds[:])
        rounds.clear()
        return out

    def run(self) -> GenerationResult:
        """Generate to the end; the result."""
        for _ in self:
            pass
        return self.result


class Engine:
    """A loaded target model, an optional proposer, and generation on top of them.

    `Engine(config)` (or LoadConfig fields as keywords) loads the models; `Engine.from_models(target, proposer)`
    wraps models loaded elsewhere (tests, benchmarks sharing one target).
    """

    def __init__(self, config: LoadConfig | None = None, *, target: Model | None = None,
                 proposer: Proposer | None = None, costs: SpecCosts | None = None, **kwargs) -> None:
        self.config = c = config or LoadConfig(**kwargs)
        loading = target is None
        if loading:
            target = load_model(c.model, backend=c.backend, threads=c.threads, n_ctx=c.ctx_size, dtype=c.dtype,
                                device=c.device)
            proposer = build_proposer(c, target)
        self.target: Model = target
        self.proposer: Proposer | None = proposer
        # what policy auto plans with, each read or measured when a generation first needs it
        self.costs = costs or SpecCosts(target, proposer and proposer.model, c.cost_profile)
        self.auto_learned: dict | None = None  # what policy auto learned in the last generation (AutoPolicy.learned)
        # in a batch (batching.py): () -> (rows, sequences) of the last step, which auto prices drafts against
        self.load_hint: Callable[[], tuple[int, int]] | None = None
        if loading:
            self.check_memory(GenerationConfig().k_max)

    @classmethod
    def from_models(cls, target: Model, proposer: Proposer | None = None,
                    config: LoadConfig | None = None) -> "Engine":
        """An engine over models loaded elsewhere (tests, benchmarks sharing one target)."""
        return cls(config or LoadConfig(), target=target, proposer=proposer)

    def twin(self, target: Model | None = None) -> "Engine":
        """The same target and proposer in new KV caches (weights shared), with the costs already read: a second
        engine whose generations can run beside this one's (bench --lockstep), or, given `target` (a batch
        slot's cache over these weights), one whose generations run on it."""
        target = target or self.target.new_context()
        proposer = self.proposer and self.proposer.twin(target)
        return Engine(self.config, target=target, proposer=proposer,
                      costs=self.costs.over(target, proposer and proposer.model))

    def reset(self) -> None:
        """Empty the target's and the draft's caches: the next generation pays its own prefill."""
        self.target.reset()
        if self.proposer is not None:
            self.proposer.reset()

    # memory --------------------------------------------------------------------------------------------
    def target_memory_bytes(self) -> int:
        return self.target.memory().total_bytes

    def spec_memory_overhead_bytes(self, k_max: int) -> int:
        """Draft weights + draft KV + the target KV rows a round of k_max drafts writes beyond plain decoding."""
        if self.proposer is None:
            return 0
        return self.proposer.memory_bytes() + k_max * self.target.memory().kv_bytes_per_token

    def check_memory(self, k_max: int) -> None:
        over, base = self.spec_memory_overhead_bytes(k_max), self.target_memory_bytes()
        limit = self.config.max_memory_overhead
        if base and over / base > limit and not self.config.allow_memory_overhead:
            raise RyzansteinError(
                f"speculation with draft {self.proposer.name} adds {over / 2**20:.0f} MiB, "
                f"{over / base:.0%} of the target's {base / 2**20:.0f} MiB, over max_memory_overhead={limit}: "
                "pass --allow-memory-overhead, raise --max-memory-overhead, or use a smaller draft")

    # generation ----------------------------------------------------------------------------------------
    def encode(self, prompt: str | list[dict] | list[int], chat: bool = True) -> list[int]:
        """Prompt ids: ids pass through; text gets the chat template unless chat=False."""
        if isinstance(prompt, list) and (not prompt or isinstance(prompt[0], int)):
            ids = list(prompt)
        else:
            ids = encode_prompt(self.target.tokenizer, prompt, chat)
        if not ids:
            raise RyzansteinError("the prompt is empty: give some text")
        if len(ids) >= self.target.n_ctx:
            raise ContextOverflow(f"the prompt is {len(ids)} tokens but the context holds {self.target.n_ctx}: "
                                  "shorten the prompt or raise --ctx-size")
        return ids

    def stream(self, prompt: str | list[dict] | list[int], config: GenerationConfig | None = None,
               chat: bool = True, clock: Callable[[], float] = perf_counter, **kwargs) -> Generation:
        """Start a generation; iterate the returned object for text pieces. `clock` times its stats."""
        cfg = config.replace(**kwargs) if config and kwargs else (config or GenerationConfig(**kwargs))
        return Generation(self, self.encode(prompt, chat), cfg, clock)

    def generate(self, prompt: str | list[dict] | list[int], config: GenerationConfig | None = None,
                 chat: bool = True, **kwargs) -> GenerationResult:
        """Generate to the end and return text, tokens, finish reason and stats."""
        return self.stream(prompt, config, chat, **kwargs).run()

    def _prepare_speculation(self, cfg: GenerationConfig, rng: np.random.Generator, stats: GenerationStats,
                             prompt_ids: list[int]) -> tuple[Proposer | None, DraftLengthPolicy | None]:
        stats.target_memory_bytes = self.target_memory_bytes()
        if self.proposer is None or cfg.k_max == 0 or cfg.k == 0:
            stats.policy = "none"
            return None, None
        self.proposer.configure(cfg.sampling, cfg.p_min, rng)
        # a model draft's catch-up is the part of the prompt its cache does not hold yet (a conversation's
        # next turn: only the new messages), which is what a probe of it would cost
        policy = make_policy(cfg, self.costs, self.proposer, self.proposer.uncached(prompt_ids),
                             self.auto_learned, self.load_hint)
        stats.policy = policy.name
        stats.spec_memory_overhead_bytes = self.spec_memory_overhead_bytes(cfg.k_max)
        return self.proposer, policy

    def batcher(self, parallel: int, max_rows: int = 64, workers: bool = True,
                prefill_rows: int = PREFILL_MIN_ROWS) -> Batcher:
        """Continuous batching over this engine's weights (native backend): up to `parallel` generations share
        each target forward, each with its own cache and drafter twin, each output what it gets alone
        (batching.py). A step holds `max_rows` rows, the decoding ones first; a waiting prompt gets at least
        `prefill_rows` of them. Close it when done (or use it as a context manager)."""
        return Batcher(self, parallel, max_rows, workers, prefill_rows)

    def generate_batch(self, prompts: list, config: GenerationConfig | None = None, parallel: int = 8,
                       chat: bool = True, **kwargs) -> list[GenerationResult]:
        """Generate for every prompt, `parallel` at a time in shared forwards (an offline job); results in
        prompt order, each the one the prompt gets alone."""
        with self.batcher(max(1, min(parallel, len(prompts)))) as b:
            return b.generate(prompts, config, chat, **kwargs)

    def close(self) -> None:
        for m in (self.target, self.proposer and self.proposer.model):
            if m is not None:
                m.close()


def make_policy(cfg: GenerationConfig, costs: SpecCosts, proposer: Proposer, catch_up_tokens: int,
                learned: dict | None = None, load: Callable[[], tuple[int, int]] | None = None
                ) -> DraftLengthPolicy:
    """The draft-length policy a generation asked for; `auto` starts from what an earlier generation learned,
    and plans a combined drafter's two drafters apart (HybridPolicy)."""
    if cfg.policy == "fixed":
        return FixedPolicy(cfg.k if cfg.k is not None else 4)
    if cfg.policy == "heuristic":
        return HeuristicPolicy(cfg.k or 4, cfg.k_min, cfg.k_max)
    if cfg.policy == "confidence":
        return FixedPolicy(cfg.k_max)  # the draft itself stops early under p_min
    policy = AutoPolicy(target_costs=costs.target_profile(), draft_token_s=costs.draft_token_s(),
                        model_free=proposer.is_model_free, k_min=cfg.k_min, k_max=cfg.k_max,
                        min_speedup=cfg.min_speedup, draft_prefill_token_s=costs.draft_prefill_token_s(),
                        prompt_tokens=catch_up_tokens, max_new_tokens=cfg.max_new_tokens, load=load)
    if learned:  # the engine's earlier generations already measured this machine and draft
        policy.resume(learned)
    if isinstance(proposer, HybridProposer):
        lookup = AutoPolicy(target_costs=costs.target_profile(), draft_token_s=NGRAM_TOKEN_S, model_free=True,
                            k_min=cfg.k_min, k_max=cfg.k_max, min_speedup=cfg.min_speedup,
                            max_new_tokens=cfg.max_new_tokens, load=load)
        return HybridPolicy(proposer, lookup, policy)
    return policy


def build_proposer(c: LoadConfig, target: Model) -> Proposer | None:
    """none | ngram | self:N | head[:PATH] | a draft model (checked against the target's tokenizer before any
    work) | any of these but none and ngram, then `+ngram`: both drafters at once (HybridProposer)."""
    if c.draft == "none":
        return None
    if c.draft == "ngram":
        return NgramProposer(c.ngram_min, c.ngram_max)
    main, plus, rest = c.draft.partition("+")
    if plus:
        if rest != "ngram" or main in ("none", "ngram"):
            raise RyzansteinError(f"invalid draft={c.draft!r}: a combined drafter is DRAFT+ngram, DRAFT being head, "
                                  "self:N or a draft model")
        inner = build_proposer(replace(c, draft=main), target)
        return HybridProposer(inner, NgramProposer(c.ngram_min, c.ngram_max), name=c.draft)
    if c.draft == "head" or c.draft.startswith("head:"):
        return HeadProposer(load_head(target, c.draft[5:] or None), target)
    if c.draft.startswith("self:"):
        n = int(c.draft[5:])
        if not 1 <= n < target.info.n_layers:
            raise RyzansteinError(f"invalid draft={c.draft!r}: self:N needs 1 <= N < {target.info.n_layers} "
                                  f"(the target's layer count)")
        draft = target.truncated(n)  # a view of the target's weights, or a model of its own (llama.cpp)
        return ModelProposer(draft, name=c.draft, owns_weights=not draft.shares_weights,
                             vocab=draft_vocab(c, draft))
    backend = c.draft_backend or target.info.backend
    draft = load_model(c.draft, backend=backend, threads=c.threads, n_ctx=target.n_ctx, dtype=c.dtype,
                       device=c.device)
    check_compatible(target, draft)
    return ModelProposer(draft, vocab=draft_vocab(c, draft))


DRAFT_VOCAB = 32768  # ids a draft scores by default when its vocabulary is over twice that (Qwen's 151,936)


def draft_vocab(c: LoadConfig, draft: Model) -> int:
    """How many leading ids a draft model scores (0: all): the config's, else DRAFT_VOCAB for a large vocabulary."""
    if c.draft_vocab is not None:
        return c.draft_vocab
    return DRAFT_VOCAB if draft.vocab_size > 2 * DRAFT_VOCAB else 0


def load_head(target: Model, path: str | None = None):
    """The draft head for `target`: the file given, or the one `ryzanstein distill` put in the store."""
    if path is None:
        found = head_path(target.info.path)
        if not found.is_file():
            raise ModelNotFound(f"no draft head for {target.info.name} yet: train one with `ryzanstein distill "
                                f"--model {target.info.name}` (or pick another --draft)")
        path = str(found)
    return DraftHead(path, target)


def check_compatible(target: Model, draft: Model) -> None:
    """Refuse a draft whose tokenizer differs from the target's: say what differs."""
    tt, dt = target.tokenizer, draft.tokenizer
    problems = []
    if tt.vocab_size != dt.vocab_size:
        problems.append(f"vocabulary size {dt.vocab_size} vs the target's {tt.vocab_size}")
    if tt.special != dt.special:
        problems.append(f"special tokens {_special(dt)} vs the target's {_special(tt)}")
    if not problems:
        diff = next((i for i in range(tt.vocab_size) if tt.token_text(i) != dt.token_text(i)), None)
        if diff is not None:
            problems.append(f"token {diff} is {dt.token_text(diff)!r} vs the target's {tt.token_text(diff)!r}")
    if problems:
        raise IncompatibleDraft(f"draft {draft.info.name} does not share the target {target.info.name}'s "
                                f"tokenizer: {'; '.join(problems)}; pick a draft from the same model family")
    if draft.vocab_size != target.vocab_size:
        raise IncompatibleDraft(f"draft {draft.info.name} has {draft.vocab_size} logits per row vs the target's "
                                f"{target.vocab_size}; pick a draft from the same model family")


def _special(t) -> str:
    return f"bos={t.special.bos_id} eos={t.special.eos_id} stop={sorted(t.special.stop_ids)}"
