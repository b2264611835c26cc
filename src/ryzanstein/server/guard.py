"""The outermost ASGI layer of the server: API key, body size, and the requests-by-endpoint-and-status counter."""
from __future__ import annotations

import hmac
import logging
import re
import time
import uuid

from starlette.responses import JSONResponse

from .config import ServerConfig
from .openai_api import APIError

log = logging.getLogger("ryzanstein.server")
ENDPOINTS = ("/v1/models", "/v1/completions", "/v1/chat/completions", "/tokenize", "/detokenize", "/metrics",
             "/health")
AUTHENTICATED = ("/v1/", "/tokenize", "/detokenize")  # path prefixes that need the API key, when there is one
REQUEST_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")  # an X-Request-Id we echo; anything else gets a new one


def error_response(e: APIError) -> JSONResponse:
    """An APIError as OpenAI answers it: its status code and {"error": {message, type, param, code}}."""
    return JSONResponse(e.body(), e.status, headers=e.headers)


class Guard:
    """Outermost ASGI layer: API key, body size, and the requests-by-endpoint-and-status counter."""

    def __init__(self, app, config: ServerConfig, metrics) -> None:
        self.app, self.config, self.metrics = app, config, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, path = time.monotonic(), scope["path"]
        given = dict(scope["headers"]).get(b"x-request-id", b"")
        rid = given.decode() if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        # handlers may set "status" (the outcome of a stream) and "on_close"; they read "request_id"
        box = scope["ryzanstein"] = {"request_id": rid}
        sent = {}

        async def send_(message) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode())]}
            await send(message)

        try:
            refusal = self._refuse(scope)
            if refusal is not None:
                await error_response(refusal)(scope, receive, send_)
            else:
                await self.app(scope, self._limited(receive), send_)
        except Exception as e:  # a bug of ours: logged once, answered 500; the connection stays usable
            log.exception("unhandled error on %s", path)
            if "status" not in sent:
                await error_response(APIError(500, f"internal error ({type(e).__name__}); details are in the "
                                              "server log", "server_error"))(scope, receive, send_)
        finally:
            if "on_close" in box:
                box["on_close"]()
            endpoint = path if path in ENDPOINTS else "other"
            status, seconds = box.get("status") or sent.get("status", 500), time.monotonic() - t0
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.request_duration.labels(endpoint).observe(seconds)
            client = scope.get("client") or ("-", 0)
            log.info("%s %s %s %s %.3fs request_id=%s", client[0], scope["method"], path, status, seconds, rid)

    def _refuse(self, scope) -> APIError | None:
        headers = dict(scope["headers"])
        key = self.config.api_key
        if key is not None and scope["path"].startswith(AUTHENTICATED):
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
