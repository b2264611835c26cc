"""What `ryzanstein bench` writes to results.json: the schema (copied into every report.md) and the names it
gives drafts and configurations."""
from __future__ import annotations

from pathlib import Path

SCHEMA_VERSION = 1
SCHEMA = """\
results.json (schema_version 1). Times in seconds, memory in bytes, rates in tokens per second.
- schema_version, kind="ryzanstein-bench"
- machine: cpu, cores (os.cpu_count), usable_cores (affinity), cpu_flags {avx2, avx512f, avx512_bf16,
  avx512_vnni, ...: bool}, ram_bytes, platform, versions {python, ryzanstein, numpy, torch, llama-cpp-python,
  transformers, matplotlib}
- run: command (a command line reproducing the run), argv, date (ISO 8601), wall_s, model, backend, threads,
  n_ctx, drafts, ks, temperatures, max_new_tokens, seed, reps, ignore_eos, prompts_file, categories, per_category,
  quick, long, lockstep, n_prompts, n_runs
- models: target {name, path, backend, dtype, n_layers, n_ctx, threads, sha256 (the store's; null when
  unknown)}; drafts {draft: {...same..., or {kind: "ngram"}}}
- memory: target {weights_bytes, kv_cache_bytes, kv_bytes_per_token} (the engine's own accounting);
  rss_after_target_bytes (current RSS after loading the target); drafts {draft: {spec_overhead_bytes (engine
  accounting: draft weights + draft KV + k_max extra target KV rows), rss_after_load_bytes (current RSS after
  loading this draft), rss_delta_bytes}}; rss_after_warmup_bytes; peak_rss_bytes (process-wide ru_maxrss at
  the end: covers every configuration, not one); lockstep (only with --lockstep: the benchmark's own cost, not
  speculation's) {contexts (target KV caches, one per configuration), extra_kv_cache_bytes (the target and
  model-draft KV caches of every configuration but the first, each a twin in caches of its own), rss_delta_bytes}
- prompts: [{id, category, prompt_tokens}]
- configs: [{config, draft, k, temperature}]: config is "plain" or "<draft>:k<K>" or "<draft>:auto";
  draft "none" = plain; k an int, "auto", or null for plain
- runs: one per (prompt, config, temperature): prompt_id, category, config, draft, k, temperature, seed,
  prompt_tokens, num_tokens, finish_reason, tokens (output ids), text, identical_to_plain (greedy speculative
  runs: output ids equal plain's; else null), first_divergence (index of the first output token that differs
  from plain's; null when identical or not greedy), divergence_top2_gap (only for diverged runs: the target's
  top-1 minus top-2 logit where plain decoding took that token; a near-tie is a small gap), rss_bytes (current RSS after the run),
  token_latencies_s (per emitted token: its round's time / tokens it emitted; under --lockstep every time is
  the generation's own clock), stats (GenerationStats.to_dict():
  tokens_per_s = tokens / (prefill + decode), prefill_s, decode_s, ttft_s, prefill_tokens_per_s,
  decode_tokens_per_s, latency_p50_s/p95/p99, rounds, num_draft_tokens, num_accepted, acceptance_rate,
  mean_acceptance_length (includes the bonus token), accepted_per_position, drafted_per_position,
  acceptance_by_position, accepted_length_hist, k_per_round, predicted_speedup (auto), policy, fallback, ...)
- summary: bench/summary.py summarize(results), recomputed by `ryzanstein bench report`: configs [{config, draft,
  k, temperature, overall, by_category {category: aggregate}}] where an aggregate holds n_prompts, tokens,
  tokens_per_s (sum tokens / sum time), speedup_geomean and speedup_median (of per-prompt tokens/s ratios to
  plain at the same temperature), speedup_min/max, decode_speedup_geomean, acceptance_rate and
  mean_acceptance_length (pooled counts), acceptance_by_position (pooled), accepted_length_hist (summed),
  ttft_s/prefill_s/decode_s/prefill_tokens_per_s/decode_tokens_per_s (medians), latency_p50_s/p95/p99
  (pooled over tokens), identical_rate (greedy), first_divergences, k_mean, k_hist, predicted_speedup
  (geometric mean, auto), rss_bytes_max, spec_memory_overhead_bytes, fallbacks
  and noise_floor (null under 2 repeats): plain decoding against itself, its repeats split at random in halves
  {splits, repeats, bar, by_category {category: {p05, p95}}, lowest_category_median, lowest_below_bar_rate}
  and pair_spread {"<config>@<T>": {sd, dof}}: within-prompt sd of log(config repeat i / plain repeat i), pooled
- compare (only with --compare): transformers' generate on the same weights; see bench/compare.py
"""


def short_name(draft: str) -> str:
    """A draft as labels show it: a file path by its stem."""
    return Path(draft).stem if "/" in draft or draft.endswith(".gguf") else draft


def label(draft: str, k: int | str | None) -> str:
    """A configuration's name: "plain", "<draft>:k<K>" or "<draft>:auto"."""
    return "plain" if draft == "none" else f"{short_name(draft)}:{'auto' if k == 'auto' else f'k{k}'}"
