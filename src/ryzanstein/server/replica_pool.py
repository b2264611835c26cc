"""The ingress's side of the cluster (cluster.py): each request's generation sent to an engine replica through
a Ray Serve deployment handle, and sent again to another replica if its replica dies before the client has seen
any of it (the answer does not depend on the replica: greedy output is exact anywhere, a seeded sample the
same). In the place of worker.py's EngineWorker in app.py's app; counts and gauges in the app's metrics.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from ..config import GenerationConfig
from .config import ServerConfig
from .metrics import Metrics
from .openai_api import APIError
from .worker import Job, QueueFull

try:  # Ray: the optional `cluster` extra; cluster.py says so in one line when it is missing
    from ray import serve
    from ray.exceptions import RayActorError
    from ray.serve.exceptions import RequestCancelledError
except ModuleNotFoundError as e:
    if not (e.name or "").startswith("ray"):
        raise
    from ..errors import MissingExtra
    raise MissingExtra("serving on Ray (ryzanstein serve --replicas)", "cluster") from None

log = logging.getLogger("ryzanstein.server")
RETRIES = 3  # tries on other replicas for a generation whose replica died


@dataclass(frozen=True)
class Call:
    """One generation as the ingress sends it to a replica (and the router reads its prompt ids)."""

    prompt_ids: list[int]
    cfg: GenerationConfig
    timeout_s: float  # what is left of the request's time
    request_id: str = ""


class ReplicaPool:
    """In the ingress, in the place of worker.py's EngineWorker: each job's generation runs on a replica that the
    router picks, and is sent again to another if its replica dies before the client has seen any of it."""

    def __init__(self, handle, metrics: Metrics, slots: int, replicas: int, server: ServerConfig) -> None:
        self.handle, self.metrics, self.replicas = handle.options(stream=True), metrics, replicas
        self.parallel = slots * replicas
        self.capacity = replicas * (slots + server.max_queue)  # more at once get 429
        self.jobs: dict[Job, str] = {}  # -> "waiting" (no event yet), "running", or "shown" (a stream has begun)
        self.states: dict[str, int] = {}  # the engine replicas by state, from Ray Serve's status
        self._tasks: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        r = metrics.registry
        r.unregister(metrics.kv_use)  # per replica: on Ray's metrics port
        metrics.slots.set(self.parallel)
        self.retries = Counter("ryzanstein_cluster_retries", "generations sent again to another replica after "
                               "theirs died", registry=r)
        self.lost = Counter("ryzanstein_cluster_streams_lost", "streams ended with an error event because their "
                            "replica died after the client had seen part of them", registry=r)
        self.replica_states = Gauge("ryzanstein_cluster_replicas", "engine replicas by Ray Serve state (RUNNING, "
                                    "STARTING, ...)", ["state"], registry=r)

    @property
    def waiting(self) -> int:
        return sum(s == "waiting" for s in self.jobs.values())

    @property
    def running(self) -> int:
        return len(self.jobs) - self.waiting

    def health(self) -> dict:
        up = self.states.get("RUNNING", 0)
        status = "ok" if up >= self.replicas else "degraded" if up else "unavailable"
        return {"status": status, "replicas": {"target": self.replicas, **self.states}, "waiting": self.waiting,
                "running": self.running, "slots": self.parallel}

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._read_states()
        self._spawn(self._watch())

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop every job (each request gets 503, as EngineWorker.stop gives) and the watcher (from a thread)."""
        if self._loop is not None:
            for job in list(self.jobs):
                job.cancel("shutdown")
                job.emit("aborted", "shutdown")
            for t in list(self._tasks):
                self._loop.call_soon_threadsafe(t.cancel)

    def submit(self, job: Job) -> None:
        if len(self.jobs) >= self.capacity:
            self.metrics.rejected.inc()
            raise QueueFull(self.waiting, max(1, min(60, len(self.jobs) // max(1, self.parallel))))
        self.jobs[job] = "waiting"
        self._gauges()
        self._spawn(self._run(job))

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _gauges(self) -> None:
        self.metrics.queue_depth.set(self.waiting)
        self.metrics.running.set(self.running)

    def _read_states(self) -> None:
        """The engine replicas by state, from the Serve controller (a blocking call)."""
        app = serve.status().applications.get(serve.get_replica_context().app_name)
        dep = app.deployments.get("EngineReplica") if app else None
        self.states = {str(k): v for k, v in (dep.replica_states if dep else {}).items() if v}
        for state in {"RUNNING", "STARTING", *self.states}:
            self.replica_states.labels(state).set(self.states.get(state, 0))

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            try:
                await asyncio.to_thread(self._read_states)
            except Exception as e:  # the controller restarting: keep the last states
                log.warning("reading the replicas' states failed: %s", e)

    async def _run(self, job: Job) -> None:
        try:
            for attempt in range(RETRIES + 1):
                try:
                    return await self._once(job)
                except RayActorError as e:  # the replica died (or cannot be reached) with the generation
                    if job.cancelled:
                        return
                    shown = self.jobs.get(job) == "shown"
                    if shown or attempt == RETRIES or time.monotonic() >= job.deadline:
                        self.lost.inc() if shown else None
                        job.events.put_nowait(("error", replica_lost(shown)))
                        return
                    self.retries.inc()
                    log.warning("replica lost (request_id=%s, %s); sending it to another", job.request_id,
                                type(e).__name__)
                    self.jobs[job] = "waiting"
                    await asyncio.sleep(0.25 * (attempt + 1))  # the controller learns of the death meanwhile
        except Exception as e:  # a bug of ours or Ray's: the request gets a 500, the ingress stays up
            log.exception("generation failed (request_id=%s)", job.request_id)
            job.events.put_nowait(("error", e))
        finally:
            self.jobs.pop(job, None)
            self._gauges()

    async def _once(self, job: Job) -> None:
        """One try on a replica; raises RayActorError if the replica died."""
        call = Call(job.prompt_ids, job.cfg, max(job.deadline - time.monotonic(), 0.001), job.request_id)
        gen = self.handle.generate.remote(call)
        watch = asyncio.get_running_loop().create_task(_cancel_when_cancelled(job, gen))
        try:
            async for batch in gen:
                if self.jobs[job] == "waiting":
                    self.jobs[job] = "running"
                    self._gauges()
                for kind, value in batch:
                    if kind == "piece" and not job.stream:
                        continue  # a whole answer is sent at its end
                    if kind == "piece":
                        self.jobs[job] = "shown"
                    elif kind == "done":
                        wait = max(0.0, time.monotonic() - job.submitted - value.stats.ttft_s - value.stats.decode_s)
                        self.metrics.observe_generation(value.stats, wait)
                    else:
                        self.metrics.aborted.labels("error" if kind == "error" else value).inc()
                    job.events.put_nowait((kind, value))
        except RequestCancelledError:  # we cancelled it: the request has already been answered (504, 499)
            self.metrics.aborted.labels(job.cancel_reason or "timeout").inc()
        finally:
            watch.cancel()


async def _cancel_when_cancelled(job: Job, gen) -> None:
    while not job.cancelled:
        await asyncio.sleep(0.25)
    gen.cancel()


def replica_lost(shown: bool) -> APIError:
    if shown:
        return APIError(503, "the replica generating this stream died after part of it was sent; send the request "
                        "again (a greedy or seeded request gets the same answer from any replica)", "server_error",
                        code="replica_lost")
    return APIError(503, f"the replicas serving this request died {RETRIES + 1} times; retry later",
                    "server_error", code="replica_lost")
