"""`ryzanstein bench` and `ryzanstein bench report`: flags -> BenchConfig -> the run -> results.json, report.md.

results.json holds every run (token ids, text, per-token latencies): it is large and stays local (the default
folder, bench-results/, is git-ignored). summary.json is the same file without its runs: the summary, the
settings and the machine, small enough to commit beside report.md and the plots."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from .. import bench
from ..bench.config import BenchConfig, parse_categories, parse_drafts, parse_ks, parse_temperatures
from ..bench.report import headline, render
from ..bench.runner import run_bench
from ..bench.summary import summarize
from ..config import BACKENDS
from ..errors import RyzansteinError


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmark plain vs speculative decoding (speedup, acceptance, latency, memory)",
                       description=bench.__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "-m", default="smollm2-135m", help="target: known name, .gguf or HF folder (default: smollm2-135m)")
    p.add_argument("--drafts", default="ngram", help="comma list: ngram, self:N, or draft model names (default: ngram)")
    p.add_argument("--ks", default="1,2,4,8,auto", help="comma list of fixed K in 1..8 and/or auto (default: 1,2,4,8,auto)")
    p.add_argument("--temperatures", default="0", help="comma list (default: 0 = greedy); e.g. 0,0.7")
    p.add_argument("--prompts", default=None, help="JSONL {id, category, prompt} or Spec-Bench question.jsonl (default: the shipped set)")
    p.add_argument("--categories", default=None, help="comma list of categories to keep")
    p.add_argument("--per-category", type=int, default=None, help="at most N prompts per category")
    p.add_argument("--max-new-tokens", "-n", type=int, default=128)
    p.add_argument("--ignore-eos", action="store_true", help="always generate --max-new-tokens tokens")
    p.add_argument("--seed", type=int, default=0, help="prompt i uses seed + i in every configuration (default: 0)")
    p.add_argument("--reps", type=int, default=1, help="run every (prompt, configuration) N times, interleaved, "
                   "and keep the median-speed run: less noise on a busy machine (default: 1)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--backend", choices=BACKENDS, default=None)
    p.add_argument("--ctx-size", type=int, default=None, help="default: large enough for the longest prompt")
    p.add_argument("--draft-vocab", type=int, default=None, help="ids a draft model scores (as for generate); 0 = all")
    p.add_argument("--quick", action="store_true", help="1 prompt per category, 48 new tokens, ks 2,auto (~1 min on smollm2-135m)")
    p.add_argument("--long", action="store_true", help="the long-context set (~1k/2k/4k-token prompts)")
    p.add_argument("--lockstep", action="store_true", help="advance each prompt's configurations one target forward "
                   "each in turn, each on its own clock: pairs out the machine's noise (one KV cache per configuration)")
    p.add_argument("--compare", action="store_true", help="also run transformers' generate (plain, prompt lookup, assisted) on the same weights")
    p.add_argument("--compare-dtype", choices=("bfloat16", "float32"), default="bfloat16", help="transformers' weights dtype for --compare")
    p.add_argument("--out", default=None, help="output folder (default: bench-results/<timestamp>/)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.set_defaults(func=cmd_bench)
    rs = p.add_subparsers(dest="bench_command", metavar="report")
    r = rs.add_parser("report", help="re-render report.md and the plots from a results.json")
    r.add_argument("results", help="a results.json written by ryzanstein bench")
    r.add_argument("--out", default=None, help="output folder (default: the results file's folder)")
    r.add_argument("--no-plots", action="store_true")
    r.set_defaults(func=cmd_report)


def bench_config_from_args(a: argparse.Namespace) -> BenchConfig:
    return BenchConfig(
        model=a.model, drafts=parse_drafts(a.drafts), ks=tuple(parse_ks(a.ks)),
        temperatures=tuple(parse_temperatures(a.temperatures)), prompts=a.prompts,
        categories=parse_categories(a.categories), per_category=a.per_category, max_new_tokens=a.max_new_tokens,
        ignore_eos=a.ignore_eos, seed=a.seed, reps=a.reps, threads=a.threads, backend=a.backend,
        ctx_size=a.ctx_size, quick=a.quick, long=a.long, lockstep=a.lockstep, compare=a.compare,
        compare_dtype=a.compare_dtype, draft_vocab=a.draft_vocab)


def cmd_bench(a: argparse.Namespace) -> int:
    cfg = bench_config_from_args(a)
    out = Path(a.out or Path("bench-results") / dt.datetime.now().strftime("%Y%m%d-%H%M%S"))
    results = run_bench(cfg)
    results["summary"] = summarize(results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    write_summary(results, out)
    render(results, out, plots=not a.no_plots)
    print(headline(results["summary"]))
    print(f"\nwrote {out / 'results.json'}, summary.json and report.md in {out} ({results['run']['wall_s']:.0f} s)",
          file=sys.stderr)
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    path = Path(a.results)
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RyzansteinError(f"cannot read {path}: {e}") from None
    if results.get("kind") != "ryzanstein-bench" or "runs" not in results:
        raise RyzansteinError(f"{path} is not a ryzanstein bench results.json (no kind/runs)")
    results["summary"] = summarize(results)
    out = Path(a.out) if a.out else path.parent
    out.mkdir(parents=True, exist_ok=True)
    write_summary(results, out)
    render(results, out, plots=not a.no_plots)
    print(f"wrote {out / 'report.md'} and {out / 'summary.json'}", file=sys.stderr)
    return 0


def write_summary(results: dict, out: Path) -> None:
    """summary.json: results.json without the runs (no per-token data), the part of a run worth committing."""
    (out / "summary.json").write_text(json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=1))
