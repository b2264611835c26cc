"""Many engines behind one OpenAI endpoint, on Ray Serve: `ryzanstein serve --replicas N` on one machine, or
`serve run` / `serve deploy` with a config file (docs/scale-out.md) on several.

    HTTP -> Ray Serve's proxy -> Ingress (app.py's app) --deployment handle--> EngineReplica x N (an engine each)

- Ingress: the FastAPI app of `ryzanstein serve` (the same routes, errors, streaming, API key and /metrics) over
  a Front (the model's tokenizer and card, copied from a replica: no weights) and a ReplicaPool in the place of
  worker.py's EngineWorker. A request is parsed, tokenized and answered as `ryzanstein serve` answers it; only
  its generation runs on a replica.
- EngineReplica: one Engine behind worker.py's queue (continuous batching over `parallel` slots); a
  generation's events stream back to the ingress.
- Routing, PrefixRouter: to the replica that was sent the request's longest prefix (affinity.py) while it has
  a free batch slot (or all are full and it is not `imbalance` requests over the least loaded); otherwise
  to the least loaded.
- Faults: a replica that dies (process killed, node lost) fails the generations it held. The ingress sends
  each again, to another replica, unless its client has seen part of it (a stream that has begun): that
  stream ends with an error event, 503 `replica_lost`. Ray starts a new replica. A replica that cannot load
  its model fails the deployment on the first try, with the loader's one line.
- Metrics: the ingress's /metrics is `ryzanstein serve`'s summed over the replicas, plus replicas by state and
  the retries. Each replica's own gauges and counters are Ray Serve application metrics (ray.serve.metrics):
  Ray's Prometheus endpoint, tagged with the replica.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from ..config import GenerationConfig, LoadConfig
from ..engine import Engine
from ..errors import ConfigError, MissingExtra, RyzansteinError
from ..machine import usable_cores
from ..models import store
from .affinity import PrefixTable
from .app import create_app
from .config import ServerConfig
from .metrics import Metrics
from .openai_api import APIError
from .worker import EngineWorker, Job, QueueFull

try:  # Ray: the optional `cluster` extra (a 76 MB wheel, and processes of its own); no other module imports it
    import ray
    from ray import serve
    from ray.exceptions import RayActorError
    from ray.serve.config import RequestRouterConfig
    from ray.serve.exceptions import RequestCancelledError
    from ray.serve.metrics import Counter as RayCounter, Gauge as RayGauge
    from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica
except ModuleNotFoundError as e:
    if not (e.name or "").startswith("ray"):
        raise
    raise MissingExtra("serving on Ray (ryzanstein serve --replicas)", "cluster") from None

log = logging.getLogger("ryzanstein.server")
APP = "ryzanstein"  # the Ray Serve application's name
DEFAULT_PARALLEL = 4  # batch slots per replica: the replicas of one machine share its cores and memory
LOAD_FAILED = "a replica cannot load its model:"  # what the deployment's error says, for serve_local to find
RETRIES = 3  # tries on other replicas for a generation whose replica died


@dataclass(frozen=True)
class ClusterConfig:
    """What the Ray Serve application fixes: each replica's models, the server's settings, how many replicas."""

    load: LoadConfig
    server: ServerConfig
    replicas: int = 2
    imbalance: int | None = None  # when all replicas are full: how many more requests the prefix's replica may
    # hold than the least loaded one and still get the request (None: the batch slots per replica)
    prefix_affinity: bool = True  # False: every request to the least loaded replica (single-turn traffic)

    def __post_init__(self) -> None:
        if not (isinstance(self.replicas, int) and 1 <= self.replicas <= 1024):
            raise ConfigError(f"invalid replicas={self.replicas!r}: must be an integer in [1, 1024]")
        if self.imbalance is not None and not (isinstance(self.imbalance, int) and self.imbalance >= 0):
            raise ConfigError(f"invalid imbalance={self.imbalance!r}: must be an integer >= 0 (requests)")
        if not isinstance(self.prefix_affinity, bool):
            raise ConfigError(f"invalid prefix_affinity={self.prefix_affinity!r}: must be true or false")

    @classmethod
    def from_args(cls, args: dict) -> ClusterConfig:
        """The config file's `args`: LoadConfig and ServerConfig fields by name, `replicas`, `imbalance` and
        `prefix_affinity`."""
        load_names = {f.name for f in dataclasses.fields(LoadConfig)}
        server_names = {f.name for f in dataclasses.fields(ServerConfig)} - {"host", "port"}
        unknown = sorted(set(args) - load_names - server_names - {"replicas", "imbalance", "prefix_affinity"})
        if unknown:
            raise ConfigError(f"unknown args {unknown}: give fields of LoadConfig ({', '.join(sorted(load_names))}), "
                              f"of ServerConfig ({', '.join(sorted(server_names))}), replicas, imbalance or "
                              "prefix_affinity")
        server = {k: v for k, v in args.items() if k in server_names}
        server.setdefault("parallel", DEFAULT_PARALLEL)
        if "allowed_origins" in server:
            server["allowed_origins"] = tuple(server["allowed_origins"])
        return cls(LoadConfig(**{k: v for k, v in args.items() if k in load_names}), ServerConfig(**server),
                   args.get("replicas", 2), args.get("imbalance"), args.get("prefix_affinity", True))


@dataclass(frozen=True)
class Call:
    """One generation as the ingress sends it to a replica (and the router reads its prompt ids)."""

    prompt_ids: list[int]
    cfg: GenerationConfig
    timeout_s: float  # what is left of the request's time
    request_id: str = ""


def prompt_ids_of(pending: PendingRequest | None) -> list[int] | None:
    args = pending.args if pending is not None else ()
    return getattr(args[0], "prompt_ids", None) if args else None


class PrefixRouter(RequestRouter):
    """Ray Serve request router: the replica that was sent the longest prefix of the prompt while it has a free
    batch slot, or while every replica is full and it holds at most `imbalance` more requests than the least
    loaded; otherwise the least loaded replica. (Ray then picks, among a rank's replicas with room, the one with
    the fewest requests.) A shared prefix (a system prompt) thus never queues requests on one replica while
    another has a slot free, and a conversation's next turn finds its replica's slot, freed by its last turn."""

    def initialize_state(self, slots: int = DEFAULT_PARALLEL, imbalance: int | None = None, block: int = 16,
                         max_entries: int = 200_000, affinity: bool = True) -> None:
        self.table, self.slots, self.affinity = PrefixTable(block, max_entries), slots, affinity
        self.imbalance = slots if imbalance is None else imbalance

    def load(self, r: RunningReplica) -> int:
        return self.replica_queue_len_cache.get(r.replica_id) or 0  # requests sent and not finished

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: PendingRequest | None = None) -> list[list[RunningReplica]]:
        ids = prompt_ids_of(pending_request) if self.affinity else None
        by_name = {r.replica_id.unique_id: r for r in candidate_replicas}
        _, names = self.table.holders(ids, by_name) if ids else (0, [])
        if names:
            first = [by_name[n] for n in names]
            held, least = min(map(self.load, first)), min(map(self.load, candidate_replicas))
            if held < self.slots or (least >= self.slots and held - least <= self.imbalance):
                return [first, [r for r in candidate_replicas if r.replica_id.unique_id not in names]]
        return [candidate_replicas]

    def on_request_routed(self, pending_request: PendingRequest, replica_id, result) -> None:
        if ids := prompt_ids_of(pending_request):
            self.table.record(ids, replica_id.unique_id)

    def on_replica_actor_died(self, replica_id) -> None:
        super().on_replica_actor_died(replica_id)
        self.table.forget(replica_id.unique_id)


class MetricsMirror:
    """Copies a replica's Prometheus registry (metrics.py) into Ray Serve application metrics every `period_s`:
    gauges as they read, counters by what they added since. Ray tags each with deployment, replica and
    application and serves them on its metrics port. (Histograms stay behind: the ingress has them, summed.)"""

    def __init__(self, registry, period_s: float = 1.0) -> None:
        self.registry, self.period_s = registry, period_s
        self._ray: dict[str, object] = {}
        self._last: dict[tuple, float] = {}
        self._stop = threading.Event()
        threading.Thread(target=self._loop, name="ryzanstein-metrics", daemon=True).start()

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.sync()
            except Exception:  # metrics must never take the replica down
                log.exception("copying metrics to Ray failed")

    def sync(self) -> None:
        for fam in self.registry.collect():
            if fam.type not in ("counter", "gauge"):
                continue
            for s in fam.samples:
                if fam.type == "counter" and not s.name.endswith("_total"):
                    continue
                m = self._ray.get(fam.name)
                if m is None:
                    kind = RayGauge if fam.type == "gauge" else RayCounter
                    m = self._ray[fam.name] = kind(fam.name, fam.documentation, tag_keys=tuple(sorted(s.labels)))
                if fam.type == "gauge":
                    m.set(s.value, tags=s.labels)
                else:
                    key = (s.name, tuple(sorted(s.labels.items())))
                    if (added := s.value - self._last.get(key, 0.0)) > 0:
                        m.inc(added, tags=s.labels)
                    self._last[key] = s.value

    def stop(self) -> None:
        self._stop.set()


def portable(event: tuple, replica: str) -> tuple:
    """An engine event as it crosses to the ingress: a result names its replica; an error keeps only what the
    ingress answers with (its message, and whether it was the request's fault)."""
    kind, value = event
    if kind == "done":
        value.replica = replica  # the response's "ryzanstein" field shows it (openai_api.summary)
    elif kind == "error" and not isinstance(value, APIError):  # (a subclass may not unpickle: MissingExtra)
        ours = isinstance(value, RyzansteinError)
        value = RyzansteinError(str(value)) if ours else RuntimeError(type(value).__name__)
    return kind, value


class EngineReplica:
    """One engine behind worker.py's queue; each generation's events stream back to the caller in batches."""

    def __init__(self, load: LoadConfig, server: ServerConfig) -> None:
        try:
            self.engine = Engine(load)
            # warm up (and measure the cost profile policy auto needs) before the first request, as `serve` does
            self.engine.generate("Hello", GenerationConfig(max_new_tokens=4, temperature=0.0, k=server.k,
                                                           policy=server.policy), chat=False)
        except RyzansteinError as e:  # one line; with max_constructor_retry_count=1 the deployment fails now
            raise RuntimeError(f"{LOAD_FAILED} {e}") from None
        self.name = serve.get_replica_context().replica_id.unique_id
        self.metrics = Metrics()
        self.metrics.slots.set(server.parallel)
        self.worker = EngineWorker(self.engine, self.metrics, server.max_queue, server.parallel)
        self.worker.start()
        self.mirror = MetricsMirror(self.metrics.registry)

    def describe(self) -> dict:
        """What the ingress needs to parse and answer requests for this model: no weights."""
        t, p = self.engine.target, self.engine.proposer
        return {"tokenizer": t.tokenizer, "info": t.info, "vocab_size": t.vocab_size,
                "draft": p.name if p is not None else "none", "parallel": self.worker.parallel}

    async def generate(self, call: Call):
        """Run one generation; yield its events (worker.py's), as many at a time as are ready."""
        job = Job(call.prompt_ids, call.cfg, time.monotonic() + call.timeout_s, call.request_id)
        try:
            self.worker.submit(job)
        except QueueFull as e:  # only past max_ongoing_requests, which Ray keeps us under
            yield [("error", APIError(429, str(e), "rate_limit_error", code="queue_full",
                                      headers={"Retry-After": str(e.retry_after_s)}))]
            return
        ended = False
        try:
            while not ended:
                batch = [await job.events.get()]
                while not job.events.empty():
                    batch.append(job.events.get_nowait())
                ended = batch[-1][0] != "piece"  # done, error or aborted comes last
                yield [portable(e, self.name) for e in batch]
        finally:
            if not ended:  # the ingress cancelled it (client gone, timeout) or went away
                job.cancel("disconnect")

    def __del__(self) -> None:  # Ray Serve's graceful shutdown of the replica (and, again, the collector's)
        worker = self.__dict__.pop("worker", None)
        if worker is not None:
            self.mirror.stop()
            worker.stop()
            self.engine.close()


class Front:
    """The ingress's stand-in for an Engine: a replica's tokenizer and model card, and Engine.encode over them."""

    def __init__(self, card: dict) -> None:
        info = card["info"]
        self.target = _Target(card["tokenizer"], info, info.n_ctx, card["vocab_size"])
        self.proposer = _Proposer(card["draft"]) if card["draft"] != "none" else None

    encode = Engine.encode  # the same prompt checks as `ryzanstein serve` (empty, over the context)


@dataclass
class _Target:
    tokenizer: object
    info: object
    n_ctx: int
    vocab_size: int


@dataclass
class _Proposer:
    name: str


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


@serve.ingress()
class Ingress:
    """app.py's app over a Front and a ReplicaPool: what `ryzanstein serve` answers, each generation on a replica."""

    async def __init__(self, engines, server: ServerConfig, replicas: int) -> None:
        card = await engines.describe.remote()  # waits for the first replica to have loaded its model
        self.asgi = create_app(Front(card), server,
                              lambda metrics: ReplicaPool(engines, metrics, card["parallel"], replicas, server))

    def __serve_build_asgi_app__(self):
        return one_request_id(self.asgi)


def one_request_id(app):
    """The app, its responses without the X-Request-Id header Guard adds: Ray's proxy adds the same id (the
    client's, which it passes on, or its own), and a response should carry it once."""
    async def asgi(scope, receive, send):
        async def send_(message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": headers}
            await send(message)
        await app(scope, receive, send_)
    return asgi


def application(cfg: ClusterConfig):
    """The Ray Serve application: `replicas` EngineReplicas (each `threads` CPUs) behind one Ingress."""
    s, threads = cfg.server, cfg.load.threads or 1
    engines = serve.deployment(EngineReplica, name="EngineReplica").options(
        num_replicas=cfg.replicas, ray_actor_options={"num_cpus": threads},
        max_ongoing_requests=s.parallel + s.max_queue,  # its own queue never overflows; more wait at the router
        max_constructor_retry_count=1,  # a model that does not load fails the deployment now, not 3 x N times
        health_check_period_s=2.0, graceful_shutdown_timeout_s=5.0,
        request_router_config=RequestRouterConfig(
            request_router_class=PrefixRouter,
            request_router_kwargs={"slots": s.parallel, "imbalance": cfg.imbalance,
                                   "affinity": cfg.prefix_affinity}),
    ).bind(cfg.load, s)
    ingress = serve.deployment(Ingress, name="Ingress").options(
        num_replicas=1, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=max(1000, 2 * cfg.replicas *
                                                                                    (s.parallel + s.max_queue)))
    return ingress.bind(engines, s, cfg.replicas)


def build_app(args: dict):
    """The import path of a config file (`import_path: ryzanstein.server.cluster:build_app`), its `args` as in
    ClusterConfig.from_args; threads default to 1 per replica."""
    cfg = ClusterConfig.from_args(args)
    if cfg.load.threads is None:
        cfg = dataclasses.replace(cfg, load=dataclasses.replace(cfg.load, threads=1))
    return application(cfg)


def serve_local(load: LoadConfig, server: ServerConfig, replicas: int, parallel: int | None,
                metrics_export_port: int | None = None, prefix_affinity: bool = True) -> int:
    """`ryzanstein serve --replicas N`: start Ray on this machine (or join $RAY_ADDRESS), deploy, serve until
    SIGINT or SIGTERM, then take it all down."""
    cores = usable_cores()
    threads = load.threads or max(1, cores // replicas)
    cfg = ClusterConfig(dataclasses.replace(load, threads=threads),
                        dataclasses.replace(server, parallel=parallel or DEFAULT_PARALLEL), replicas,
                        prefix_affinity=prefix_affinity)
    store.resolve(load.model, auto_pull=True)  # pulled once here, not by N replicas at once (or one line)
    shared = bool(os.environ.get("RAY_ADDRESS"))  # an existing cluster: `ray start --head` / `--address=...`
    # the replicas' logs stay in Ray's session folder (/tmp/ray/session_latest/logs/serve/), not on the terminal
    if shared:  # its proxy listens where the cluster put it; its CPUs decide where replicas go
        ray.init(logging_level=logging.WARNING, log_to_driver=False)
    else:
        check_port(server.host, server.port)
        if replicas * threads > cores:
            print(f"warning: {replicas} replicas x {threads} threads on {cores} cores: they will slow each other "
                  "down", file=sys.stderr)
        ray.init(num_cpus=max(cores, replicas * threads), include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False, _metrics_export_port=metrics_export_port)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # our one line says where it serves
    try:
        serve.start(http_options={"host": server.host, "port": server.port})
        try:
            serve.run(application(cfg), name=APP, route_prefix="/")
        except RuntimeError as e:  # the deployment failed: its replicas' errors are in Serve's status
            raise RyzansteinError(deploy_failure(f"{e}\n{status_messages()}")) from None
        print(f"serving {load.model} on {replicas} replicas x {threads} threads ({cfg.server.parallel} slots each) "
              f"at http://{server.host}:{server.port}/v1", flush=True)
        wait_for_signal()
    finally:
        if shared:
            serve.delete(APP)  # only ours: other applications may be served on that cluster
        else:
            serve.shutdown()
        ray.shutdown()
    return 0


def status_messages() -> str:
    """What Serve's status says of the application and its deployments (a replica's error is there)."""
    try:
        app = serve.status().applications.get(APP)
    except Exception as e:  # the controller is gone too: say what we know
        return f"(no status: {e})"
    return "\n".join([app.message, *(d.message for d in app.deployments.values())]) if app else ""


def deploy_failure(message: str) -> str:
    """The one line to print for a failed deployment: the replica's own, where it gave one."""
    for line in reversed(message.splitlines()):
        if LOAD_FAILED in line:
            return line[line.index(LOAD_FAILED):].strip()
    return f"the Ray Serve application did not start: {message.strip().splitlines()[0]}"


def check_port(host: str, port: int) -> None:
    """One line now if host:port cannot be listened on, rather than a Ray proxy that never starts."""
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        raise ConfigError(f"cannot serve on {host}:{port}: {e.strerror}: pick another --host or --port") from None


def wait_for_signal() -> None:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass
