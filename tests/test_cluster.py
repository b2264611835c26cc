"""`ryzanstein serve --replicas 2` end to end: a local Ray Serve application of two SmolLM2-135M replicas (1 thread,
2 batch slots each) behind one OpenAI endpoint, driven with the official `openai` client: answers identical to
`ryzanstein serve`'s, a conversation's next turn on its first turn's replica, per-replica metrics on Ray's
port, a replica killed under load costing no request; and the router's prefix table alone."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

pytest.importorskip("ray")
httpx = pytest.importorskip("httpx")
openai = pytest.importorskip("openai")
psutil = pytest.importorskip("psutil")
parser = pytest.importorskip("prometheus_client.parser")

from ryzanstein.errors import RyzansteinError  # noqa: E402
from ryzanstein.server.affinity import PrefixTable  # noqa: E402
from server_process import SRC, cluster_subprocess, free_port  # noqa: E402  (tests/server_process.py)

MODEL = "smollm2-135m"
RECOVERY_S = 60  # a killed replica is RUNNING again within this (measured: see docs/scale-out.md)


# the router's memory, alone -------------------------------------------------------------------------------------
def test_prefix_table_finds_the_previous_turn_and_shares_a_common_prefix():
    t = PrefixTable(block=4)
    system = [1, 2, 3, 4, 5, 6, 7, 8]
    turn1 = system + [20, 21, 22]  # 11 ids: remembered at 4, 8 and 11
    t.record(turn1, "a")
    t.record(system + [30, 31], "b")
    assert t.holders(turn1 + [40, 41, 42, 43, 44], {"a", "b"}) == (11, ["a"])  # the next turn: its replica
    assert t.holders(system + [50], {"a", "b"}) == (8, ["a", "b"])  # the shared prefix: both, least loaded picks
    assert t.holders(system + [50], {"b"}) == (8, ["b"])  # only live replicas count
    assert t.holders([1, 2, 3], {"a", "b"}) == (0, [])  # shorter than a block: no affinity
    assert t.holders([9, 9, 9, 9, 9], {"a", "b"}) == (0, [])
    t.forget("a")
    assert t.holders(turn1, {"a", "b"}) == (8, ["b"])


def test_prefix_table_forgets_the_least_recently_used():
    t = PrefixTable(block=2, max_entries=4)
    t.record([1, 2, 3, 4], "a")  # 2 entries: the prefixes of 2 and of 4 ids
    t.record([5, 6, 7, 8], "b")  # 4
    assert t.holders([1, 2, 3, 4], {"a", "b"}) == (4, ["a"])  # used: now the most recent
    t.record([9, 9, 9, 9], "c")  # 6: the two least recently used go, [1, 2] and [5, 6]
    assert len(t) == 4 and t.holders([5, 6, 0], {"b"}) == (0, []) and t.holders([1, 2, 0], {"a"}) == (0, [])
    assert t.holders([1, 2, 3, 4], {"a"}) == (4, ["a"]) and t.holders([5, 6, 7, 8], {"b"}) == (4, ["b"])


# a running cluster ------------------------------------------------------------------------------------------------
def wait_until(ok, timeout_s: float, what: str, every_s: float = 0.25):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            if (value := ok()):
                return value
        time.sleep(every_s)
    pytest.fail(f"{what}: not within {timeout_s:g} s")


@pytest.fixture(scope="module")
def cluster():
    try:
        with cluster_subprocess(["--replicas", "2", "--threads", "1", "--parallel", "2", "--max-queue", "16",
                                 "--model", MODEL, "--draft", "ngram", "--ctx-size", "1024"]) as c:
            yield c
    except RyzansteinError as e:  # it did not start: its output is in the message
        pytest.fail(str(e))
    assert "Traceback" not in c.output, c.output


@pytest.fixture(scope="module")
def client(cluster):
    return openai.OpenAI(base_url=cluster.url + "/v1", api_key="none", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def reference():
    """`ryzanstein serve`'s app (one engine, the same settings) in this process, behind the same client."""
    from starlette.testclient import TestClient

    from ryzanstein import Engine, LoadConfig
    from ryzanstein.server.app import create_app
    from ryzanstein.server.config import ServerConfig

    engine = Engine(LoadConfig(model=MODEL, draft="ngram", threads=1, ctx_size=1024))
    with TestClient(create_app(engine, ServerConfig(parallel=2))) as http:
        yield openai.OpenAI(base_url="http://testserver/v1", api_key="none", http_client=http, max_retries=0)
    engine.close()


