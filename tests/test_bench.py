"""`ryzanstein bench`: the report arithmetic on a hand-made results file, the prompt sets, and one tiny real run."""
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

from ryzanstein.bench.config import parse_ks
from ryzanstein.bench.prompts import load_prompts
from ryzanstein.bench.runner import first_divergence
from ryzanstein.bench.summary import noise_floor, summarize
from ryzanstein.cli import main


def _run(pid, cat, config, tps, acc=(), drafted=(), same=None, div=None, k_rounds=(), n=20):
    """A run of `n` tokens at `tps` tokens/s (1 s of it prefill-free decode), with per-position counts."""
    draft = "none" if config == "plain" else "ngram"
    seconds = n / tps
    return {"prompt_id": pid, "category": cat, "config": config, "draft": draft,
            "k": None if draft == "none" else 2, "temperature": 0.0, "seed": 0, "prompt_tokens": 50,
            "num_tokens": n, "finish_reason": "length", "tokens": [], "text": "", "identical_to_plain": same,
            "first_divergence": div, "rss_bytes": 1000, "token_latencies_s": [seconds / n] * n,
            "stats": {"tokens_per_s": tps, "decode_tokens_per_s": tps, "prefill_s": 0.0, "decode_s": seconds,
                      "ttft_s": 0.01, "prefill_tokens_per_s": 5000.0, "num_draft_tokens": sum(drafted),
                      "num_accepted": sum(acc), "rounds": 10, "accepted_per_position": list(acc),
                      "drafted_per_position": list(drafted), "accepted_length_hist": [1, 2, 3] if acc else [],
                      "k_per_round": list(k_rounds), "policy": "fixed", "predicted_speedup": 0.0,
                      "spec_memory_overhead_bytes": 0, "fallback": None}}


@pytest.fixture()
def handmade():
    runs = [
        _run("a1", "a", "plain", 10.0), _run("a2", "a", "plain", 20.0), _run("b1", "b", "plain", 40.0),
        _run("a1", "a", "ngram:k2", 20.0, acc=(4, 2), drafted=(5, 5), same=True, k_rounds=(2, 2)),    # 2x
        _run("a2", "a", "ngram:k2", 10.0, acc=(1, 0), drafted=(5, 5), same=False, div=3),           # 0.5x
        _run("b1", "b", "ngram:k2", 160.0, acc=(2, 1), drafted=(2, 2), same=True, k_rounds=(2, 1)),  # 4x
    ]
    return {"schema_version": 1, "kind": "ryzanstein-bench", "runs": runs,
            "run": {"model": "hand-made", "command": "ryzanstein bench"},
            "memory": {"target": {"weights_bytes": 100 << 20, "kv_cache_bytes": 20 << 20, "kv_bytes_per_token": 1024},
                       "rss_after_target_bytes": 150 << 20, "peak_rss_bytes": 160 << 20,
                       "drafts": {"ngram": {"spec_overhead_bytes": 1 << 20, "rss_after_load_bytes": 150 << 20,
                                            "rss_delta_bytes": 0}}},
            "prompts": [{"id": "a1", "category": "a", "prompt_tokens": 50}]}


