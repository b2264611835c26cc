"""The FastAPI app: routes over one engine, each a function of the request (the app's `Served` in its state).

A request's way: Guard (guard.py) -> a route here -> `handle` parses it into prompt ids and a GenerationConfig
(openai_api.py) -> a Job in the worker's queue (worker.py) -> the events the worker sends back become one JSON
body (`complete`) or server-sent events (`stream`).
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from jinja2 import TemplateError
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response, StreamingResponse

from ..engine import Engine
from ..errors import ContextOverflow, RyzansteinError
from .config import ServerConfig
from .guard import Guard, error_response
from .metrics import CONTENT_TYPE, Metrics
from .openai_api import (APIError, check_unicode, chunk, event_error, generation_config_from_request, logprobs_body,
                         parse_messages, parse_prompt, result_body, speculation, sse, summary, unknown_model,
                         usage_of)
from .tokenize_routes import detokenize, tokenize
from .webui import add_webui_routes
from .worker import EngineWorker, Job, QueueFull

log = logging.getLogger("ryzanstein.server")


class ClientGone(Exception):
    """The client of a non-streaming request went away while it waited."""


@dataclass
class Served:
    """What every route reads: the engine, the server's settings, the worker in front of the engine."""

    engine: Engine
    config: ServerConfig
    worker: EngineWorker
    metrics: Metrics
    model_id: str  # the one model this server serves
    loaded_draft: str  # the draft loaded with it, or "none"
    created: int = 0  # when this server loaded the model (unix seconds): /v1/models' `created`


