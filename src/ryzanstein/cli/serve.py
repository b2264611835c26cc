"""`ryzanstein serve`: the OpenAI-compatible HTTP server over one loaded engine."""
from __future__ import annotations

import argparse
import os
import sys

from ..config import POLICIES, GenerationConfig
from ..engine import Engine
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
    g.add_argument("--max-queue", type=int, default=16, help="requests that may wait for the engine; more get 429")
    g.add_argument("--request-timeout", type=float, default=300.0, help="seconds per request, queue wait included")
    g.add_argument("--max-body-bytes", type=int, default=1 << 20, help="larger request bodies get 413")
    g.add_argument("--k", type=parse_k, default=None, help="default draft length per request: an integer, or auto")
    g.add_argument("--policy", choices=POLICIES, default="auto", help="default draft-length policy per request")
    p.set_defaults(func=cmd_serve)


def cmd_serve(a: argparse.Namespace) -> int:
    import uvicorn  # the optional server extra (with fastapi, prometheus-client): imported only to serve

    from ..server.app import create_app  # imports fastapi, the same extra

    cfg = ServerConfig(host=a.host, port=a.port, api_key=a.api_key or None, max_queue=a.max_queue,
                       request_timeout=a.request_timeout, max_body_bytes=a.max_body_bytes, k=a.k, policy=a.policy)
    engine = Engine(load_config_from_args(a))
    # warm up (and measure the cost profile policy auto needs) before the first request waits for it
    engine.generate("Hello", GenerationConfig(max_new_tokens=4, temperature=0.0, k=cfg.k, policy=cfg.policy),
                    chat=False)
    app = create_app(engine, cfg)
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and cfg.api_key is None:
        print(f"warning: serving on {cfg.host} without --api-key: anyone who can reach it may use it", file=sys.stderr)
    print(f"serving {engine.target.info.name} (draft {a.draft}) on http://{cfg.host}:{cfg.port}/v1", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info" if a.verbose else "warning",
                access_log=a.verbose, timeout_graceful_shutdown=5)
    engine.close()
    return 0