def test_report_arithmetic(handmade):
    s = summarize(handmade)
    assert s["categories"] == ["a", "b"] and s["temperatures"] == [0.0]
    spec = next(c for c in s["configs"] if c["config"] == "ngram:k2")
    o = spec["overall"]
    assert o["speedup_geomean"] == pytest.approx((2 * 0.5 * 4) ** (1 / 3))
    assert o["speedup_median"] == pytest.approx(2.0)
    assert (o["speedup_min"], o["speedup_max"]) == pytest.approx((0.5, 4.0))
    assert o["identical_rate"] == pytest.approx(2 / 3) and o["first_divergences"] == [3]
    assert o["acceptance_rate"] == pytest.approx(10 / 24)
    assert o["mean_acceptance_length"] == pytest.approx((10 + 30) / 30)
    assert o["acceptance_by_position"] == pytest.approx([7 / 12, 3 / 12])
    assert o["accepted_length_hist"] == [3, 6, 9]
    assert o["k_mean"] == pytest.approx(7 / 4) and o["k_hist"] == [0, 1, 3]
    assert o["tokens_per_s"] == pytest.approx(60 / (1 + 2 + 0.125))  # pooled: all tokens / all seconds
    a, b = spec["by_category"]["a"], spec["by_category"]["b"]
    assert a["speedup_geomean"] == pytest.approx(1.0) and a["speedup_median"] == pytest.approx(1.25)
    assert a["acceptance_by_position"] == pytest.approx([5 / 10, 2 / 10])
    assert b["speedup_geomean"] == pytest.approx(4.0) and b["identical_rate"] == 1.0
    plain = next(c for c in s["configs"] if c["config"] == "plain")
    assert plain["overall"]["speedup_geomean"] == pytest.approx(1.0) and plain["overall"]["identical_rate"] is None
    assert plain["overall"]["latency_p50_s"] == pytest.approx(0.05)  # pooled per-token latencies: 0.1, 0.05, 0.025


