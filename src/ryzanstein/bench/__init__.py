"""`ryzanstein bench`: plain decoding against every speculative configuration, side by side, on one target.

One target is loaded once and shared by every configuration (plain, and each draft x K x temperature). Each
prompt runs every configuration back to back (interleaved, in an order rotated per prompt), so machine drift
hits them all alike; every run starts from an empty KV cache, so each pays its own prefill; plain and
speculative runs of a prompt use the same seed and the same max_new_tokens. One warm-up generation per draft
runs first and is not recorded. Tokens are counted as token ids, never characters.

With --lockstep every configuration gets its own KV caches over the shared weights, and a prompt's
configurations advance one target forward each in turn, each timed on a clock that runs only during its own
steps (lockstep.py): all of them meet the same machine state within one round, which takes the noise of a
shared machine out of their ratios (prefill, one forward, keeps its own). Costs one KV cache per configuration.

    ryzanstein bench --quick                               # ~1 min on smollm2-135m
    ryzanstein bench --drafts ngram,self:8 --ks 1,2,4,8,auto --temperatures 0,0.7
    ryzanstein bench --long                                # speedup and memory vs context length
    ryzanstein bench --drafts ngram --ks auto --reps 3 --lockstep   # auto vs plain, machine noise paired out
    ryzanstein bench report bench-results/<stamp>/results.json

The runner is runner.py (its settings: config.py BenchConfig); the arithmetic is summary.py, the Markdown
report.py, the plots plots.py, the transformers comparison compare.py, the per-stream clocks lockstep.py.
The results.json schema is schema.py's `SCHEMA` (also copied into every report.md).
"""
