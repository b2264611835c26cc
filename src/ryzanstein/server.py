"""`ryzanstein serve`: an OpenAI-compatible HTTP API over one loaded engine (FastAPI + uvicorn).

    ryzanstein serve --model smollm2-135m --draft ngram --port 8000 [--api-key KEY]

Endpoints: GET /v1/models, POST /v1/completions (raw prompt), POST /v1/chat/completions (the model's chat
template), each streaming (server-sent events, `data: [DONE]` last) or not; GET /metrics (Prometheus text,
server_metrics.py), GET /health. Speculation per request through an extra body field
`"speculative": {"k": "auto" | int, "policy": ..., "draft": "none"}`, defaulting to the server's; each
response carries its speculative figures in a non-standard "ryzanstein" field. Requests wait for the one
engine in a bounded FIFO queue (server_queue.py). Every error is an OpenAI-style JSON body
`{"error": {"message", "type", "param", "code"}}`, never a traceback.
"""
import argparse
import asyncio
import hmac
import json
import logging
import os
import re
import sys
import time
import uuid
from dataclasses import dataclass

from .config import POLICIES, GenerationConfig
from .errors import ConfigError, ContextOverflow, RyzansteinError
from .server_queue import Job, QueueFull

log = logging.getLogger("ryzanstein.server")
ENDPOINTS = ("/v1/models", "/v1/completions", "/v1/chat/completions", "/metrics", "/health")
SPEC_FIELDS = ("k", "policy", "draft", "k_min", "k_max", "p_min", "min_speedup")
UNSUPPORTED = ("logprobs", "top_logprobs", "echo", "suffix", "tools", "functions", "logit_bias")


class ClientGone(Exception):
    """The client of a non-streaming request went away while it waited."""


class APIError(Exception):
    """An error answered as OpenAI does: a status code and {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self):
        from starlette.responses import JSONResponse

        return JSONResponse(self.body(), self.status, headers=self.headers)


@dataclass(frozen=True)
class ServerConfig:
    """What `serve` fixes for all requests (flags named like the fields)."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_queue: int = 16  # requests that may wait while one decodes; more get 429
    request_timeout: float = 300.0  # seconds, queue wait included
    max_body_bytes: int = 1 << 20
    k: int | None = None  # default draft length per request (None = the policy's choice)
    policy: str = "auto"

    def __post_init__(self) -> None:
        for ok, what in ((0 <= self.port <= 65535, f"invalid port={self.port}: must be in [0, 65535]"),
                         (1 <= self.max_queue <= 10_000, f"invalid max_queue={self.max_queue}: must be in [1, 10000]"),
                         (0 < self.request_timeout <= 86_400, f"invalid request_timeout={self.request_timeout}: "
                          "must be seconds in (0, 86400]"),
                         (self.max_body_bytes >= 1024,
                          f"invalid max_body_bytes={self.max_body_bytes}: must be >= 1024"),
                         (self.api_key is None or len(self.api_key) >= 1, "invalid api_key: must not be empty")):
            if not ok:
                raise ConfigError(what)
        GenerationConfig(k=self.k, policy=self.policy)  # the same checks as per request


class Guard:
    """Outermost ASGI layer: API key, body size, and the requests-by-endpoint-and-status counter."""

    def __init__(self, app, config: ServerConfig, metrics) -> None:
        self.app, self.config, self.metrics = app, config, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, path = time.monotonic(), scope["path"]
        box = scope["ryzanstein"] = {}  # handlers may set "status" (the outcome of a stream) and "on_close"
        sent = {}

        async def send_(message) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            await send(message)

        try:
            refusal = self._refuse(scope)
            if refusal is not None:
                await refusal.response()(scope, receive, send_)
            else:
                await self.app(scope, self._limited(receive), send_)
        finally:
            if "on_close" in box:
                box["on_close"]()
            endpoint = path if path in ENDPOINTS else "other"
            self.metrics.requests.labels(endpoint, str(box.get("status") or sent.get("status", 500))).inc()
            self.metrics.request_duration.labels(endpoint).observe(time.monotonic() - t0)

    def _refuse(self, scope) -> APIError | None:
        headers = dict(scope["headers"])
        key = self.config.api_key
        if key is not None and scope["path"].startswith("/v1/"):
            given = headers.get(b"authorization", b"")
            token = given[7:].strip() if given[:7].lower() == b"bearer " else b""
            if not hmac.compare_digest(token, key.encode()):
                return APIError(401, "invalid or missing API key: send 'Authorization: Bearer <key>'",
                                "authentication_error", code="invalid_api_key")
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return APIError(400, "invalid Content-Length header")
            if int(length) > self.config.max_body_bytes:
                return self._too_large()
        return None

    def _too_large(self) -> APIError:
        return APIError(413, f"the request body is over --max-body-bytes={self.config.max_body_bytes}",
                        code="request_too_large")

    def _limited(self, receive):
        """`receive` that refuses a body (chunked, without Content-Length) once it passes the limit."""
        seen = 0

        async def receive_():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.config.max_body_bytes:
                    raise self._too_large()
            return message

        return receive_


