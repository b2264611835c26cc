"""What `ryzanstein serve` fixes for all requests."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..batching import PREFILL_MIN_ROWS
from ..config import GenerationConfig
from ..errors import ConfigError


ORIGIN = re.compile(r"https?://[^/\s]+")  # what a browser sends as Origin: scheme://host[:port]


@dataclass(frozen=True)
class ServerConfig:
    """What `serve` fixes for all requests (flags named like the fields)."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_queue: int = 16  # requests that may wait while the slots decode; more get 429
    parallel: int = 1  # requests decoded at once (continuous batching on the native backend)
    prefill_chunk: int = PREFILL_MIN_ROWS  # prompt rows a batched step gives a waiting prompt at least
    request_timeout: float = 300.0  # seconds, queue wait included
    max_body_bytes: int = 1 << 20
    k: int | None = None  # default draft length per request (None = the policy's choice)
    policy: str = "auto"
    allowed_origins: tuple[str, ...] = ()  # CORS: browser origins that may call the API ("*": any); () = off
    webui: bool = True  # the chat page at / (a client of the API: its calls need the key like any other)

    def __post_init__(self) -> None:
        for ok, what in ((0 <= self.port <= 65535, f"invalid port={self.port}: must be in [0, 65535]"),
                         (1 <= self.parallel <= 64, f"invalid parallel={self.parallel}: must be in [1, 64]"),
                         (1 <= self.prefill_chunk <= 4096,
                          f"invalid prefill_chunk={self.prefill_chunk}: must be in [1, 4096] (rows)"),
                         (1 <= self.max_queue <= 10_000, f"invalid max_queue={self.max_queue}: must be in [1, 10000]"),
                         (0 < self.request_timeout <= 86_400, f"invalid request_timeout={self.request_timeout}: "
                          "must be seconds in (0, 86400]"),
                         (self.max_body_bytes >= 1024,
                          f"invalid max_body_bytes={self.max_body_bytes}: must be >= 1024"),
                         (self.api_key is None or (isinstance(self.api_key, str) and self.api_key.strip() != ""),
                          "invalid api_key: must not be empty (None serves without authentication)")):
            if not ok:
                raise ConfigError(what)
        bad = [o for o in self.allowed_origins if o != "*" and not ORIGIN.fullmatch(o)]
        if bad:
            raise ConfigError(f"invalid allowed_origins={bad[0]!r}: give origins like https://app.example.com "
                              "(scheme and host, optional port, no path) or *")
        GenerationConfig(k=self.k, policy=self.policy)  # the same checks as per request
