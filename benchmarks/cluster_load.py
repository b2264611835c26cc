"""Engine replicas on Ray Serve (`ryzanstein serve --replicas`, server/cluster.py) under load, on loopback; one JSON.

- kill: --kill-requests N chat requests (greedy, not streamed) from --concurrency C clients against 2 replicas;
  one replica's process is killed (SIGKILL) once both hold requests. Reported: answered (200 with the answer
  the prompt gets alone), request ids answered more than once, the ingress's count of 200s and of retries,
  and the recovery time (kill -> /health shows both replicas RUNNING again).
- affinity: --conversations M two-turn chats, C at a time, streamed: the share of second turns served by their
  first turn's replica, time to first token (client side, and the engine's own) of first and second turns,
  and the prompt tokens the replica's KV cache already held. affinity_off: the same against a cluster started
  with --no-prefix-affinity (every request to the least loaded replica), side by side.
- throughput: the same --throughput-requests chat requests at concurrency C, against 2 replicas x 1 thread and
  against one `ryzanstein serve` of 2 threads (and, with --ray-1x2, 1 replica x 2 threads on Ray): completion
  tokens/s side by side, --parallel slots per replica x replicas kept equal, and the CPU seconds each process
  (by name: Ray's processes, the engines, this client) used during the run.

Servers run one after the other. Output: JSON on stdout and --out FILE.

    .venv/bin/python benchmarks/cluster_load.py --out cluster_load.json
    .venv/bin/python benchmarks/cluster_load.py --kill-requests 8 --conversations 4 --throughput-requests 4 \
        --max-tokens 8 --concurrency 4        # a smoke run (~3 min)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # run from a checkout, installed or not
sys.path.insert(0, str(ROOT / "tests"))  # the server harness the tests use too
sys.path.insert(0, str(ROOT / "benchmarks"))
from load_test import summary  # noqa: E402
from server_process import cluster_subprocess, serve_subprocess  # noqa: E402

TOPICS = ["the sea", "copper", "volcanoes", "the moon", "bread", "rivers", "chess", "owls", "glass", "trains",
          "maps", "tea", "bees", "snow", "clocks", "salt"]
FOLLOW_UP = "Say that again in other words, and add one more detail."


def prompt(i: int) -> str:
    return f"Write two sentences about {TOPICS[i % len(TOPICS)]} (note {i // len(TOPICS)})."


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples with these labels in the server's /metrics (0 if absent)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


async def chat(client: httpx.AsyncClient, messages: list[dict], a: argparse.Namespace, stream: bool = False) -> dict:
    """One greedy chat request: its status, text, time to first content (streamed), wall time, ryzanstein field."""
    rid, t0 = uuid.uuid4().hex, time.monotonic()
    body = {"model": a.model, "messages": messages, "max_tokens": a.max_tokens, "temperature": 0, "stream": stream,
            **({"stream_options": {"include_usage": True}} if stream else {})}
    out = {"request_id": rid, "status": None, "text": "", "ttft_s": None, "extra": {}, "tokens": 0,
           "prompt_tokens": 0}
    try:
        if not stream:
            r = await client.post("/v1/chat/completions", json=body, headers={"X-Request-Id": rid})
            out["status"] = r.status_code
            if r.status_code == 200:
                d = r.json()
                out.update(text=d["choices"][0]["message"]["content"], extra=d.get("ryzanstein", {}),
                           tokens=d["usage"]["completion_tokens"], prompt_tokens=d["usage"]["prompt_tokens"])
        else:
            async with client.stream("POST", "/v1/chat/completions", json=body, headers={"X-Request-Id": rid}) as r:
                out["status"] = r.status_code
                async for line in r.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    d = json.loads(line[6:])
                    if "error" in d:
                        out["status"] = d["error"].get("code") or "error"
                        continue
                    piece = d["choices"][0]["delta"].get("content") if d.get("choices") else None
                    if piece:
                        out["ttft_s"] = out["ttft_s"] or time.monotonic() - t0
                        out["text"] += piece
                    if "ryzanstein" in d:
                        out["extra"] = d["ryzanstein"]
                    if d.get("usage"):
                        out.update(tokens=d["usage"]["completion_tokens"], prompt_tokens=d["usage"]["prompt_tokens"])
    except httpx.HTTPError as e:
        out["status"] = type(e).__name__
    out["wall_s"] = time.monotonic() - t0
    return out


async def gather_limited(n: int, coros) -> list:
    sem = asyncio.Semaphore(n)

    async def one(c):
        async with sem:
            return await c
    return await asyncio.gather(*(one(c) for c in coros))


def client_for(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=256))


async def kill_run(c, a: argparse.Namespace) -> dict:
    distinct = [prompt(i) for i in range(min(a.kill_requests, len(TOPICS)))]
    async with client_for(c.url) as client:
        reference = {p: (await chat(client, [{"role": "user", "content": p}], a))["text"] for p in distinct}
        ok0 = metric(c.url, "ryzanstein_requests_total", endpoint="/v1/chat/completions", status="200")
        retries0 = metric(c.url, "ryzanstein_cluster_retries_total")
        jobs = [distinct[i % len(distinct)] for i in range(a.kill_requests)]
        t0 = time.monotonic()
        load = asyncio.ensure_future(gather_limited(a.concurrency, (chat(client, [{"role": "user", "content": p}], a)
                                                                     for p in jobs)))
        while (await asyncio.to_thread(c.health))["running"] < 2 and not load.done():
            await asyncio.sleep(0.1)
        victim = c.replica_pids()[0]
        os.kill(victim, signal.SIGKILL)
        t_kill, unhealthy_at, recovered_at = time.monotonic(), None, None
        while recovered_at is None and time.monotonic() - t_kill < a.recovery_timeout:
            h = await asyncio.to_thread(c.health)
            if h["status"] != "ok" and unhealthy_at is None:
                unhealthy_at = time.monotonic()
            if unhealthy_at is not None and h["replicas"].get("RUNNING") == 2:
                recovered_at = time.monotonic()
            await asyncio.sleep(0.2)
        results = await load
    seen: dict[str, int] = {}
    for r in results:
        seen[r["request_id"]] = seen.get(r["request_id"], 0) + 1
    right = sum(r["status"] == 200 and r["text"] == reference[p] for r, p in zip(results, jobs))
    return {"requests": len(jobs), "answered": right, "errors": [r["status"] for r in results if r["status"] != 200],
            "wrong_answers": sum(r["status"] == 200 and r["text"] != reference[p] for r, p in zip(results, jobs)),
            "answered_twice": sum(n > 1 for n in seen.values()),
            "ingress_200s": metric(c.url, "ryzanstein_requests_total", endpoint="/v1/chat/completions",
                                   status="200") - ok0,
            "retries": metric(c.url, "ryzanstein_cluster_retries_total") - retries0,
            "killed_after_s": t_kill - t0, "unhealthy_after_s": unhealthy_at and unhealthy_at - t_kill,
            "recovery_s": recovered_at and recovered_at - t_kill, "load_wall_s": time.monotonic() - t0}


async def conversation(client: httpx.AsyncClient, i: int, a: argparse.Namespace) -> dict:
    msgs = [{"role": "user", "content": prompt(i)}]
    first = await chat(client, msgs, a, stream=True)
    msgs += [{"role": "assistant", "content": first["text"]}, {"role": "user", "content": FOLLOW_UP}]
    second = await chat(client, msgs, a, stream=True)
    return {"first": first, "second": second}


async def affinity_run(c, a: argparse.Namespace) -> dict:
    async with client_for(c.url) as client:
        convs = await gather_limited(a.concurrency, (conversation(client, i, a) for i in range(a.conversations)))
    done = [cv for cv in convs if cv["first"]["status"] == 200 and cv["second"]["status"] == 200]
    same = sum(cv["first"]["extra"].get("replica") == cv["second"]["extra"].get("replica") for cv in done)

    def turn(k: str) -> dict:
        rs = [cv[k] for cv in done]
        return {"client_ttft_s": summary([r["ttft_s"] for r in rs if r["ttft_s"] is not None]),
                "engine_ttft_s": summary([r["extra"]["ttft_s"] for r in rs]),
                "prompt_tokens_mean": sum(r["prompt_tokens"] for r in rs) / len(rs) if rs else None,
                "cached_prompt_tokens_mean": (sum(r["extra"].get("cached_prompt_tokens", 0) for r in rs) / len(rs)
                                              if rs else None)}
    # the second turn found the whole first turn's prompt in its replica's cache
    held = [cv["second"]["extra"].get("cached_prompt_tokens", 0) >= cv["first"]["prompt_tokens"] for cv in done]
    return {"conversations": a.conversations, "completed": len(done), "second_turn_same_replica": same,
            "second_turn_prefix_cached": sum(held),
            "second_turn_engine_ttft_s_prefix_cached": summary([cv["second"]["extra"]["ttft_s"]
                                                                for cv, h in zip(done, held) if h]),
            "second_turn_engine_ttft_s_prefix_not_cached": summary([cv["second"]["extra"]["ttft_s"]
                                                                    for cv, h in zip(done, held) if not h]),
            "affinity_rate": same / len(done) if done else None, "first_turn": turn("first"),
            "second_turn": turn("second"),
            "replicas_used_by_first_turns": len({cv["first"]["extra"].get("replica") for cv in done})}


def cpu_seconds() -> dict[int, tuple[str, float]]:
    """Every process's CPU seconds so far (user + system) and a name: Ray's process title (ray::EngineReplica,
    ray::ServeController, ...) or the program's file name."""
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        first = argv[0].decode(errors="replace") if argv and argv[0] else stat[stat.index("(") + 1:stat.rindex(")")]
        name = first.split()[0] if first.startswith("ray::") else Path(first.split()[0]).name
        if name.startswith("python") and len(argv) > 2:  # python -m ryzanstein.cli serve, or a script
            name = " ".join(x.decode(errors="replace") for x in argv[1:3])
        out[int(pid)] = (name, (int(fields[11]) + int(fields[12])) / tick)
    return out