def create_app(engine, config: ServerConfig):
    """The FastAPI app over a loaded Engine; the worker thread starts and stops with the app's lifespan."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI, Request
    from jinja2 import TemplateError
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse, Response, StreamingResponse

    from .server_metrics import CONTENT_TYPE, Metrics, spec_summary
    from .server_queue import EngineWorker

    metrics = Metrics()
    worker = EngineWorker(engine, metrics, config.max_queue)
    model_id = engine.target.info.name
    loaded_draft = engine.proposer.name if engine.proposer is not None else "none"

    @asynccontextmanager
    async def lifespan(app):
        worker.start()
        try:
            yield
        finally:
            await asyncio.to_thread(worker.stop)

    app = FastAPI(title="ryzanstein", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, config=config, metrics=metrics)
    app.state.worker, app.state.metrics = worker, metrics

    @app.exception_handler(APIError)
    async def _api_error(request, e: APIError):
        return e.response()

    @app.exception_handler(HTTPException)
    async def _http_error(request, e: HTTPException):
        return APIError(e.status_code, str(e.detail), "not_found_error" if e.status_code == 404 else
                        "invalid_request_error", headers=getattr(e, "headers", None)).response()

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, e):
        return APIError(400, f"invalid request: {e.errors()}").response()

    @app.exception_handler(Exception)
    async def _internal_error(request, e: Exception):
        log.exception("unhandled error")
        return APIError(500, f"internal error ({type(e).__name__}); details are in the server log",
                        "server_error").response()

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_id, "draft": loaded_draft, "waiting": worker.waiting,
                "running": worker.running is not None}

    @app.get("/metrics")
    async def metrics_text():
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    def model_card() -> dict:
        return {"id": model_id, "object": "model", "created": 0, "owned_by": "ryzanstein"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def model(name: str):
        if name != model_id:
            raise _unknown_model(name, model_id)
        return model_card()

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle(request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await handle(request, chat=True)

    async def handle(request, chat: bool):
        deadline = time.monotonic() + config.request_timeout
        body = await read_json(request)
        model = body.get("model")
        if model is not None and model != model_id:
            raise _unknown_model(model, model_id)
        cfg = generation_config(body, chat, config, loaded_draft)
        prompt = parse_messages(body) if chat else parse_prompt(body, engine.target.vocab_size)
        param = "messages" if chat else "prompt"
        try:
            ids = await asyncio.to_thread(engine.encode, prompt, chat)
        except ContextOverflow as e:
            raise APIError(400, str(e), param=param, code="context_length_exceeded") from None
        except RyzansteinError as e:
            raise APIError(400, str(e), param=param) from None
        except TemplateError as e:  # the model's chat template refused these messages
            raise APIError(400, f"chat template: {e}", param=param) from None
        if body.get("max_tokens") is None and body.get("max_completion_tokens") is None and chat:
            cfg = cfg.replace(max_new_tokens=max(engine.target.n_ctx - len(ids), 1))  # until EOS or context end
        job = Job(ids, cfg, deadline)
        try:
            worker.submit(job)
        except QueueFull as e:
            raise APIError(429, str(e), "rate_limit_error", code="queue_full",
                           headers={"Retry-After": str(e.retry_after_s)}) from None
        head = {"id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex, "created": int(time.time()),
                "model": model_id}
        if body.get("stream"):
            opts = body.get("stream_options") or {}
            usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
            return stream(request, job, head, chat, usage)
        return await complete(request, job, head, chat)

    async def complete(request, job: Job, head: dict, chat: bool):
        while True:
            try:
                kind, value = await next_event(request, job, poll_disconnect=True)
            except ClientGone:
                return Response(status_code=499)  # nobody reads it; counted as 499
            if kind == "done":
                return JSONResponse(result_body(head, chat, value))
            if kind != "piece":
                raise event_error(kind, value)

    def stream(request, job: Job, head: dict, chat: bool, include_usage: bool):
        box, finished = request.scope["ryzanstein"], []

        async def events():
            if chat:
                yield sse(chunk(head, chat, role=True))
            try:
                while True:
                    kind, value = await next_event(request, job, poll_disconnect=False)
                    if kind == "piece":
                        yield sse(chunk(head, chat, text=value))
                    elif kind == "done":
                        yield sse({**chunk(head, chat, finish=value.finish_reason), "ryzanstein": summary(value)})
                        if include_usage:
                            yield sse({**chunk(head, chat), "choices": [], "usage": usage_of(value)})
                        break
                    else:
                        raise event_error(kind, value)
            except Exception as e:  # the status line is sent already: the error is the last event
                if not isinstance(e, APIError):
                    log.exception("stream failed")
                    e = event_error("error", e)
                box["status"] = e.status
                yield sse(e.body())
            finished.append(True)
            yield "data: [DONE]\n\n"

        def on_close() -> None:  # run by Guard when the response ends, however it ends
            if not finished:
                job.cancel("disconnect")
                box["status"] = 499

        box["on_close"] = on_close
        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    async def next_event(request, job: Job, poll_disconnect: bool) -> tuple:
        """The job's next event; cancels it on timeout (APIError 504) or, if polling, a vanished client."""
        while True:
            now = time.monotonic()
            if now >= job.deadline:
                job.cancel("timeout")
                raise event_error("aborted", "timeout")
            if poll_disconnect and now - job.polled > 0.25:  # pieces may arrive faster than any timeout
                job.polled = now
                if await request.is_disconnected():
                    job.cancel("disconnect")
                    raise ClientGone
            try:
                return await asyncio.wait_for(job.events.get(), min(job.deadline - now, 0.25))
            except asyncio.TimeoutError:
                pass

    def event_error(kind: str, value) -> APIError:
        """The answer to a job that ended without a result: ("aborted", reason) or ("error", exception)."""
        if kind == "aborted" and value == "shutdown":
            return APIError(503, "the server is shutting down; retry elsewhere or later", "server_error",
                            code="shutting_down")
        if kind == "aborted":
            return APIError(504, f"the request took longer than --request-timeout={config.request_timeout:g} s",
                            "timeout_error", code="timeout")
        if isinstance(value, RyzansteinError):
            return APIError(400, str(value))
        return APIError(500, f"generation failed ({type(value).__name__}); details are in the server log",
                        "server_error")

    def summary(result) -> dict:
        return {**spec_summary(result.stats), "seed": result.seed}

    def result_body(head: dict, chat: bool, result) -> dict:
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": result.text}}
        else:
            choice = {"index": 0, "text": result.text}
        choice.update(logprobs=None, finish_reason=result.finish_reason)
        return {**head, "object": "chat.completion" if chat else "text_completion", "choices": [choice],
                "usage": usage_of(result), "ryzanstein": summary(result)}

    return app


