"""`ryzanstein serve`: the OpenAI-compatible HTTP server over one loaded engine."""
from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import os
import socket
import sys

from ..config import POLICIES, GenerationConfig
from ..engine import Engine
from ..errors import ConfigError
from ..machine import available_memory_bytes
from ..server.config import ServerConfig
from .args import add_load_args, load_config_from_args, parse_k


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="serve an OpenAI-compatible HTTP API (completions, chat, /metrics)")
    add_load_args(p)
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    g.add_argument("--port", type=int, default=8000)
    g.add_argument("--api-key", default=os.environ.get("RYZANSTEIN_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1/ (default: $RYZANSTEIN_API_KEY, else none)")
    g.add_argument("--parallel", type=int, default=None,
                   help="requests decoded at once in one continuous batch, each in a KV cache of --ctx-size "
                        f"(default on the native backend: {DEFAULT_PARALLEL}, fewer if their caches do not fit in "
                        "memory; 1 elsewhere)")
    g.add_argument("--max-queue", type=int, default=16, help="requests that may wait for the engine; more get 429")
    g.add_argument("--prefill-chunk", type=int, default=ServerConfig.prefill_chunk, help="with --parallel above "
                   "1: the prompt rows each batched step gives a waiting prompt at least, beside the decoding "
                   "requests' rows: more gives a new request its first token sooner, fewer keeps the others' "
                   "tokens flowing during a long prompt")
    g.add_argument("--request-timeout", type=float, default=300.0, help="seconds per request, queue wait included")
    g.add_argument("--max-body-bytes", type=int, default=1 << 20, help="larger request bodies get 413")
    g.add_argument("--k", type=parse_k, default=None, help="default draft length per request: an integer, or auto")
    g.add_argument("--policy", choices=POLICIES, default="auto", help="default draft-length policy per request")
    g.add_argument("--allowed-origins", default="", help="CORS: comma list of browser origins that may call the "
                   "API (https://app.example.com), or * for any (default: none, CORS off)")
    g.add_argument("--no-webui", action="store_true", help="do not serve the chat page at / (the API only)")
    c = p.add_argument_group("cluster (Ray Serve, the cluster extra: docs/scale-out.md)")
    c.add_argument("--replicas", type=int, default=None, help="serve N engine replicas behind one endpoint on a "
                   "local Ray instance (or $RAY_ADDRESS's cluster); --threads and --parallel are per replica "
                   "(default threads: cores / N; parallel: 4)")
    c.add_argument("--metrics-export-port", type=int, default=None, help="with --replicas: Ray's Prometheus port, "
                   "where each replica's metrics are (default: Ray picks one)")
    c.add_argument("--no-prefix-affinity", action="store_true", help="with --replicas: send every request to the "
                   "least loaded replica, not to the one whose cache holds its prompt's prefix")
    p.set_defaults(func=cmd_serve)


def cmd_serve(a: argparse.Namespace) -> int:
    import uvicorn  # ~0.3 s to import with fastapi and its app: only when serving

    from ..server.app import create_app  # imports fastapi, the same extra

    if a.api_key == "":  # an empty key must not quietly mean "no authentication"
        raise ConfigError("the API key is empty (--api-key '' or RYZANSTEIN_API_KEY set to ''): give a key, or "
                          "unset both to serve without authentication")
    if a.parallel is not None and a.parallel < 1:
        raise ConfigError(f"--parallel {a.parallel}: give at least 1 (requests decoded at once)")
    cfg = ServerConfig(host=a.host, port=a.port, api_key=a.api_key, max_queue=a.max_queue,
                       prefill_chunk=a.prefill_chunk,
                       request_timeout=a.request_timeout, max_body_bytes=a.max_body_bytes, k=a.k, policy=a.policy,
                       allowed_origins=tuple(o.strip() for o in a.allowed_origins.split(",") if o.strip()),
                       webui=not a.no_webui)
    if a.replicas is None and (a.metrics_export_port is not None or a.no_prefix_affinity):
        flag = "--metrics-export-port" if a.metrics_export_port is not None else "--no-prefix-affinity"
        raise ConfigError(f"{flag} applies to replicas only: add --replicas N, or leave it out")
    if a.replicas is not None:
        from ..server.cluster_local import serve_local  # imports Ray (the optional cluster extra, ~2 s): only here

        return serve_local(load_config_from_args(a), cfg, a.replicas, a.parallel, a.metrics_export_port,
                           not a.no_prefix_affinity)
    sock = bind(cfg.host, cfg.port)  # before the model loads: a port in use is known at once
    engine = Engine(load_config_from_args(a))
    # warm up (and measure the cost profile policy auto needs) before the first request waits for it
    engine.generate("Hello", GenerationConfig(max_new_tokens=4, temperature=0.0, k=cfg.k, policy=cfg.policy),
                    chat=False)
    parallel, why = choose_parallel(engine, a.parallel)
    cfg = dataclasses.replace(cfg, parallel=parallel)
    print(f"parallel {parallel} ({why})", flush=True)
    app = create_app(engine, cfg)
    logging.getLogger("ryzanstein.server").setLevel(logging.INFO)  # one line per request, with its X-Request-Id
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and cfg.api_key is None:
        print(f"warning: serving on {cfg.host} without --api-key: anyone who can reach it may use it", file=sys.stderr)
    url = f"http://{cfg.host}:{sock.getsockname()[1]}"
    print(f"serving {engine.target.info.name} (draft {a.draft}) on {url}/v1"
          + (f", chat page at {url}/" if cfg.webui else ""), flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="info" if a.verbose else "warning", access_log=False,
                                           timeout_graceful_shutdown=5))
    server.run(sockets=[sock])
    engine.close()
    return 0