def create_app(engine: Engine, config: ServerConfig, make_worker: Callable[[Metrics], EngineWorker] | None = None
               ) -> FastAPI:
    """The FastAPI app over a loaded Engine; the worker thread starts and stops with the app's lifespan.
    `make_worker(metrics)` puts another worker in front of the engine (cluster.py: replicas elsewhere)."""
    metrics = Metrics()
    metrics.slots.set(config.parallel)
    worker = (make_worker or (lambda m: EngineWorker(engine, m, config.max_queue, config.parallel,
                                                             config.prefill_chunk)))(metrics)
    served = Served(engine, config, worker, metrics, engine.target.info.name,
                    engine.proposer.name if engine.proposer is not None else "none", int(time.time()))
    app = FastAPI(title="ryzanstein", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(Guard, config=config, metrics=metrics)
    if config.allowed_origins:  # added last, so outermost: a browser's preflight needs no API key
        app.add_middleware(CORSMiddleware, allow_origins=list(config.allowed_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-Request-Id"],
                           expose_headers=["X-Request-Id", "Retry-After"])
    app.state.served, app.state.worker, app.state.metrics = served, worker, metrics
    for error, handler in ((APIError, api_error), (HTTPException, http_error),
                           (RequestValidationError, validation_error)):
        app.add_exception_handler(error, handler)  # anything else: Guard answers 500 and keeps the connection
    app.add_api_route("/health", health, methods=["GET"])
    app.add_api_route("/metrics", metrics_text, methods=["GET"])
    app.add_api_route("/v1/models", list_models, methods=["GET"])
    app.add_api_route("/v1/models/{name:path}", get_model, methods=["GET"])
    app.add_api_route("/v1/completions", completions, methods=["POST"])
    app.add_api_route("/v1/chat/completions", chat_completions, methods=["POST"])
    app.add_api_route("/tokenize", tokenize_route, methods=["POST"])
    app.add_api_route("/detokenize", detokenize_route, methods=["POST"])
    if config.webui:
        add_webui_routes(app)  # the chat page at /, a client of the routes above
    return app


def served_by(request: Request) -> Served:
    return request.app.state.served


@asynccontextmanager
async def lifespan(app: FastAPI):
    worker = app.state.served.worker
    worker.start()
    try:
        yield
    finally:
        await asyncio.to_thread(worker.stop)


# errors ---------------------------------------------------------------------------------------------------
async def api_error(request: Request, e: APIError):
    return error_response(e)


async def http_error(request: Request, e: HTTPException):
    return error_response(APIError(e.status_code, str(e.detail), "not_found_error" if e.status_code == 404 else
                                   "invalid_request_error", headers=getattr(e, "headers", None)))


async def validation_error(request: Request, e: RequestValidationError):
    return error_response(APIError(400, f"invalid request: {e.errors()}"))


# routes ---------------------------------------------------------------------------------------------------
async def health(request: Request):
    s = served_by(request)
    h = {"status": "ok", "model": s.model_id, "draft": s.loaded_draft, **s.worker.health()}
    return JSONResponse(h, 503) if h["status"] == "unavailable" else h  # cluster.py: no replica running


async def metrics_text(request: Request):
    return Response(served_by(request).metrics.render(), media_type=CONTENT_TYPE)


def model_card(s: Served) -> dict:
    """The served model as OpenAI lists it, with vLLM's max_model_len and our own details."""
    info = s.engine.target.info
    return {"id": s.model_id, "object": "model", "created": s.created, "owned_by": "ryzanstein",
            "max_model_len": info.n_ctx,
            "ryzanstein": {"context_length": info.n_ctx, "n_ctx_train": info.n_ctx_train, "backend": info.backend,
                           "dtype": info.dtype, "draft": s.loaded_draft}}


async def list_models(request: Request):
    return {"object": "list", "data": [model_card(served_by(request))]}


async def get_model(name: str, request: Request):
    s = served_by(request)
    if name != s.model_id:
        raise unknown_model(name, s.model_id)
    return model_card(s)


async def tokenize_route(request: Request):
    s, body = served_by(request), await read_json(request)
    check_model(body, s)
    return await asyncio.to_thread(tokenize, body, s.engine.target.tokenizer, s.engine.target.n_ctx)


async def detokenize_route(request: Request):
    s, body = served_by(request), await read_json(request)
    check_model(body, s)
    return await asyncio.to_thread(detokenize, body, s.engine.target.tokenizer, s.engine.target.tokenizer.vocab_size)


def check_model(body: dict, s: Served) -> None:
    model = body.get("model")
    if model is not None and model != s.model_id:
        raise unknown_model(model, s.model_id)


async def completions(request: Request):
    return await handle(request, chat=False)


async def chat_completions(request: Request):
    return await handle(request, chat=True)


# one generation request -----------------------------------------------------------------------------------
async def read_json(request: Request) -> dict:
    """The body as a JSON object of valid Unicode; 400 for anything else, 499 if the client left mid-body."""
    try:
        body = await request.body()
    except ClientDisconnect:  # fewer bytes than Content-Length, then the connection closed
        raise APIError(499, "the client closed the connection before the whole body arrived") from None
    try:
        data = json.loads(body)
    except RecursionError:
        raise APIError(400, "the JSON body nests too deeply: send at most a few hundred levels") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise APIError(400, f"malformed JSON body: {e}") from None
    if not isinstance(data, dict):
        raise APIError(400, "the body must be a JSON object")
    check_unicode(data)
    return data


async def handle(request: Request, chat: bool):
    """Parse the request, queue its job, and answer with the whole result or a stream of events."""
    s = served_by(request)
    deadline = time.monotonic() + s.config.request_timeout
    body = await read_json(request)
    check_model(body, s)
    cfg = generation_config_from_request(body, chat, s.config, s.loaded_draft)
    prompt = parse_messages(body) if chat else parse_prompt(body, s.engine.target.vocab_size)
    param = "messages" if chat else "prompt"
    try:
        ids = await asyncio.to_thread(s.engine.encode, prompt, chat)
    except ContextOverflow as e:
        raise APIError(400, str(e), param=param, code="context_length_exceeded") from None
    except RyzansteinError as e:
        raise APIError(400, str(e), param=param) from None
    except TemplateError as e:  # the model's chat template refused these messages
        raise APIError(400, f"chat template: {e}", param=param) from None
    if body.get("max_tokens") is None and body.get("max_completion_tokens") is None and chat:
        cfg = cfg.replace(max_new_tokens=max(s.engine.target.n_ctx - len(ids), 1))  # until EOS or context end
    job = Job(ids, cfg, deadline, request.scope["ryzanstein"].get("request_id", ""), bool(body.get("stream")))
    try:
        s.worker.submit(job)
    except QueueFull as e:
        raise APIError(429, str(e), "rate_limit_error", code="queue_full",
                       headers={"Retry-After": str(e.retry_after_s)}) from None
    head = {"id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex, "created": int(time.time()),
            "model": s.model_id}
    if body.get("stream"):
        opts = body.get("stream_options") or {}
        usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
        return stream(request, job, head, chat, usage)
    return await complete(request, job, head, chat)


async def complete(request: Request, job: Job, head: dict, chat: bool):
    """The whole result as one JSON body (or 499 if the client left while it waited)."""
    timeout = served_by(request).config.request_timeout
    while True:
        try:
            kind, value = await next_event(request, job, timeout, poll_disconnect=True)
        except ClientGone:
            return Response(status_code=499)  # nobody reads it; counted as 499
        if kind == "done":
            return JSONResponse(result_body(head, chat, value, served_by(request).engine.target.tokenizer.token_bytes))
        if kind != "piece":
            raise event_error(kind, value, timeout)


def stream(request: Request, job: Job, head: dict, chat: bool, include_usage: bool) -> StreamingResponse:
    """Server-sent events: a chunk per text piece, then the finish (and usage), then [DONE]."""
    box, finished = request.scope["ryzanstein"], []
    timeout = served_by(request).config.request_timeout
    token_bytes = served_by(request).engine.target.tokenizer.token_bytes

    async def events():
        if chat:
            yield sse(chunk(head, chat, role=True))
        offset = 0  # characters streamed so far: completions' text_offset
        try:
            while True:
                kind, value = await next_event(request, job, timeout, poll_disconnect=False)
                if kind == "piece":
                    piece, entries = value
                    lp = None if entries is None else logprobs_body(entries, chat, token_bytes, offset)
                    offset += len(piece.text)
                    yield sse({**chunk(head, chat, text=piece.text, logprobs=lp), "ryzanstein": speculation(piece)})
                elif kind == "done":
                    yield sse({**chunk(head, chat, finish=value.finish_reason), "ryzanstein": summary(value)})
                    if include_usage:
                        yield sse({**chunk(head, chat), "choices": [], "usage": usage_of(value)})
                    break
                else:
                    raise event_error(kind, value, timeout)
        except Exception as e:  # the status line is sent already: the error is the last event
            if not isinstance(e, APIError):
                log.exception("stream failed")
                e = event_error("error", e, timeout)
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


async def next_event(request: Request, job: Job, request_timeout: float, poll_disconnect: bool) -> tuple:
    """The job's next event; cancels it on timeout (APIError 504) or, if polling, a vanished client."""
    while True:
        now = time.monotonic()
        if now >= job.deadline:
            job.cancel("timeout")
            raise event_error("aborted", "timeout", request_timeout)
        if poll_disconnect and now - job.polled > 0.25:  # pieces may arrive faster than any timeout
            job.polled = now
            if await request.is_disconnected():
                job.cancel("disconnect")
                raise ClientGone
        try:
            return await asyncio.wait_for(job.events.get(), min(job.deadline - now, 0.25))
        except asyncio.TimeoutError:
            pass
