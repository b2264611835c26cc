"""Many engines behind one OpenAI endpoint, on Ray Serve: `ryzanstein serve --replicas N` on one machine, or
`serve run` / `serve deploy` with a config file (docs/scale-out.md) on several.

    HTTP -> Ray Serve's proxy -> Ingress (app.py's app) --deployment handle--> EngineReplica x N (an engine each)

- Ingress: the FastAPI app of `ryzanstein serve` (the same routes, errors, streaming, API key and /metrics) over
  a Front (the model's tokenizer and card, copied from a replica: no weights) and a ReplicaPool
  (replica_pool.py) in the place of worker.py's EngineWorker. A request is parsed, tokenized and answered as
  `ryzanstein serve` answers it; only its generation runs on a replica.
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

`ryzanstein serve --replicas N` itself (a local Ray, the deployment, the signals) is cluster_local.py.
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass

from ..config import GenerationConfig, LoadConfig
from ..engine import Engine
from ..errors import ConfigError, MissingExtra, RyzansteinError
from .affinity import PrefixTable
from .app import create_app
from .config import ServerConfig
from .metrics import Metrics
from .openai_api import APIError
from .worker import EngineWorker, Job, QueueFull

try:  # Ray: the optional `cluster` extra (a 76 MB wheel, and processes of its own); only the cluster modules
    # (this one, replica_pool.py and cluster_local.py) import it
    from ray import serve
    from ray.serve.config import RequestRouterConfig
    from ray.serve.metrics import Counter as RayCounter, Gauge as RayGauge
    from ray.serve.request_router import PendingRequest, RequestRouter, RunningReplica
except ModuleNotFoundError as e:
    if not (e.name or "").startswith("ray"):
        raise
    raise MissingExtra("serving on Ray (ryzanstein serve --replicas)", "cluster") from None

from .replica_pool import Call, ReplicaPool  # noqa: E402 - after the extra's one-line check

log = logging.getLogger("ryzanstein.server")
APP = "ryzanstein"  # the Ray Serve application's name
DEFAULT_PARALLEL = 4  # batch slots per replica: the replicas of one machine share its cores and memory
LOAD_FAILED = "a replica cannot load its model:"  # what the deployment's error says, for serve_local to find


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
        self.worker = EngineWorker(self.engine, self.metrics, server.max_queue, server.parallel,
                                   server.prefill_chunk)
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
