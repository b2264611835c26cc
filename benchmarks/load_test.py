"""Bounded load run against `ryzanstein serve` on loopback only: N requests from C concurrent clients.

Requests alternate completions / chat and non-streaming / streaming over a few prose and code prompts, greedy,
short max_tokens. Reports counts by status (anything but 200 and a deliberate 429 is an error), latency
p50/p95/p99 of successful requests, time to first token of streamed ones, throughput, and the server's own
acceptance figures from /metrics, as JSON on stdout (and --out FILE). Exit status 1 when any request erred.

    .venv/bin/python benchmarks/load_test.py --start-server --requests 200 --concurrency 8 --out load.json
    .venv/bin/python benchmarks/load_test.py --url http://127.0.0.1:8000 --api-key KEY

--sweep 1,2,4,8,16 measures continuous batching instead: for each server (`--parallel` N, and with
--baseline-parallel B a second server with B slots, one after the other in the same run), the distinct
requests are first served one at a time (the reference answers), then each concurrency level sends
--per-client requests per client, all streamed: throughput, time to first token and per-token latency p50/p95,
and the share of answers identical to the reference (text and token count).

    .venv/bin/python benchmarks/load_test.py --start-server --model qwen2.5-coder-1.5b --draft ngram \
        --threads 2 --parallel 8 --baseline-parallel 1 --sweep 1,2,4,8,16 --max-tokens 96 --out sweep.json
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout, installed or not
sys.path.insert(0, str(ROOT / "tests"))  # the server harness the tests use too
from ryzanstein.errors import RyzansteinError  # noqa: E402
from ryzanstein.speculative.stats import mean_acceptance_length  # noqa: E402
from server_process import ServerProcess, serve_subprocess  # noqa: E402

LOOPBACK = ("127.0.0.1", "localhost", "::1")
PROMPTS = [
    "Explain in two sentences why the sky is blue.",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n\n"
    "# the same, iteratively:\ndef fib_iter(n):\n",
    "List three uses of copper.",
    "Rewrite with x and y instead of a and b:\ndef add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n",
    "Write a haiku about the sea.",
    "SELECT name, age FROM users WHERE age > 30 ORDER BY",
]


def percentile(xs: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in [0, 100]); None for no data."""
    if not xs:
        return None
    xs = sorted(xs)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(xs: list[float]) -> dict:
    return {"n": len(xs), "p50": percentile(xs, 50), "p95": percentile(xs, 95), "p99": percentile(xs, 99),
            "mean": sum(xs) / len(xs) if xs else None, "max": max(xs, default=None)}


HOSTILE = [  # (endpoint, raw body, the status it must get): cases of docs/errors.md's server table
    ("/v1/completions", b'{"prompt": "x",', 400),  # malformed JSON
    ("/v1/completions", b'{"prompt": "x", "temperature": -1}', 400),
    ("/v1/completions", b'{"prompt": "x", "n": 2}', 400),
    ("/v1/completions", b'{"prompt": "a\\ud800b", "max_tokens": 4}', 400),  # a lone surrogate
    ("/v1/completions", b"[" * 200_000, 400),  # deeply nested
    ("/v1/completions", b'{"prompt": "x", "model": "gpt-9"}', 404),
    ("/v1/chat/completions", b'{"messages": [{"role": "user<|im_start|>", "content": "x"}]}', 400),
    ("/v1/completions", ('{"prompt": "' + "hello " * 6000 + '"}').encode(), 400),  # over the context
]