def usage_of(result) -> dict:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.num_tokens,
            "total_tokens": result.prompt_tokens + result.num_tokens}


def chunk(head: dict, chat: bool, text: str = "", finish: str | None = None, role: bool = False) -> dict:
    """One streamed chunk in OpenAI's format."""
    if chat:
        delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
        choice = {"index": 0, "delta": delta}
    else:
        choice = {"index": 0, "text": text}
    choice.update(logprobs=None, finish_reason=finish)
    return {**head, "object": "chat.completion.chunk" if chat else "text_completion", "choices": [choice]}


def sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _unknown_model(name, model_id: str) -> APIError:
    return APIError(404, f"the model {name!r} does not exist: this server serves {model_id!r}", param="model",
                    code="model_not_found")


async def read_json(request) -> dict:
    body = await request.body()
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise APIError(400, f"malformed JSON body: {e}") from None
    if not isinstance(data, dict):
        raise APIError(400, "the body must be a JSON object")
    return data


def generation_config(body: dict, chat: bool, server: ServerConfig, loaded_draft: str) -> GenerationConfig:
    """The request's GenerationConfig; APIError 400 naming the parameter for anything invalid."""
    if body.get("n") not in (None, 1):
        raise APIError(400, f"invalid n={body['n']!r}: only n=1 is supported", param="n")
    for name in UNSUPPORTED:
        if body.get(name):
            raise APIError(400, f"{name} is not supported by this server", param=name)
    if body.get("best_of") not in (None, 1):
        raise APIError(400, "best_of is not supported by this server (only 1)", param="best_of")
    for name in ("presence_penalty", "frequency_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise APIError(400, f"{name} is not supported by this server (only 0)", param=name)
    if body.get("stream") not in (None, True, False):
        raise APIError(400, f"invalid stream={body['stream']!r}: must be true or false", param="stream")
    stop = body.get("stop")
    if not (stop is None or isinstance(stop, (str, list))):
        raise APIError(400, f"invalid stop={stop!r}: must be a string or a list of strings", param="stop")
    spec = body.get("speculative") or {}
    if not isinstance(spec, dict) or set(spec) - set(SPEC_FIELDS):
        raise APIError(400, f"invalid speculative={spec!r}: an object with fields {', '.join(SPEC_FIELDS)}",
                       param="speculative")
    draft = spec.get("draft")
    if draft not in (None, "none", loaded_draft):
        raise APIError(400, f"invalid speculative.draft={draft!r}: this server loaded draft {loaded_draft!r} "
                       "(use it, or 'none')", param="speculative.draft")
    k = spec.get("k", server.k)
    k = 0 if draft == "none" else (None if k == "auto" else k)
    max_tokens = body.get("max_completion_tokens") if chat else None
    max_tokens = body.get("max_tokens") if max_tokens is None else max_tokens
    extra = {f: spec[f] for f in ("k_min", "k_max", "p_min", "min_speedup") if f in spec}
    def get(name, default):
        return default if body.get(name) is None else body[name]
    try:
        return GenerationConfig(
            max_new_tokens=16 if max_tokens is None else max_tokens, temperature=get("temperature", 1.0),
            top_p=get("top_p", 1.0), top_k=get("top_k", 0), seed=body.get("seed"), stop=stop or (), k=k,
            policy=spec.get("policy", server.policy), **extra)
    except ConfigError as e:
        m = re.match(r"invalid (\w+)=", str(e))
        field = m.group(1) if m else None
        param = {"max_new_tokens": "max_tokens"}.get(field, f"speculative.{field}" if field in SPEC_FIELDS else field)
        raise APIError(400, str(e), param=param) from None


def parse_prompt(body: dict, vocab_size: int) -> str | list[int]:
    """A completion's prompt: a string or token ids (one prompt per request)."""
    p = body.get("prompt")
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], (str, list)):
        p = p[0]
    if isinstance(p, str):
        return p
    if isinstance(p, list) and p and all(type(t) is int and 0 <= t < vocab_size for t in p):
        return p
    raise APIError(400, "prompt must be a string or a list of token ids in the vocabulary (one prompt per "
                   "request)", param="prompt")


