"""`ryzanstein serve --replicas N`: the cluster application (cluster.py) on a Ray instance started here, or on
the cluster $RAY_ADDRESS names, until SIGINT or SIGTERM; a deployment that fails is one line."""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import sys
import threading

from ..config import LoadConfig
from ..errors import ConfigError, RyzansteinError
from ..machine import usable_cores
from ..models import store
from .cluster import APP, DEFAULT_PARALLEL, LOAD_FAILED, ClusterConfig, application  # says if Ray is missing
from .config import ServerConfig

import ray  # noqa: E402, I001 - the cluster extra, checked by cluster.py's import
from ray import serve  # noqa: E402


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