DEFAULT_PARALLEL = 8  # one forward over 8 sequences' rows costs ~2x one row's on the native kernels


def slot_bytes(engine: Engine) -> int:
    """Memory one more batch slot takes: a target KV cache of --ctx-size and the drafter's twin's cache."""
    n = engine.target.memory().kv_cache_bytes
    draft = engine.proposer and engine.proposer.model
    if draft is not None:
        n += draft.memory().kv_cache_bytes
    return n


def choose_parallel(engine: Engine, asked: int | None) -> tuple[int, str]:
    """--parallel, checked against free memory (one line if it cannot fit), or the default: DEFAULT_PARALLEL on
    the native backend, as many as fit, else 1."""
    native = engine.target.info.backend == "native"
    if asked is not None and asked > 1 and not native:
        raise ConfigError(f"--parallel {asked} needs the native backend (continuous batching); "
                          f"{engine.target.info.name} runs on {engine.target.info.backend}: use --parallel 1")
    if not native:
        return 1, f"the {engine.target.info.backend} backend decodes one request at a time"
    per, free = slot_bytes(engine), available_memory_bytes()
    fit = max(1, int(0.8 * free // per)) if per and free else DEFAULT_PARALLEL
    if asked is not None:
        if asked > fit:
            raise ConfigError(f"--parallel {asked} needs {asked} KV caches of {engine.target.n_ctx} positions, "
                              f"{asked * per / 2**20:.0f} MiB, but {free / 2**20:.0f} MiB are free: lower "
                              "--parallel or --ctx-size")
        return asked, f"KV caches {asked} x {per / 2**20:.0f} MiB"
    n = min(DEFAULT_PARALLEL, fit)
    return n, f"default: KV caches {n} x {per / 2**20:.0f} MiB; set it with --parallel"


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or one line saying why not (the port in use, an unknown address)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigError(f"cannot serve on --host {host!r}: {e.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restart past TIME_WAIT
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {port} is in use on {host}: stop what listens there or pick another --port") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}: pick another --host or --port") from None
    sock.set_inheritable(True)
    return sock