def ask(client, kind: str, text: str, stream: bool = False, max_tokens: int = 16, **kw) -> tuple[str, dict]:
    """(answer, its "ryzanstein" field) of one greedy request: kind is "chat" or "text"."""
    if kind == "chat":
        msgs = text if isinstance(text, list) else [{"role": "user", "content": text}]
        r = client.chat.completions.create(model=MODEL, messages=msgs, max_tokens=max_tokens, temperature=0,
                                           stream=stream, **kw)
    else:
        r = client.completions.create(model=MODEL, prompt=text, max_tokens=max_tokens, temperature=0, stream=stream,
                                      **kw)
    if not stream:
        c = r.choices[0]
        return (c.message.content if kind == "chat" else c.text), r.model_extra["ryzanstein"]
    out, extra = "", {}
    for ch in r:
        if ch.choices:
            out += (ch.choices[0].delta.content or "") if kind == "chat" else ch.choices[0].text
        extra = (ch.model_extra or {}).get("ryzanstein", extra)
    return out, extra


REQUESTS = [("chat", "Name three colors.", False), ("text", "The capital of France is", False),
            ("chat", "Write one sentence about the sea.", True), ("text", "def add(a, b):\n", True),
            ("chat", "What is 2 + 2?", False), ("text", "Once upon a time", False),
            ("chat", "Say hello in French.", True), ("text", "SELECT name FROM users WHERE", False)]


def test_concurrent_requests_get_what_ryzanstein_serve_answers(cluster, client, reference):
    expected = [ask(reference, kind, text)[0] for kind, text, _ in REQUESTS]
    with ThreadPoolExecutor(len(REQUESTS)) as pool:
        got = list(pool.map(lambda r: ask(client, *r), REQUESTS, timeout=180))
    assert [text for text, _ in got] == expected
    assert len({extra["replica"] for _, extra in got}) == 2  # both replicas served
    assert cluster.health()["replicas"]["RUNNING"] == 2


def test_a_second_turn_lands_on_the_first_turns_replica(client):
    """First turns at once (spread by load), then each second turn: on its first turn's replica, which has a
    slot free for it (under load a turn may go elsewhere rather than queue: benchmarks/cluster_load.py)."""
    firsts = [f"Tell me one fact about the number {n}." for n in (3, 7, 12, 40)]
    with ThreadPoolExecutor(len(firsts)) as pool:
        turn1 = list(pool.map(lambda q: ask(client, "chat", q), firsts, timeout=180))
    convs = [[{"role": "user", "content": q}, {"role": "assistant", "content": a},
              {"role": "user", "content": "And one more?"}] for q, (a, _) in zip(firsts, turn1)]
    turn2 = [ask(client, "chat", m) for m in convs]
    assert [e["replica"] for _, e in turn2] == [e["replica"] for _, e in turn1]


def samples(text: str) -> dict:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in parser.text_string_to_metric_families(text) for s in fam.samples}


def test_metrics_summed_at_the_ingress_and_per_replica_on_rays_port(cluster, client):
    ask(client, "text", "Count: one, two, three, four,", max_tokens=8)
    m = samples(httpx.get(cluster.url + "/metrics", timeout=10).text)
    assert m[("ryzanstein_cluster_replicas", (("state", "RUNNING"),))] == 2
    assert m[("ryzanstein_completion_tokens_total", ())] > 0 and m[("ryzanstein_spec_rounds_total", ())] > 0
    assert m[("ryzanstein_slots", ())] == 4 and not any(n.startswith("ryzanstein_kv_cache") for n, _ in m)

    def per_replica():  # Ray exports every few seconds
        ray_m = samples(httpx.get(cluster.metrics_url, timeout=10).text)
        running = {dict(k).get("replica") for (n, k) in ray_m if n.endswith("ryzanstein_requests_running")}
        rounds = sum(v for (n, _), v in ray_m.items() if "ryzanstein_spec_rounds" in n)
        kv = [n for n, _ in ray_m if n.endswith("ryzanstein_kv_cache_usage_ratio")]
        return len(running - {None}) == 2 and rounds > 0 and kv
    wait_until(per_replica, 60, "per-replica gauges and counters on Ray's metrics port", every_s=2.0)