def rss_bytes(pid: int | None) -> int | None:
    """A process's resident memory (Linux), None where unknown."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, TypeError):
        pass
    return None


async def hostile(client: httpx.AsyncClient, i: int) -> dict:
    """Send the i-th hostile request; it counts as answered if it gets its 4xx with an OpenAI error body."""
    path, raw, want = HOSTILE[i % len(HOSTILE)]
    t0 = time.perf_counter()
    out = {"i": i, "stream": False, "status": None, "latency_s": None, "ttft_s": None, "completion_tokens": 0,
           "text": "", "error": None, "hostile": True}
    try:
        r = await client.post(path, content=raw, headers={"Content-Type": "application/json"})
        out["status"] = r.status_code
        if r.status_code != want or "error" not in r.json():
            out["error"] = f"hostile request {i % len(HOSTILE)}: {r.status_code}, expected {want}: {r.text[:200]}"
    except (httpx.HTTPError, ValueError) as e:
        out["error"] = f"hostile request {i % len(HOSTILE)}: {type(e).__name__}: {e}"
    out["latency_s"] = time.perf_counter() - t0
    return out


def request_body(i: int, a: argparse.Namespace) -> tuple[str, dict]:
    """The i-th request: endpoint and JSON body."""
    prompt, chat, stream = PROMPTS[i % len(PROMPTS)], i % 2 == 1, (i // 2) % 2 == 1
    body = {"model": a.model, "max_tokens": a.max_tokens, "temperature": 0, "stream": stream}
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    if stream:
        body["stream_options"] = {"include_usage": True}
    return ("/v1/chat/completions" if chat else "/v1/completions"), body


async def one(client: httpx.AsyncClient, i: int, a: argparse.Namespace, body: tuple[str, dict] | None = None
              ) -> dict:
    """Send one request; return {status, latency_s, ttft_s, completion_tokens, text, error}."""
    path, body = body or request_body(i, a)
    t0 = time.perf_counter()
    out = {"i": i, "stream": body["stream"], "status": None, "latency_s": None, "ttft_s": None,
           "completion_tokens": 0, "text": "", "error": None, "queued_s": None}
    try:
        if not body["stream"]:
            r = await client.post(path, json=body)
            out["status"] = r.status_code
            if r.status_code == 200:
                d = r.json()
                out["completion_tokens"] = d["usage"]["completion_tokens"]
                out["queued_s"] = (d.get("ryzanstein") or {}).get("queued_s")  # ours only
                if not d.get("choices"):
                    out["error"] = "no choices"
                else:
                    c = d["choices"][0]
                    out["text"] = c.get("text") or (c.get("message") or {}).get("content") or ""
            elif r.status_code != 429:
                out["error"] = r.text[:300]
        else:
            async with client.stream("POST", path, json=body) as r:
                out["status"] = r.status_code
                if r.status_code != 200:
                    out["error"] = None if r.status_code == 429 else (await r.aread()).decode()[:300]
                else:
                    done = False
                    async for line in r.aiter_lines():
                        if not line.startswith("data: "):
                            continue
                        data = line[6:]
                        if data == "[DONE]":
                            done = True
                            break
                        d = json.loads(data)
                        if "error" in d:
                            out["error"] = d["error"]["message"]
                        piece = "".join((c.get("text") or c.get("delta", {}).get("content") or "")
                                        for c in d.get("choices", []))
                        if out["ttft_s"] is None and piece:
                            out["ttft_s"] = time.perf_counter() - t0
                        out["text"] += piece
                        if d.get("usage"):
                            out["completion_tokens"] = d["usage"]["completion_tokens"]
                        if (d.get("ryzanstein") or {}).get("queued_s") is not None:  # the last chunk's, ours only
                            out["queued_s"] = d["ryzanstein"]["queued_s"]
                    if not done and out["error"] is None:
                        out["error"] = "stream ended without [DONE]"
    except httpx.HTTPError as e:
        out["error"] = f"{type(e).__name__}: {e}"
    out["latency_s"] = time.perf_counter() - t0
    return out


async def run(url: str, a: argparse.Namespace) -> tuple[list[dict], float, dict]:
    """Warm up, then the timed run; returns results, wall seconds, and the server's counters before it."""
    headers = {"Authorization": f"Bearer {a.api_key}"} if a.api_key else {}
    limits = httpx.Limits(max_connections=a.concurrency, max_keepalive_connections=a.concurrency)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=a.timeout, limits=limits) as client:
        for i in range(a.warmup):
            await one(client, i, a)
        before = await asyncio.to_thread(server_metrics, url)
        todo: asyncio.Queue[int] = asyncio.Queue()
        for i in range(a.requests):
            todo.put_nowait(i)
        results: list[dict] = []

        async def worker() -> None:  # a client: one request at a time, back to back
            while not todo.empty():
                i = todo.get_nowait()
                bad = a.hostile and i % a.hostile == a.hostile - 1
                results.append(await (hostile(client, i // a.hostile) if bad else one(client, i, a)))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(a.concurrency)))
        return results, time.perf_counter() - t0, before


def server_metrics(url: str) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics", timeout=10).text
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if not s.labels:
                out[s.name] = s.value
    return out


def spec_figures(before: dict, after: dict) -> dict:
    """Acceptance rate and mean acceptance length over the run, from the server's counters."""
    def d(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    drafted, accepted, rounds = (d(f"ryzanstein_spec_{x}_total") for x in ("draft_tokens", "accepted_tokens", "rounds"))
    n_ttft = d("ryzanstein_time_to_first_token_seconds_count")
    return {"rounds": rounds, "num_draft_tokens": drafted, "num_accepted": accepted,
            "acceptance_rate": accepted / drafted if drafted else 0.0,
            "mean_acceptance_length": mean_acceptance_length(accepted, rounds) or 0.0,
            "engine_ttft_mean_s": d("ryzanstein_time_to_first_token_seconds_sum") / n_ttft if n_ttft else None,
            "completion_tokens": d("ryzanstein_completion_tokens_total")}


def started_server(a: argparse.Namespace, parallel: int | None = None):
    """`ryzanstein serve` on a free loopback port for the duration of the run; always stopped."""
    args = ["--model", a.model, "--draft", a.draft, "--max-queue", str(a.max_queue)]
    if parallel or a.parallel:
        args += ["--parallel", str(parallel or a.parallel)]
    if a.threads:
        args += ["--threads", str(a.threads)]
    if a.api_key:
        args += ["--api-key", a.api_key]
    return serve_subprocess(args + shlex.split(a.serve_args), a.start_timeout)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000", help="a running server (loopback only)")
    p.add_argument("--start-server", action="store_true", help="start `ryzanstein serve` for the run, then stop it")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--draft", default="ngram", help="with --start-server")
    p.add_argument("--threads", type=int, default=None, help="with --start-server")
    p.add_argument("--max-queue", type=int, default=16, help="with --start-server")
    p.add_argument("--serve-args", default="", help="with --start-server: more flags for our server, e.g. "
                   "'--prefill-chunk 64'")
    p.add_argument("--start-timeout", type=float, default=300.0)
    p.add_argument("--api-key", default=os.environ.get("RYZANSTEIN_API_KEY"))
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--warmup", type=int, default=1, help="untimed requests first")
    p.add_argument("--timeout", type=float, default=300.0, help="client timeout per request, seconds")
    p.add_argument("--out", default=None, help="also write the JSON report here")
    p.add_argument("--hostile", type=int, default=0, metavar="EVERY",
                   help="make every EVERY-th request a bad one (malformed, invalid, over the context, ...) that must "
                        "get its 4xx; reported apart")
    p.add_argument("--parallel", type=int, default=None, help="with --start-server: the server's --parallel")
    p.add_argument("--sweep", default=None, help="concurrency levels, e.g. 1,2,4,8,16 (with --start-server)")
    p.add_argument("--baseline-parallel", type=int, default=None,
                   help="with --sweep: run the sweep again on a server with this many slots, after the first")
    p.add_argument("--per-client", type=int, default=3, help="with --sweep: requests per client per level")
    p.add_argument("--llama-server", default=None, metavar="BIN",
                   help="with --sweep: also sweep llama.cpp's own server (this binary, built from source) on the "
                        "same model file, with -np set to --parallel and -t to --threads")
    return p


@contextlib.contextmanager
def llama_server(a: argparse.Namespace):
    """llama.cpp's server on the same GGUF, parallel slots with a unified KV cache, on a free loopback port."""
    import subprocess
    import tempfile

    from ryzanstein.models import store
    from server_process import free_port, healthy

    path = store.path_of(a.model) or Path(a.model)
    port = free_port()
    cmd = [a.llama_server, "-m", str(path), "-t", str(a.threads or 2), "-np", str(a.parallel or 8), "-kvu", "-cb",
           "--cache-ram", "0", "-c", "8192", "--host", "127.0.0.1", "--port", str(port)]
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        try:
            url, t0 = f"http://127.0.0.1:{port}", time.monotonic()
            while not healthy(url):
                if proc.poll() is not None or time.monotonic() - t0 > a.start_timeout:
                    log.seek(0)
                    raise RyzansteinError(f"llama-server did not start: {log.read()[-2000:]}")
                time.sleep(0.5)
            yield ServerProcess(url)
        finally:
            proc.terminate()
            proc.wait(15)


SWEEP_PROMPTS = [  # chat requests for the sweep (not the bench prompts)
    "Explain in three sentences how a hash map handles collisions.",
    "Write a Python function that checks whether a string is a palindrome, with a docstring.",
    "What are the main differences between a process and a thread?",
    "Give me a short packing list for a weekend hiking trip.",
    "Summarize the plot of Romeo and Juliet in four sentences.",
    "Write a SQL query that returns the ten customers with the highest total order amount.",
    "Why does ice float on water? Answer briefly.",
    "Suggest three names for a bakery that specializes in sourdough bread.",
]


def sweep_body(i: int, a: argparse.Namespace) -> tuple[str, dict]:
    prompt = SWEEP_PROMPTS[i % len(SWEEP_PROMPTS)]
    return "/v1/chat/completions", {"model": a.model, "max_tokens": a.max_tokens, "temperature": 0, "stream": True,
                                    "messages": [{"role": "user", "content": prompt}],
                                    "stream_options": {"include_usage": True}}


async def sweep_level(url: str, a: argparse.Namespace, clients: int, n: int) -> tuple[list[dict], float]:
    headers = {"Authorization": f"Bearer {a.api_key}"} if a.api_key else {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=a.timeout, limits=limits) as client:
        todo: asyncio.Queue[int] = asyncio.Queue()
        for i in range(n):
            todo.put_nowait(i)
        results: list[dict] = []

        async def worker() -> None:
            while not todo.empty():
                i = todo.get_nowait()
                results.append(await one(client, i, a, sweep_body(i, a)))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        return results, time.perf_counter() - t0


def level_report(results: list[dict], wall_s: float, reference: dict[int, tuple[str, int]]) -> dict:
    ok = [r for r in results if r["status"] == 200 and r["error"] is None]
    tokens = sum(r["completion_tokens"] for r in ok)
    per_token = [(r["latency_s"] - r["ttft_s"]) / (r["completion_tokens"] - 1)
                 for r in ok if r["ttft_s"] is not None and r["completion_tokens"] > 1]
    same = [reference.get(r["i"] % len(SWEEP_PROMPTS)) == (r["text"], r["completion_tokens"]) for r in ok]
    # what of a TTFT the queue explains: the server's queued_s (arrival -> the prompt's first rows in a forward)
    after_queue = [r["ttft_s"] - r["queued_s"] for r in ok if r["ttft_s"] is not None and r["queued_s"] is not None]
    return {"requests": len(results), "ok": len(ok), "errors": len(results) - len(ok), "wall_s": wall_s,
            "completion_tokens": tokens, "completion_tokens_per_s": tokens / wall_s,
            "ttft_s": summary([r["ttft_s"] for r in ok if r["ttft_s"] is not None]),
            "queued_s": summary([r["queued_s"] for r in ok if r["queued_s"] is not None]),
            "ttft_after_queue_s": summary(after_queue),
            "per_token_latency_s": summary(per_token),
            "identical_to_alone": sum(same) / len(same) if same else None}


def run_sweep(a: argparse.Namespace, levels: list[int]) -> dict:
    out = {"date": time.strftime("%Y-%m-%d"), "model": a.model, "draft": a.draft, "threads": a.threads,
           "max_tokens": a.max_tokens, "per_client": a.per_client, "levels": levels, "serve_args": a.serve_args,
           "argv": sys.argv[1:], "servers": {}}
    runs = [("ours", a.parallel or 0)] + ([("ours", a.baseline_parallel)] if a.baseline_parallel else [])
    runs += [("llama.cpp", a.parallel or 8)] if a.llama_server else []
    for kind, parallel in runs:
        with (started_server(a, parallel or None) if kind == "ours" else llama_server(a)) as srv:
            # the reference: each distinct request alone
            ref_results, _ = asyncio.run(sweep_level(srv.url, a, 1, len(SWEEP_PROMPTS)))
            reference = {r["i"]: (r["text"], r["completion_tokens"]) for r in ref_results}
            slots = httpx.get(srv.url + "/health", timeout=10).json().get("slots", parallel)
            name = f"parallel_{slots}" if kind == "ours" else f"llama_server_np{parallel}"
            rows = {}
            for c in levels:
                results, wall = asyncio.run(sweep_level(srv.url, a, c, c * a.per_client))
                rows[str(c)] = level_report(results, wall, reference)
                print(f"{name}, {c} clients: {rows[str(c)]['completion_tokens_per_s']:.1f} tokens/s, "
                      f"identical {rows[str(c)]['identical_to_alone']}", file=sys.stderr, flush=True)
            out["servers"][name] = rows
    names = list(out["servers"])
    first = out["servers"][names[0]]
    out["throughput_ratio"] = {  # the first server's throughput over each other's, per level
        f"{names[0]}/{n}": {c: first[c]["completion_tokens_per_s"] / other[c]["completion_tokens_per_s"]
                            for c in first if c in other}
        for n, other in ((n, out["servers"][n]) for n in names[1:])}
    return out


def main(argv: list[str] | None = None) -> int:
    p = parser()
    a = p.parse_args(argv)
    if not (1 <= a.requests <= 10_000 and 1 <= a.concurrency <= 64 and 1 <= a.max_tokens <= 512):
        p.error("bounded runs only: --requests in [1, 10000], --concurrency in [1, 64], --max-tokens in [1, 512]")
    if not a.start_server and urlparse(a.url).hostname not in LOOPBACK:
        p.error(f"--url must be on loopback ({', '.join(LOOPBACK)}): this tool loads only a local server")
    if a.sweep:
        try:
            levels = [int(x) for x in a.sweep.split(",")]
        except ValueError:
            p.error(f"--sweep {a.sweep!r}: give concurrency levels like 1,2,4,8,16")
        if not a.start_server or not all(1 <= c <= 64 for c in levels):
            p.error("--sweep needs --start-server and levels in [1, 64]")
        try:
            report = run_sweep(a, levels)
        except RyzansteinError as e:
            raise SystemExit(f"error: {e}")
        text = json.dumps(report, indent=2)
        print(text)
        if a.out:
            Path(a.out).write_text(text + "\n")
        return 0 if all(r["errors"] == 0 for s in report["servers"].values() for r in s.values()) else 1

    server = started_server(a) if a.start_server else contextlib.nullcontext(ServerProcess(a.url.rstrip("/")))
    try:
        with server as srv:
            url = srv.url
            try:
                httpx.get(url + "/health", timeout=10).raise_for_status()
            except httpx.HTTPError as e:
                raise SystemExit(f"error: no healthy server at {url} ({e}): start one, or pass --start-server")
            rss0 = rss_bytes(srv.pid)
            results, wall_s, before = asyncio.run(run(url, a))
            after = server_metrics(url)
            rss1 = rss_bytes(srv.pid)
    except RyzansteinError as e:  # --start-server: it did not start; the message holds its output
        raise SystemExit(f"error: {e}")

    by_status: dict[str, int] = {}
    for r in results:
        key = str(r["status"]) if r["status"] is not None else "no response"
        by_status[key] = by_status.get(key, 0) + 1
    bad = [r for r in results if r.get("hostile")]
    results = [r for r in results if not r.get("hostile")]
    ok = [r for r in results if r["status"] == 200 and r["error"] is None]
    errors = [r for r in results + bad if r["error"] is not None]
    tokens = sum(r["completion_tokens"] for r in ok)
    report = {
        "hostile": {"sent": len(bad), "answered_as_expected": sum(r["error"] is None for r in bad)},
        "server_rss_mb": {"before": rss0 and rss0 / 2**20, "after": rss1 and rss1 / 2**20},
        "url": url, "requests": a.requests, "concurrency": a.concurrency, "max_tokens": a.max_tokens,
        "model": a.model, "draft": a.draft if a.start_server else None,
        "counts_by_status": by_status, "ok": len(ok), "rejected_429": by_status.get("429", 0),
        "errors": len(errors),  # anything but a complete 200 or a 429 (an error event inside a stream included)
        "error_samples": [{k: r[k] for k in ("i", "status", "error")} for r in errors[:5]],
        "latency_s": summary([r["latency_s"] for r in ok]),
        "ttft_s_streamed": summary([r["ttft_s"] for r in ok if r["ttft_s"] is not None]),
        "wall_s": wall_s, "requests_per_s": len(ok) / wall_s, "completion_tokens": tokens,
        "completion_tokens_per_s": tokens / wall_s,
        "server": spec_figures(before, after),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
