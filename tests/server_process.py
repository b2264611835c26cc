"""`ryzanstein serve` as a child process on a free loopback port, for the server tests and the load benchmark.

A harness, not part of the installed package: tests/test_server.py and benchmarks/load_test.py import it; and
`ryzanstein serve --replicas N` (a local Ray Serve cluster) for tests/test_cluster.py and
benchmarks/cluster_load.py.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import psutil

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


def wait_until(ready, proc: subprocess.Popen, log, what: str, timeout_s: float, poll_s: float,
               on_poll=lambda: None) -> None:
    """Poll ready() until it holds; a child that exits or stays unready past timeout_s is one error with its log."""
    t0 = time.monotonic()
    while not ready():
        on_poll()
        if proc.poll() is not None or time.monotonic() - t0 > timeout_s:
            why = (f"exited with {proc.returncode}" if proc.returncode is not None
                   else f"not healthy after {timeout_s:g} s")
            log.seek(0)
            raise RyzansteinError(f"{what} {why}:\n{log.read()}")
        time.sleep(poll_s)


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
            wait_until(lambda: healthy(server.url), proc, log, "the server", timeout_s, 0.2)
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


ENGINE_REPLICA = "ServeReplica:ryzanstein:EngineReplica"  # the process title Ray gives an engine replica


class ClusterProcess(ServerProcess):
    """A running `ryzanstein serve --replicas N`: its URL, Ray's metrics URL, and its engine replicas' processes."""

    def __init__(self, url: str, metrics_url: str, pid: int) -> None:
        super().__init__(url, pid)
        self.metrics_url = metrics_url

    def health(self) -> dict:
        with urllib.request.urlopen(self.url + "/health", timeout=10) as r:
            return json.loads(r.read())

    def replica_pids(self) -> list[int]:
        out = []
        for p in psutil.Process(self.pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if ENGINE_REPLICA in " ".join(p.cmdline()):
                    out.append(p.pid)
        return out


def ray_healthy(c: ClusterProcess) -> bool:
    with contextlib.suppress(urllib.error.URLError, OSError, ValueError):
        return c.health()["status"] == "ok"  # 503 (no replica yet) raises HTTPError, an URLError
    return False


@contextlib.contextmanager
def cluster_subprocess(args: list[str], timeout_s: float = 240.0) -> Iterator[ClusterProcess]:
    """Start `ryzanstein serve --replicas ... ARGS` on 127.0.0.1 (a local Ray instance: $RAY_ADDRESS is dropped),
    wait until every replica runs, yield; always stop it with SIGTERM (Serve and Ray shut down), then kill by id
    any process it started that is still there."""
    port, mport = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for name in ("RYZANSTEIN_API_KEY", "RAY_ADDRESS"):
        env.pop(name, None)
    started: set[int] = set()

    def note_children() -> None:
        with contextlib.suppress(psutil.Error):
            started.update(p.pid for p in psutil.Process(proc.pid).children(recursive=True))

    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ryzanstein.cli", "serve", "--host", "127.0.0.1", "--port",
                                 str(port), "--metrics-export-port", str(mport), *args],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
        cluster = ClusterProcess(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{mport}/metrics", proc.pid)
        try:
            wait_until(lambda: ray_healthy(cluster), proc, log, "the cluster", timeout_s, 1.0, note_children)
            yield cluster
        finally:
            note_children()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for pid in started:  # Ray's own processes, should any outlive its shutdown
                with contextlib.suppress(psutil.Error):
                    psutil.Process(pid).kill()
            log.seek(0)
            cluster.output = log.read()