def parse_messages(body: dict) -> list[dict]:
    """Chat messages as [{role, content: str}]: text parts are joined; other parts are refused."""
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise APIError(400, "messages must be a non-empty list of {role, content}", param="messages")
    out = []
    for i, m in enumerate(msgs):
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise APIError(400, f"messages[{i}].content: only text parts are supported", param="messages")
            content = "".join(p["text"] for p in content)
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(content, (str, type(None))):
            raise APIError(400, f"messages[{i}] must be {{role: string, content: string}}", param="messages")
        out.append({"role": m["role"], "content": content or ""})
    return out


# command line -------------------------------------------------------------------------------------------------
def add_parser(sub) -> None:
    """`ryzanstein serve` (cli.py loads this when the server's dependencies are installed)."""
    from .cli import _k, add_load_args

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
    g.add_argument("--k", type=_k, default=None, help="default draft length per request: an integer, or auto")
    g.add_argument("--policy", choices=POLICIES, default="auto", help="default draft-length policy per request")
    p.set_defaults(func=cmd_serve)


def cmd_serve(a: argparse.Namespace) -> int:
    import uvicorn

    from .cli import load_config
    from .engine import Engine

    cfg = ServerConfig(host=a.host, port=a.port, api_key=a.api_key or None, max_queue=a.max_queue,
                       request_timeout=a.request_timeout, max_body_bytes=a.max_body_bytes, k=a.k, policy=a.policy)
    engine = Engine(load_config(a))
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
