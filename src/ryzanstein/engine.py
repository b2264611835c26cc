"""The Python API: load a target (and a draft) once, generate many times.

    from ryzanstein import Engine
    eng = Engine(model="smollm2-135m", draft="ngram")
    print(eng.generate("Write a haiku about the sea", max_new_tokens=64).text)
    for piece in (gen := eng.stream("Count to ten")):
        print(piece, end="", flush=True)
    print(gen.result.stats.acceptance_rate)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from time import perf_counter
from typing import Callable, Iterator

import numpy as np

from .models.chat import encode_prompt
from .config import GenerationConfig, LoadConfig
from .spec.loop import decode
from .errors import ContextOverflow, IncompatibleDraft, RyzansteinError
from .models import Model, default_backend, load_model
from .spec.policies import DraftLengthPolicy, FixedK, HeuristicK
from .spec.proposers import ModelProposer, NgramProposer, Proposer
from .spec.stats import GenerationStats, peak_rss_bytes
from .models.textstream import TextStream


@dataclass
class GenerationResult:
    text: str
    tokens: list[int]  # generated ids
    finish_reason: str  # "stop" (EOS or stop string) | "length" (max_new_tokens or context full)
    prompt_tokens: int
    seed: int | None
    stats: GenerationStats = field(repr=False)

    @property
    def num_tokens(self) -> int:
        return len(self.tokens)

    def to_dict(self) -> dict:
        return {"text": self.text, "tokens": self.tokens, "num_tokens": self.num_tokens,
                "finish_reason": self.finish_reason, "prompt_tokens": self.prompt_tokens, "seed": self.seed,
                "stats": self.stats.to_dict()}


class Generation:
    """One generation in progress: iterate for text pieces; `.result` is set once it is exhausted."""

    def __init__(self, engine: "Engine", prompt_ids: list[int], cfg: GenerationConfig,
                 clock: Callable[[], float] = perf_counter) -> None:
        self.engine, self.prompt_ids, self.cfg, self.clock = engine, prompt_ids, cfg, clock
        self.result: GenerationResult | None = None

    def __iter__(self) -> Iterator[str]:
        eng, cfg = self.engine, self.cfg
        seed = cfg.seed if cfg.seed is not None else int(np.random.SeedSequence().entropy % 2**63)
        rng = np.random.default_rng(seed)
        stats = GenerationStats(proposer=eng.proposer.name if eng.proposer else "none")
        proposer, policy = eng._prepare_speculation(cfg, rng, stats, len(self.prompt_ids))
        text = TextStream(eng.target.tokenizer, cfg.stop)
        stop_ids = frozenset() if cfg.ignore_eos else eng.target.tokenizer.special.stop_ids
        tokens: list[int] = []
        for out in decode(eng.target, self.prompt_ids, cfg, rng, stats, proposer, policy, self.clock):
            tokens.extend(out)
            piece = text.add([t for t in out if t not in stop_ids])  # the EOS is generated, not shown
            if piece:
                yield piece
            if text.stopped:
                break
        piece = text.finish()
        if piece:
            yield piece
        if text.stopped:  # cut after the token that completed the stop string
            tokens, reason = tokens[:text.n_ids_at_stop], "stop"
        else:
            reason = "stop" if tokens and tokens[-1] in stop_ids else "length"
        stats.num_tokens = len(tokens)
        if hasattr(policy, "learned"):
            eng.auto_learned = policy.learned()
        if hasattr(policy, "predicted_speedup"):
            stats.predicted_speedup = policy.predicted_speedup()
            stats.predicted_tokens_per_s = policy.pred_tokens / policy.pred_time if policy.pred_time else 0.0
        stats.peak_rss_bytes = peak_rss_bytes()
        self.result = GenerationResult(text.text, tokens, reason, len(self.prompt_ids), seed, stats)

    def run(self) -> GenerationResult:
        """Generate to the end; the result."""
        for _ in self:
            pass
        return self.result


class Engine:
    """A loaded target model, an optional proposer, and generation on top of them."""

    auto_learned: dict | None = None  # costs policy auto learned in the last generation (adaptive.AutoK.learned)

    def __init__(self, config: LoadConfig | None = None, **kwargs) -> None:
        self.config = config or LoadConfig(**kwargs)
        c = self.config
        self.target: Model = load_model(c.model, backend=c.backend, threads=c.threads, n_ctx=c.ctx_size,
                                        dtype=c.dtype, device=c.device)
        self.proposer: Proposer | None = build_proposer(c, self.target)
        self.check_memory(GenerationConfig().k_max)

    @classmethod
    def from_models(cls, target: Model, proposer: Proposer | None = None,
                    config: LoadConfig | None = None) -> "Engine":
        """An engine over models loaded elsewhere (tests, benchmarks sharing one target)."""
        eng = cls.__new__(cls)
        eng.config, eng.target, eng.proposer = config or LoadConfig(), target, proposer
        return eng

    def twin(self) -> "Engine":
        """The same target and proposer in new KV caches (weights shared), with the cost profiles already
        read: a second engine whose generations can run beside this one's (bench --lockstep)."""
        eng = Engine.from_models(self.target.new_context(), self.proposer and self.proposer.twin(), self.config)
        for attr in ("_costs", "_draft_prof", "_draft_cost"):
            if hasattr(self, attr):
                setattr(eng, attr, getattr(self, attr))
        return eng

    def reset(self) -> None:
        """Empty the target's and the draft's caches: the next generation pays its own prefill."""
        self.target.reset()
        if self.proposer is not None:
            self.proposer.reset()

    # costs (for policy auto) -------------------------------------------------------------------------------
    def cost_profile(self):
        """The target's v(n): from --cost-profile, the on-disk cache, or measured now (a few seconds)."""
        if getattr(self, "_costs", None) is None:
            from .spec.costs import load_file, profile_for

            path = self.config.cost_profile
            self._costs = load_file(path) if path else profile_for(self.target)
        return self._costs

    def _draft_profile(self):
        """The model draft's own cost profile, read (or measured) once per engine."""
        if getattr(self, "_draft_prof", None) is None:
            from .spec.costs import profile_for

            self._draft_prof = profile_for(self.proposer.model)
        return self._draft_prof

    def draft_token_cost_s(self) -> float:
        """Seconds the proposer spends per drafted token (a model draft's own one-token forward)."""
        if getattr(self, "_draft_cost", None) is None:
            from .spec.costs import profile_for

            costs = self.cost_profile()
            if isinstance(self.proposer, ModelProposer) and costs.draft_ratio is not None:
                self._draft_cost = costs.draft_ratio * costs.v(1)  # the profile's own machine
            elif isinstance(self.proposer, ModelProposer):
                # with a foreign target profile, keep the draft/target ratio measured here
                mine = profile_for(self.target) if self.config.cost_profile else costs
                self._draft_cost = self._draft_profile().v(1) * costs.v(1) / mine.v(1)
            else:
                self._draft_cost = 2e-5  # a prompt-lookup search; refined online
        return self._draft_cost

    def draft_prefill_token_cost_s(self) -> float:
        """Seconds per token when a model draft catches up with many tokens at once (batched, from v(16))."""
        if not isinstance(self.proposer, ModelProposer):
            return 0.0
        prof = self._draft_profile()
        return prof.v(16) / 16 * self.draft_token_cost_s() / prof.v(1)

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
                             prompt_tokens: int) -> tuple[Proposer | None, DraftLengthPolicy | None]:
        stats.target_memory_bytes = self.target_memory_bytes()
        if self.proposer is None or cfg.k_max == 0 or cfg.k == 0:
            stats.policy = "none"
            return None, None
        if isinstance(self.proposer, ModelProposer):
            self.proposer.configure(cfg.temperature, cfg.top_k, cfg.top_p, cfg.p_min, rng)
        policy = make_policy(cfg, self, prompt_tokens)
        stats.policy = policy.name
        stats.spec_memory_overhead_bytes = self.spec_memory_overhead_bytes(cfg.k_max)
        return self.proposer, policy

    def close(self) -> None:
        for m in (self.target, getattr(self.proposer, "model", None)):
            if m is not None:
                m.close()


