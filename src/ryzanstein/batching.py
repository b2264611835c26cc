"""Continuous batching on the native backend: many generations, one target forward a step.

Each generation runs the ordinary decode loop (speculative/loop.py) in a worker thread, on a slot: a KV cache
of its own over the shared weights, with a twin of the engine's drafter. The slot's target is a SlotTarget,
whose forwards go to the Batcher instead of the kernels. The scheduler thread waits until every busy slot is
parked in a forward (its drafting, acceptance and bookkeeping done), then runs one forward over all their rows
(NativeModel.forward_batch): the verify rows of each speculating generation, the next-token row of each plain
one, and chunks of prompts being prefilled (up to `max_rows` rows a step in all, so a long prompt does not
stall the others' decoding). Requests join at the next step and leave when they end.

Output is what each request gets alone: a row's logits are the same bits in any batch (the kernels are
batch-invariant), and everything else a generation computes is its own (its sampler and seed, its drafter's
cache). What load changes is K: `auto` prices a sequence's drafted rows at their marginal cost in the step
(`Batcher.load`), so drafting shrinks as the batch fills. K never changes greedy output, nor seeded sampled
output with prompt lookup or no drafter (coupled acceptance: one uniform per emitted token at any K); with a
model draft a seeded sample has the target's distribution but may differ from the one the request gets alone.

Each generation's stats run on its own clock (StepClock): its own time between forwards plus a share of each
batched forward in proportion to its rows, so tokens/s and the policy's cost estimates describe what the
sequence cost, not how long it waited for the others.
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from time import monotonic, perf_counter
from typing import Any, Iterator, Sequence

import numpy as np

from .config import GenerationConfig
from .errors import RyzansteinError
from .models.base import MemoryUse, Model
from .models.native import NativeModel


PREFILL_MIN_ROWS = 16  # prompt rows a step always gets beside the decoding rows (a prompt never starves)


class StepClock:
    """A generation's clock in a batch: real time while its thread computes, plus its share of each forward."""

    def __init__(self) -> None:
        self._base, self._since = 0.0, perf_counter()

    def __call__(self) -> float:
        return self._base + (perf_counter() - self._since if self._since is not None else 0.0)

    def pause(self) -> None:
        if self._since is not None:
            self._base += perf_counter() - self._since
            self._since = None

    def resume(self, share_s: float) -> None:
        self._base += share_s
        self._since = perf_counter()


@dataclass
class _Forward:
    """One forward a slot asked for, in progress."""
    slot: "Slot"
    tokens: np.ndarray
    pos: int
    last_only: bool
    done: int = 0  # rows forwarded so far (a prompt goes in chunks)
    share_s: float = 0.0  # this slot's share of the forwards so far
    logits: np.ndarray | None = None
    ready: bool = False
    error: BaseException | None = None


class SlotTarget(Model):
    """The target as one slot sees it: a KV cache of its own, forwards run by the Batcher in a shared step."""

    def __init__(self, inner: NativeModel, batcher: "Batcher", slot: "Slot") -> None:
        super().__init__()
        self.inner, self.batcher, self.slot = inner, batcher, slot
        self.info, self.tokenizer = inner.info, inner.tokenizer

    @property
    def vocab_size(self) -> int:
        return self.inner.vocab_size

    def _forward(self, tokens: Sequence[int], last_only: bool) -> np.ndarray:
        return self.batcher._forward(self.slot, np.asarray(tokens, dtype=np.int32), last_only)

    def _truncate(self, pos: int) -> None:
        self.inner.truncate(pos)

    def memory(self) -> MemoryUse:
        return self.inner.memory()

    def capture(self, layers: Sequence[int]) -> bool:
        return self.inner.capture(layers)

    def hidden_states(self, start: int, end: int) -> np.ndarray:
        return self.inner.hidden_states(start, end)

    @property
    def shares_weights(self) -> bool:
        return True


class Job:
    """One request in the batcher: iterate for its text pieces; `.result` once they end; `.cancel()` stops it
    at its next forward (the slot is freed)."""

    def __init__(self, prompt_ids: list[int], cfg: GenerationConfig) -> None:
        self.prompt_ids, self.cfg = prompt_ids, cfg
        self.result: Any = None  # the engine's GenerationResult (the engine imports this module, not back)
        self.error: BaseException | None = None
        self.cancelled = False
        self.logprobs = None  # the Generation's, once a slot runs it (a stream's consumer reads the new ones)
        self.started = threading.Event()
        self._pieces: queue.Queue = queue.Queue()

    def cancel(self) -> None:
        self.cancelled = True

    def __iter__(self) -> Iterator[str]:
        while True:
            piece = self._pieces.get()
            if piece is None:
                break
            yield piece
        if self.error is not None:
            raise self.error

    def run(self) -> Any:
        for _ in self:
            pass
        return self.result


class Cancelled(RyzansteinError):
    """A generation's forward was refused: its request was cancelled, or the batcher closed."""

    def __init__(self) -> None:
        super().__init__("the request was cancelled (the batcher closed)")


