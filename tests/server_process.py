"""`ryzanstein serve` as a child process on a free loopback port, for the server tests and the load benchmark.

A harness, not part of the installed package: tests/test_server.py and benchmarks/load_test.py import it.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

from ryzanstein.errors import RyzansteinError

SRC = str(Path(__file__).resolve().parent.parent / "src")  # so the child imports this very package, installed or not


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(url: str) -> bool:
    with contextlib.suppress(urllib.error.URLError, OSError):
        with urllib.request.urlopen(url + "/health", timeout=1) as r:
            return r.status == 200
    return False


class ServerProcess:
    """The running child: its base URL; `output` holds everything it printed once it has stopped."""

    def __init__(self, url: str, pid: int | None = None) -> None:
        self.url, self.output, self.pid = url, "", pid


@contextlib.contextmanager
def serve_subprocess(args: list[str], timeout_s: float = 120.0) -> Iterator[ServerProcess]:
    """Start `ryzanstein serve ARGS` on 127.0.0.1, wait until /health answers, yield; always stop it.

    The child gets no RYZANSTEIN_API_KEY from this environment: pass --api-key in ARGS when one is wanted.
    """
    port = free_port()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("RYZANSTEIN_API_KEY", None)
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ryzanstein.cli", "serve", "--host", "127.0.0.1",
                                 "--port", str(port), *args], stdout=log, stderr=subprocess.STDOUT, env=env)
        server = ServerProcess(f"http://127.0.0.1:{port}", proc.pid)
        try:
            t0 = time.monotonic()
            while not healthy(server.url):
                if proc.poll() is not None or time.monotonic() - t0 > timeout_s:
                    why = (f"exited with {proc.returncode}" if proc.returncode is not None
                           else f"not healthy after {timeout_s:g} s")
                    log.seek(0)
                    raise RyzansteinError(f"the server {why}:\n{log.read()}")
                time.sleep(0.2)
            yield server
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.seek(0)
            server.output = log.read()