def make_policy(cfg: GenerationConfig, engine: Engine, prompt_tokens: int) -> DraftLengthPolicy:
    """The draft-length policy a generation asked for."""
    if cfg.policy == "fixed":
        return FixedK(cfg.k if cfg.k is not None else 4)
    if cfg.policy == "heuristic":
        return HeuristicK(cfg.k or 4, cfg.k_min, cfg.k_max)
    if cfg.policy == "confidence":
        return FixedK(cfg.k_max)  # the draft itself stops early under p_min
    from .spec.auto_policy import AutoK

    return AutoK.for_engine(engine, cfg, prompt_tokens)


def build_proposer(c: LoadConfig, target: Model) -> Proposer | None:
    """none | ngram | self:N | a draft model (checked against the target's tokenizer before any work)."""
    if c.draft == "none":
        return None
    if c.draft == "ngram":
        return NgramProposer(c.ngram_min, c.ngram_max)
    if c.draft.startswith("self:"):
        n = int(c.draft[5:])
        if not 1 <= n < target.info.n_layers:
            raise RyzansteinError(f"invalid draft={c.draft!r}: self:N needs 1 <= N < {target.info.n_layers} "
                                  f"(the target's layer count)")
        if target.info.backend == "torch":
            return ModelProposer(target.truncated(n), name=c.draft, owns_weights=False)
        from pathlib import Path

        from .models.gguf_truncate import self_draft_path
        from .models.llamacpp import LlamaCppModel

        path = self_draft_path(Path(target.info.path), n, target.info.extra.get("sha256"))
        draft = LlamaCppModel(path, name=c.draft, n_ctx=target.n_ctx, threads=target.info.threads)
        return ModelProposer(draft, name=c.draft)
    backend = c.draft_backend or target.info.backend
    draft = load_model(c.draft, backend=backend, threads=c.threads, n_ctx=target.n_ctx, dtype=c.dtype,
                       device=c.device)
    check_compatible(target, draft)
    return ModelProposer(draft)


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