@dataclass
class Slot:
    index: int
    engine: Any  # the slot's own Engine: its SlotTarget, a drafter twin, the shared costs
    target: SlotTarget | None = None
    clock: StepClock = field(default_factory=StepClock)
    job: Job | None = None  # the request it runs for submit() (None while a caller drives it: `busy`)
    busy: bool = False
    first_step_at: float | None = None  # time.monotonic() of the step with its request's first rows


class Batcher:
    """Up to `parallel` generations at once over one engine's weights; more wait in a queue (FIFO).

    `submit(prompt, config)` returns a Job at once; `generate(prompts)` runs a list to the end. Close it to
    stop its threads (waiting jobs are cancelled). A caller with threads of its own (the server) makes it with
    workers=False and drives slots itself: `claim(prompt_ids)` picks a free slot, and a generation on
    `slot.engine` runs inside `with batcher.driving(slot):`."""

    def __init__(self, engine: Any, parallel: int, max_rows: int = 64, workers: bool = True,
                 prefill_rows: int = PREFILL_MIN_ROWS) -> None:
        base = engine.target
        if not isinstance(base, NativeModel):
            raise RyzansteinError(f"continuous batching runs on the native backend; {base.info.name} is on "
                                  f"{base.info.backend}: use a GGUF model with --backend native, or --parallel 1")
        if parallel < 1:
            raise RyzansteinError(f"--parallel {parallel}: give at least 1")
        if prefill_rows < 1:
            raise RyzansteinError(f"--prefill-chunk {prefill_rows}: give at least 1 (prompt rows a step)")
        self.prefill_rows = prefill_rows
        self.engine, self.parallel, self.max_rows, self.workers = engine, parallel, max(1, max_rows), workers
        self.cv = threading.Condition()
        self.running = 0  # slots computing: not parked in a forward, not idle
        self.pending: list[_Forward] = []
        self.waiting: deque[Job] = deque()
        self.closed = False
        self.steps = self.step_rows = 0  # forwards run, rows in them (metrics)
        self._out: np.ndarray | None = None
        self._load = (0, 0)  # (rows, sequences) of the last step
        self.slots: list[Slot] = []
        for i in range(parallel):
            inner = base.new_context()  # the engine's own cache stays its own
            slot = Slot(i, engine)  # engine replaced below
            slot.target = SlotTarget(inner, self, slot)
            slot.engine = engine.twin(slot.target)
            slot.engine.load_hint = self.load
            self.slots.append(slot)
        self._threads = [threading.Thread(target=self._worker, args=(s,), daemon=True, name=f"rz-slot-{s.index}")
                         for s in self.slots] if workers else []
        self._threads.append(threading.Thread(target=self._scheduler, daemon=True, name="rz-scheduler"))
        for t in self._threads:
            t.start()

    # ---- the API -----------------------------------------------------------------------------------------
    def submit(self, prompt: str | list[dict] | list[int], config: GenerationConfig | None = None,
               chat: bool = True, **kwargs) -> Job:
        if not self.workers:
            raise RyzansteinError("this batcher was made with workers=False: drive its slots (claim, driving)")
        cfg = config.replace(**kwargs) if config and kwargs else (config or GenerationConfig(**kwargs))
        job = Job(self.engine.encode(prompt, chat), cfg)
        with self.cv:
            if self.closed:
                raise RyzansteinError("the batcher is closed")
            self.waiting.append(job)
            self._assign()
        return job

    def generate(self, prompts: Sequence[str | list[dict] | list[int]], config: GenerationConfig | None = None,
                 chat: bool = True, **kwargs) -> list[Any]:
        jobs = [self.submit(p, config, chat, **kwargs) for p in prompts]
        return [j.run() for j in jobs]

    def load(self) -> tuple[int, int]:
        """(rows, sequences) in the last step: what `auto` prices a sequence's extra rows against."""
        return self._load

    def stats(self) -> dict:
        with self.cv:
            busy = [s for s in self.slots if s.busy]
            return {"running": len(busy), "waiting": len(self.waiting), "slots": self.parallel,
                    "steps": self.steps, "rows": self.step_rows,
                    "kv_used_tokens": sum(s.target.pos for s in busy),
                    "kv_capacity_tokens": self.parallel * self.engine.target.n_ctx}

    def claim(self, prompt_ids: Sequence[int], timeout: float | None = None) -> Slot | None:
        """A free slot for a request, marked busy: the one whose cache holds the most of its prompt (a
        conversation's next turn prefills only what is new); None if none frees within `timeout`."""
        with self.cv:
            if not self.cv.wait_for(lambda: self.closed or any(not s.busy for s in self.slots), timeout):
                return None
            if self.closed:
                return None
            slot = max((s for s in self.slots if not s.busy),
                       key=lambda s: (s.target.cached_prefix(prompt_ids), -s.index))
            slot.busy, slot.first_step_at = True, None
            return slot

    def release(self, slot: Slot) -> None:
        with self.cv:
            slot.busy = False
            self._assign()
            self.cv.notify_all()

    @contextmanager
    def driving(self, slot: Slot):
        """The caller's thread runs a generation on slot.engine: the scheduler waits for its forwards."""
        with self.cv:
            self.running += 1
        try:
            yield slot.engine
        finally:
            with self.cv:
                self.running -= 1
                self.cv.notify_all()

    def close(self) -> None:
        with self.cv:
            self.closed = True
            for job in self.waiting:
                job.cancel()
                job._pieces.put(None)
            self.waiting.clear()
            for s in self.slots:
                if s.job is not None:
                    s.job.cancel()
            self.cv.notify_all()
        for t in self._threads:
            t.join(timeout=30)

    def __enter__(self) -> "Batcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- a slot's thread ------------------------------------------------------------------------------------
    def _assign(self) -> None:
        """Give waiting jobs (oldest first) to free slots, each to the one whose cache holds the most of its
        prompt (a conversation's next turn prefills only what is new). Under self.cv."""
        while self.waiting and self.workers:
            free = [s for s in self.slots if not s.busy]
            if not free:
                return
            job = self.waiting.popleft()
            slot = max(free, key=lambda s: (s.target.cached_prefix(job.prompt_ids), -s.index))
            slot.job, slot.busy, slot.first_step_at = job, True, None
            self.running += 1
            self.cv.notify_all()

    def _worker(self, slot: Slot) -> None:
        while True:
            with self.cv:
                self.cv.wait_for(lambda: self.closed or slot.job is not None)
                if self.closed and slot.job is None:
                    return
                job = slot.job
            slot.clock = StepClock()
            try:
                gen = slot.engine.stream(job.prompt_ids, job.cfg, clock=slot.clock)
                job.logprobs = gen.logprobs
                for piece in gen:
                    job._pieces.put(piece)
                    if job.cancelled:
                        break
                job.result = gen.result
            except Cancelled:
                pass
            except BaseException as e:  # noqa: BLE001 - the job's consumer sees it; the slot serves the next one
                job.error = e
            finally:
                job.started.set()
                job._pieces.put(None)
                with self.cv:
                    slot.job, slot.busy = None, False
                    self.running -= 1
                    self._assign()
                    self.cv.notify_all()

    def _forward(self, slot: Slot, tokens: np.ndarray, last_only: bool) -> np.ndarray:
        """Called on the slot's thread by its SlotTarget: park until the scheduler has run these rows."""
        if slot.job is not None and slot.job.cancelled:
            raise Cancelled()
        inner = slot.target.inner
        req = _Forward(slot, tokens, inner.pos, last_only)
        slot.clock.pause()
        with self.cv:
            self.pending.append(req)
            self.running -= 1
            self.cv.notify_all()
            self.cv.wait_for(lambda: req.ready or self.closed)
        slot.clock.resume(req.share_s)
        if req.error is not None:
            raise req.error
        if not req.ready:
            raise Cancelled()
        inner.tokens.extend(int(t) for t in tokens)
        return req.logits

    # ---- the scheduler ---------------------------------------------------------------------------------------
    def _take(self) -> list[tuple[_Forward, int]]:
        """This step's rows: every decoding forward whole, then prompt chunks in arrival order within max_rows
        (at least prefill_rows of them)."""
        step, rows = [], 0
        for r in self.pending:
            if not r.last_only:
                step.append((r, len(r.tokens)))
                rows += len(r.tokens)
        budget = max(self.max_rows - rows, self.prefill_rows)
        for r in self.pending:
            if r.last_only and budget > 0:
                n = min(len(r.tokens) - r.done, budget)
                step.append((r, n))
                budget -= n
        return step

    def _scheduler(self) -> None:
        while True:
            with self.cv:
                self.cv.wait_for(lambda: self.closed or (self.pending and self.running == 0))
                if self.closed:
                    for r in self.pending:
                        r.ready = False
                    self.cv.notify_all()
                    return
                step = self._take()
                started = monotonic()
                for r, _ in step:
                    if r.slot.first_step_at is None:
                        r.slot.first_step_at = started
            parts, out_rows = [], []
            for r, n in step:
                end = r.done + n == len(r.tokens)
                k = (1 if end else 0) if r.last_only else n
                parts.append((r.slot.target.inner, r.tokens[r.done:r.done + n], r.pos + r.done, k))
                out_rows.append(k)
            t0 = perf_counter()
            error = None
            try:
                logits = NativeModel.forward_batch(parts, self._out)
                self._out = logits.base if logits.base is not None else logits
            except BaseException as e:  # noqa: BLE001 - handed to every slot in the step
                error, logits = e, None
            wall = perf_counter() - t0
            total = sum(n for _, n in step)
            with self.cv:
                self.steps += 1
                self.step_rows += total
                self._load = (total, len(step))
                o = 0
                for (r, n), k in zip(step, out_rows):
                    r.share_s += wall * n / total
                    r.done += n
                    if error is not None:
                        r.error, r.ready = error, True
                    elif r.done == len(r.tokens):
                        r.logits, r.ready = logits[o:o + k], True
                    o += k
                    if r.ready:
                        self.pending.remove(r)
                        self.running += 1
                self.cv.notify_all()