def cpu_by_name(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds used between two snapshots, summed by process name, largest first (>= 0.05 s)."""
    used: dict[str, float] = {}
    for pid, (name, t) in after.items():
        used[name] = used.get(name, 0.0) + t - (before[pid][1] if pid in before else 0.0)
    return dict(sorted(((k, round(v, 2)) for k, v in used.items() if v >= 0.05), key=lambda kv: -kv[1]))


async def throughput_run(url: str, a: argparse.Namespace) -> dict:
    async with client_for(url) as client:
        await chat(client, [{"role": "user", "content": "Hello"}], a)  # warm
        t0, cpu0 = time.monotonic(), cpu_seconds()
        rs = await gather_limited(a.concurrency, (chat(client, [{"role": "user", "content": prompt(i)}], a)
                                                  for i in range(a.throughput_requests)))
        wall, cpu1 = time.monotonic() - t0, cpu_seconds()
    ok = [r for r in rs if r["status"] == 200]
    return {"requests": len(rs), "ok": len(ok), "wall_s": wall, "completion_tokens": sum(r["tokens"] for r in ok),
            "tokens_per_s": sum(r["tokens"] for r in ok) / wall, "requests_per_s": len(ok) / wall,
            "latency_s": summary([r["wall_s"] for r in ok]),
            "cpu_s_by_process": cpu_by_name(cpu0, cpu1)}  # where the cores went (this client included)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--draft", default="ngram")
    p.add_argument("--parallel", type=int, default=4, help="batch slots per replica (the 1-engine server gets 2x)")
    p.add_argument("--concurrency", type=int, default=8, help="clients at once")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--kill-requests", type=int, default=100)
    p.add_argument("--conversations", type=int, default=40)
    p.add_argument("--throughput-requests", type=int, default=48)
    p.add_argument("--recovery-timeout", type=float, default=180.0, help="seconds to wait for the replica to return")
    p.add_argument("--ray-1x2", action="store_true", help="also measure 1 replica x 2 threads on Ray")
    p.add_argument("--skip", default="", help="comma list of parts to leave out: kill, affinity, affinity_off "
                   "(the same conversations with --no-prefix-affinity: the control), throughput")
    p.add_argument("--out", default=None, help="also write the JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    skip = set(filter(None, a.skip.split(",")))
    common = ["--model", a.model, "--draft", a.draft, "--ctx-size", "2048", "--max-queue", "256"]
    cluster2 = [*common, "--replicas", "2", "--threads", "1", "--parallel", str(a.parallel)]
    report: dict = {"date": time.strftime("%Y-%m-%d"), "argv": sys.argv[1:], "model": a.model, "draft": a.draft,
                    "parallel_per_replica": a.parallel, "concurrency": a.concurrency, "max_tokens": a.max_tokens,
                    "cores": len(os.sched_getaffinity(0))}
    with cluster_subprocess(cluster2) as c:
        if "affinity" not in skip:
            report["affinity"] = asyncio.run(affinity_run(c, a))
        if "throughput" not in skip:
            report.setdefault("throughput", {})["ray_2_replicas_x_1_thread"] = asyncio.run(throughput_run(c.url, a))
        if "kill" not in skip:  # last: the cluster is not the same after it
            report["kill"] = asyncio.run(kill_run(c, a))
    if "affinity_off" not in skip:  # the control: the same conversations routed by load alone
        with cluster_subprocess([*cluster2, "--no-prefix-affinity"]) as c:
            report["affinity_off"] = asyncio.run(affinity_run(c, a))
    if "throughput" not in skip:
        with serve_subprocess([*common, "--threads", "2", "--parallel", str(2 * a.parallel)]) as s:
            report["throughput"]["serve_1_engine_x_2_threads"] = asyncio.run(throughput_run(s.url, a))
        if a.ray_1x2:
            with cluster_subprocess([*common, "--replicas", "1", "--threads", "2",
                                     "--parallel", str(2 * a.parallel)]) as c1:
                report["throughput"]["ray_1_replica_x_2_threads"] = asyncio.run(throughput_run(c1.url, a))
    text = json.dumps(report, indent=2)
    print(text)
    if a.out:
        tmp = Path(a.out).with_suffix(".tmp")
        tmp.write_text(text + "\n")
        json.loads(tmp.read_text())
        tmp.replace(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