def test_a_killed_replica_costs_no_request(cluster, client, reference):
    """30 requests (4 of them streamed) and one replica's process killed while they run: every request answered
    once with its answer, the replica back within RECOVERY_S, /health and /metrics showing it."""
    prompts = [f"Write a short line about the number {i}." for i in range(10)]
    expected = {p: ask(reference, "chat", p, max_tokens=24)[0] for p in prompts}
    load = [(prompts[i % 10], i < 4) for i in range(30)]
    answers: dict[str, list] = {}
    retries0 = samples(httpx.get(cluster.url + "/metrics").text).get(("ryzanstein_cluster_retries_total", ()), 0)

    def one(job):
        prompt, stream = job
        rid = uuid.uuid4().hex
        try:
            text, _ = ask(client, "chat", prompt, stream=stream, max_tokens=24, extra_headers={"X-Request-Id": rid})
        except openai.APIError as e:  # only a stream the client had begun to read may end so
            text = e
        answers.setdefault(rid, []).append(text)
        return prompt, stream, text

    seen = []
    with ThreadPoolExecutor(len(load)) as pool:
        futures = [pool.submit(one, job) for job in load]
        wait_until(lambda: cluster.health()["running"] >= 2, 30, "no request started")
        victim = cluster.replica_pids()[0]
        os.kill(victim, signal.SIGKILL)
        t_kill = time.monotonic()

        def watch():  # /health while the replica is gone
            for _ in range(40):
                with contextlib.suppress(httpx.HTTPError):
                    seen.append(cluster.health()["status"])
                time.sleep(0.25)
        watcher = threading.Thread(target=watch)
        watcher.start()
        results = [f.result(timeout=300) for f in futures]
        watcher.join()
    for prompt, stream, text in results:
        if isinstance(text, Exception):
            assert stream and "replica" in str(text), text
        else:
            assert text == expected[prompt]
    assert sum(isinstance(t, Exception) for _, _, t in results) <= 4
    assert len(answers) == 30 and all(len(a) == 1 for a in answers.values())  # none answered twice
    assert "degraded" in seen
    wait_until(lambda: cluster.health()["replicas"].get("RUNNING") == 2, RECOVERY_S - (time.monotonic() - t_kill),
               "the killed replica was not replaced")
    assert victim not in cluster.replica_pids() and len(cluster.replica_pids()) == 2
    m = samples(httpx.get(cluster.url + "/metrics").text)
    assert m[("ryzanstein_cluster_retries_total", ())] > retries0
    assert ask(client, "chat", prompts[0], max_tokens=24)[0] == expected[prompts[0]]


def test_a_model_that_cannot_load_is_one_error(tmp_path, smol_gguf):
    bad = tmp_path / "broken.gguf"  # the first 64 KiB of a real model: a file cut short
    with open(smol_gguf, "rb") as f:
        bad.write_bytes(f.read(1 << 16))
    port, mport = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("RAY_ADDRESS", None)
    p = subprocess.run([sys.executable, "-m", "ryzanstein.cli", "serve", "--replicas", "1", "--threads", "1",
                        "--model", str(bad), "--port", str(port), "--metrics-export-port", str(mport)],
                       capture_output=True, text=True, env=env, timeout=180)
    assert p.returncode == 2, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error: a replica cannot load its model:") and "broken.gguf" in last, p.stderr
    assert "Traceback" not in p.stderr and p.stderr.count("cannot load") == 1, p.stderr


def test_without_the_cluster_extra_replicas_is_one_line():
    code = ("import sys\n"
            "class NoRay:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'ray':\n"
            "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
            "sys.meta_path.insert(0, NoRay())\n"
            "from ryzanstein.cli.main import main\n"
            "sys.exit(main(sys.argv[1:]))\n")
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    p = subprocess.run([sys.executable, "-c", code, "serve", "--replicas", "2", "--port", str(free_port())],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2 and p.stderr.strip() == ("error: serving on Ray (ryzanstein serve --replicas) needs the "
                                                      "cluster extra: pip install 'ryzanstein[cluster]'"), p.stderr
