"""One engine behind a bounded first-come-first-served queue: one generation at a time in a worker thread, or,
with `parallel` N > 1 on the native backend, up to N at once in one continuous batch (batching.py): a
dispatcher hands each queued request to a free slot (the one whose cache holds most of its prompt) and a
thread per slot drives its generation, whose forwards the batcher runs together.

Decoding is blocking CPU work, so it runs in worker threads, never on the event loop. A request becomes a
`Job`; the worker sends its events back to the request's event loop: ("piece", (the engine's Piece: text,
how its tokens came and the rounds behind them; logprobs of the tokens consumed since the last piece, or None
when not asked for)) as text is ready, then
exactly one of ("done", GenerationResult), ("error", exception) or ("aborted", reason). Cancelling a job
(client gone, timeout) is a flag the worker checks before it starts the job and between text pieces.
"""
from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from typing import TYPE_CHECKING

from ..batching import PREFILL_MIN_ROWS, Cancelled
from ..config import GenerationConfig
from ..errors import RyzansteinError

if TYPE_CHECKING:
    from ..engine import Engine
    from .metrics import Metrics

log = logging.getLogger("ryzanstein.server")


class QueueFull(Exception):
    def __init__(self, waiting: int, retry_after_s: int) -> None:
        super().__init__(f"the server is busy: {waiting} requests are waiting; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class Job:
    """One request's generation: its inputs, a cancel flag, and the events coming back."""

    def __init__(self, prompt_ids: list[int], cfg: GenerationConfig, deadline: float, request_id: str = "",
                 stream: bool = False) -> None:
        self.prompt_ids, self.cfg, self.deadline, self.request_id = prompt_ids, cfg, deadline, request_id
        self.stream = stream  # the client reads pieces as they come (replica_pool.py retries only what it has not seen)
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.submitted = self.polled = time.monotonic()  # polled: when the request last looked for its client
        self._cancel = threading.Event()
        self.cancel_reason = ""

    def cancel(self, reason: str) -> None:
        if not self._cancel.is_set():
            self.cancel_reason = reason
            self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set() or time.monotonic() > self.deadline

    def emit(self, kind: str, value=None) -> None:
        """Send one event to the request (from the worker thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            pass


class EngineWorker:
    """The queue and the threads that own the engine (and its batch slots)."""

    def __init__(self, engine: Engine, metrics: Metrics, max_queue: int, parallel: int = 1,
                 prefill_rows: int = PREFILL_MIN_ROWS) -> None:
        self.engine, self.metrics, self.max_queue, self.parallel = engine, metrics, max_queue, parallel
        self.prefill_rows = prefill_rows  # with parallel > 1: the batcher's least prompt rows a step
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._mean_service_s = 1.0  # moving average of one job's time, for Retry-After
        self.jobs: dict[int, Job] = {}  # running, by slot
        self.batcher = None
        metrics.kv_use.set_function(self.kv_use)  # read at each scrape

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    @property
    def running(self) -> int:
        return len(self.jobs)

    def health(self) -> dict:
        """GET /health's figures (and "status" where it is not ok)."""
        return {"waiting": self.waiting, "running": self.running, "slots": self.parallel}

    def kv_use(self) -> float:
        """Share of the KV cache positions (all slots) holding a running request's tokens."""
        if self.batcher is not None:
            st = self.batcher.stats()
            return st["kv_used_tokens"] / max(1, st["kv_capacity_tokens"])
        return self.engine.target.pos / max(1, self.engine.target.n_ctx) if self.jobs else 0.0  # pos: one int read

    def start(self) -> None:
        if self.parallel > 1:
            self.batcher = self.engine.batcher(self.parallel, workers=False, prefill_rows=self.prefill_rows)
            self._threads = [threading.Thread(target=self._dispatch, name="ryzanstein-dispatch", daemon=True)]
        else:
            self._threads = [threading.Thread(target=self._run, name="ryzanstein-engine", daemon=True)]
        for t in self._threads:
            t.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Refuse what is waiting (each request gets an error), stop the running jobs, join the threads."""
        self._stop.set()
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            job.cancel("shutdown")
            self._abort(job)
        for job in list(self.jobs.values()):
            job.cancel("shutdown")
        for t in self._threads:
            t.join(timeout_s)
        if self.batcher is not None:
            self.batcher.close()
        self.metrics.queue_depth.set(0)

    def submit(self, job: Job) -> None:
        """Queue a job, or raise QueueFull (answered with 429 and Retry-After)."""
        if self._stop.is_set():
            raise QueueFull(self.waiting, 5)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.metrics.rejected.inc()
            waiting = self.waiting
            per = self._mean_service_s / self.parallel  # slots finish jobs this often
            raise QueueFull(waiting, min(max(math.ceil(per * (waiting + 1)), 1), 60)) from None
        self.metrics.queue_depth.set(self.waiting)

    def _next(self) -> Job | None:
        try:
            job = self._queue.get(timeout=0.2)
        except queue.Empty:
            return None
        self.metrics.queue_depth.set(self.waiting)
        return job

    def _run(self) -> None:
        while not self._stop.is_set():
            if (job := self._next()) is not None:
                self._job(job, self.engine, 0)

    def _dispatch(self) -> None:
        """Hand each queued job to a free slot, on a thread of its own while it runs."""
        while not self._stop.is_set():
            if (job := self._next()) is None:
                continue
            slot = None
            while slot is None and not self._stop.is_set():
                slot = self.batcher.claim(job.prompt_ids, timeout=0.2)
            if slot is None:
                job.cancel("shutdown")
                self._abort(job)
                break
            self.jobs[slot.index] = job  # counted as running from now on
            threading.Thread(target=self._drive, args=(job, slot), name=f"ryzanstein-slot-{slot.index}",
                             daemon=True).start()

    def _drive(self, job: Job, slot) -> None:
        try:
            with self.batcher.driving(slot) as engine:
                self._job(job, engine, slot.index, slot)
        finally:
            self.batcher.release(slot)

    def _job(self, job: Job, engine: Engine, index: int, slot=None) -> None:
        self.jobs[index] = job
        self.metrics.running.set(self.running)
        t0 = time.monotonic()
        try:
            self._serve(job, engine, slot)
        except Cancelled:  # the batcher closed under it (shutdown)
            job.cancel("shutdown")
            self._abort(job)
        except Exception as e:  # nothing may kill a worker; the request gets an error
            if isinstance(e, RyzansteinError):
                log.warning("generation failed (request_id=%s): %s", job.request_id, e)
            else:
                log.exception("generation failed (request_id=%s)", job.request_id)
            self.metrics.aborted.labels("error").inc()
            job.emit("error", e)
        finally:
            self.jobs.pop(index, None)
            self.metrics.running.set(self.running)
            self._mean_service_s = 0.8 * self._mean_service_s + 0.2 * (time.monotonic() - t0)

    def _serve(self, job: Job, engine: Engine, slot=None) -> None:
        """Run the job's generation on this engine (a batch slot's, if `slot`), emitting its pieces."""
        wait_s = time.monotonic() - job.submitted
        if job.cancelled:
            self._abort(job)
            return
        gen = engine.stream(job.prompt_ids, job.cfg)
        pieces, sent = gen.pieces(), 0
        for piece in pieces:
            if job.cancelled:
                pieces.close()  # abandons the generation cleanly
                self._abort(job)
                return
            logprobs = None if gen.logprobs is None else gen.logprobs[sent:]
            sent += len(logprobs or ())
            job.emit("piece", (piece, logprobs))
        first = slot.first_step_at if slot is not None else None  # in a batch: when its prefill began
        gen.result.stats.queued_s = (first - job.submitted) if first is not None else wait_s
        self.metrics.observe_generation(gen.result.stats, wait_s)
        job.emit("done", gen.result)

    def _abort(self, job: Job) -> None:
        reason = job.cancel_reason or "timeout"
        self.metrics.aborted.labels(reason).inc()
        job.emit("aborted", reason)