def test_report_renders_markdown_and_plots(handmade, tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(handmade))
    out = tmp_path / "out"
    assert main(["bench", "report", str(path), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert "| category | plain tok/s | ngram:k2 |" in md and "1.59x · 42%" in md and "4.00x · 75%" in md
    assert "results.json schema" in md and "a2 | ngram:k2 | 3" in md
    for png in ("speedup_vs_k.png", "acceptance_by_position.png", "latency.png", "memory.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pooling_repeats_across_runs(tmp_path, capsys, monkeypatch):
    """benchmarks/pool.py: per prompt the median over every repeat of every run, then the category geomean."""
    spec = importlib.util.spec_from_file_location("pool", Path(__file__).parent.parent / "benchmarks" / "pool.py")
    pool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pool)

    def run(pid, cat, config, reps):
        r = _run(pid, cat, config, reps[0])
        r["config"], r["reps_tokens_per_s"] = config, reps
        return r

    one = {"runs": [run("a1", "a", "plain", [10, 10, 10]), run("a1", "a", "x:auto", [9, 9, 9]),
                    run("b1", "b", "plain", [10]), run("b1", "b", "x:auto", [12])]}
    two = {"runs": [run("a1", "a", "plain", [10, 10]), run("a1", "a", "x:auto", [11, 11])]}
    tables = [pool.reps(one), pool.reps(two)]
    assert pool.speedups(*tables[0], "x:auto") == pytest.approx({"a": 0.9, "b": 1.2, "overall": math.sqrt(0.9 * 1.2)})
    pooled = {k: tables[0][0][k] + tables[1][0].get(k, []) for k in tables[0][0]}
    assert pool.speedups(pooled, tables[0][1], "x:auto")["a"] == pytest.approx(0.9)  # median of 9,9,9,11,11
    for r in (one, two):
        r["run"] = {"model": "m"}
    for i, r in enumerate((one, two)):
        (tmp_path / f"r{i}.json").write_text(json.dumps(r))
    monkeypatch.setattr(sys, "argv", ["pool.py", str(tmp_path / "r0.json"), str(tmp_path / "r1.json")])
    pool.main()
    out = capsys.readouterr().out
    assert "a | 0.900x | 0.900x | 1.100x" in out and "lowest pooled category: a 0.900x" in out


def test_noise_floor_is_an_a_a_test_of_plain_repeats():
    cats = {"a1": "a", "a2": "a", "b1": "b"}
    steady = noise_floor({"a1": [10.0] * 4, "a2": [20.0] * 4, "b1": [5.0] * 4}, cats, splits=50)
    assert steady["by_category"]["a"] == {"p05": 1.0, "p95": 1.0} and steady["lowest_below_bar_rate"] == 0.0
    # one prompt with two slow repeats of four: 1 split in 6 puts both in the first half (its ratio 0.5)
    noisy = noise_floor({"a1": [10.0, 10.0, 5.0, 5.0], "a2": [20.0] * 4, "b1": [5.0] * 4}, cats, splits=400)
    assert noisy["by_category"]["a"]["p05"] == pytest.approx(math.sqrt(0.5))
    assert 0.1 < noisy["lowest_below_bar_rate"] < 0.25 and noisy["by_category"]["b"]["p95"] == 1.0
    assert noise_floor({"a1": [10.0]}, cats) is None  # one repeat: nothing to split


def test_prompt_sets_and_helpers(tmp_path):
    ps = load_prompts(None)
    cats = {p["category"] for p in ps}
    assert len(ps) == 54 and cats == {"code", "code_editing", "summarization", "extraction", "qa", "translation",
                                      "math", "chat", "retrieval"}
    assert all(sum(p["category"] == c for p in ps) >= 6 for c in cats) and len({p["id"] for p in ps}) == len(ps)
    long = load_prompts(None, long=True)
    assert {p["category"] for p in long} == {"long_1k", "long_2k", "long_4k"} and len(long) >= 6
    assert [p["id"] for p in load_prompts(None, categories=["qa", "math"], per_category=2)] == \
        ["qa-01", "qa-02", "math-01", "math-02"]
    spec_bench = tmp_path / "question.jsonl"
    spec_bench.write_text(json.dumps({"question_id": 81, "category": "writing", "turns": ["first", "second"]}) + "\n")
    assert load_prompts(str(spec_bench)) == [{"id": "81", "category": "writing", "prompt": "first"}]
    assert parse_ks("1,4,auto") == [1, 4, "auto"]
    with pytest.raises(Exception, match="1..8"):
        parse_ks("9")
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1 and first_divergence([1, 2], [1, 2, 3]) == 2


def test_tiny_real_run(smol_gguf, tmp_path):
    out = tmp_path / "run"
    # 1 thread: a 2-thread run stalls badly when the 2-core machine is busy with anything else
    rc = main(["bench", "--categories", "code_editing,qa", "--per-category", "1", "--max-new-tokens", "16",
               "--ks", "2", "--threads", "1", "--out", str(out)])
    assert rc == 0
    r = json.loads((out / "results.json").read_text())
    assert {"schema_version", "kind", "machine", "run", "models", "memory", "prompts", "configs", "runs",
            "summary"} <= set(r)
    assert {"cpu", "cores", "cpu_flags", "ram_bytes", "versions"} <= set(r["machine"])
    assert r["models"]["target"]["sha256"] and r["run"]["command"].startswith("ryzanstein bench")
    assert {"rss_after_target_bytes", "rss_after_warmup_bytes", "peak_rss_bytes", "drafts"} <= set(r["memory"])
    assert [c["config"] for c in r["configs"]] == ["plain", "ngram:k2"] and len(r["runs"]) == 4
    for run in r["runs"]:
        assert 1 <= run["num_tokens"] <= 16 and run["stats"]["tokens_per_s"] > 0
        assert run["stats"]["cached_prompt_tokens"] == 0  # every run paid its own prefill
        if run["draft"] != "none":
            assert run["identical_to_plain"] is not None
    o = next(c for c in r["summary"]["configs"] if c["config"] == "ngram:k2")["overall"]
    assert o["speedup_geomean"] > 0 and not math.isnan(o["speedup_geomean"])
    assert (out / "report.md").exists() and (out / "speedup_vs_k.png").exists()
    summary = json.loads((out / "summary.json").read_text())  # what is committed: everything but the runs
    assert "runs" not in summary and summary["summary"] == r["summary"] and summary["run"] == r["run"]


def test_tiny_lockstep_run(smol_gguf, tmp_path):
    """--lockstep: one KV cache per configuration, outputs as in a plain run, paired noise in the report."""
    out = tmp_path / "lock"
    rc = main(["bench", "--categories", "code_editing", "--per-category", "1", "--max-new-tokens", "12",
               "--ks", "2,auto", "--reps", "2", "--threads", "1", "--lockstep", "--no-plots", "--out", str(out)])
    assert rc == 0
    r = json.loads((out / "results.json").read_text())
    assert r["run"]["lockstep"] and r["run"]["command"].endswith("--lockstep")
    lock = r["memory"]["lockstep"]
    assert lock["contexts"] == 3 and lock["extra_kv_cache_bytes"] == 2 * r["memory"]["target"]["kv_cache_bytes"]
    for run in r["runs"]:
        assert run["stats"]["cached_prompt_tokens"] == 0 and len(run["reps_tokens_per_s"]) == 2
        assert run["identical_to_plain"] in (None, True)
    assert set(r["summary"]["pair_spread"]) == {"ngram:k2@0", "ngram:auto@0"}
    report = (out / "report.md").read_text()
    assert "lockstep" in report and "Paired noise" in report


def test_ngram_replay_counts_forwards_as_the_decode_loop_would():
    """benchmarks/ngram_replay.py on hand-made outputs: a copied span is drafted and accepted K at a time."""
    spec = importlib.util.spec_from_file_location("ngram_replay",
                                                  Path(__file__).parent.parent / "benchmarks" / "ngram_replay.py")
    replay = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(replay)
    from ryzanstein.speculative.proposers import NgramProposer

    prompt = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    # output: copies 3..9 from the prompt after "2", then a fresh token 50
    data = [("copy", prompt, [3, 4, 5, 6, 7, 8, 9, 50]), ("none", [1, 2], [70, 71, 72])]
    by = replay.replay(data, NgramProposer(1, 4), 4)
    # round 1: nothing before the context's last token 9 matches -> no draft, the target emits 3;
    # round 2: "3" occurs in the prompt -> drafts 4 5 6 7, all accepted, the target adds 8;
    # round 3: "5 6 7 8" occurs in the prompt -> drafts 9 3 4 5, 9 accepted, the target adds 50.
    assert by["copy"] == {"tokens": 8, "forwards": 3, "drafted": 8, "accepted": 5, "tokens_per_forward": 2.6667,
                          "acceptance": 0.625}
    assert by["none"]["forwards"] == 3 and by["none"]["acceptance"] is None
    assert by["overall"]["tokens"] == 11 and by["overall"]["forwards"] == 6


def test_ngram_replay_auto_speculates_only_where_verifying_is_cheap():
    """ngram_replay.replay_auto: the real policy auto on a copied output pays with a flat v(n) and declines to
    draft when a forward over n tokens costs n steps; prefill time counts on both sides of the overall figure."""
    spec = importlib.util.spec_from_file_location("ngram_replay",
                                                  Path(__file__).parent.parent / "benchmarks" / "ngram_replay.py")
    replay = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(replay)
    from ryzanstein.speculative.costs import CostProfile

    prompt = list(range(1, 201))
    data = [("copy", prompt, prompt[20:140])]  # the output copies 120 prompt tokens
    flat = replay.replay_auto(data, CostProfile([0.01] * 16), 0.0, {"copy": 0.5})
    assert flat["copy"]["decode_speedup"] > 3.0
    assert 1.0 < flat["copy"]["overall_speedup"] < flat["copy"]["decode_speedup"]  # the prefill is not sped up
    assert flat["copy"]["plain_decode_s"] == pytest.approx(119 * 0.01)
    linear = replay.replay_auto(data, CostProfile([0.01 * n for n in range(1, 17)]), 0.0, {})
    assert 0.97 < linear["overall"]["decode_speedup"] <= 1.0 + 1e-9
