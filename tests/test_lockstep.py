"""Generations run side by side (`bench --lockstep`): per-stream clocks, a second KV cache over the same
weights, and the decode loop timed by the clock it is given."""
import itertools

import numpy as np
import pytest

from ryzanstein import Engine, GenerationConfig
from ryzanstein.bench.lockstep import StreamClocks, run_in_turn
from ryzanstein.models.llamacpp import LlamaCppModel


def test_each_stream_clock_runs_only_during_its_own_steps():
    t = [0.0]  # a fake timer that moves only when a stream "works"
    clocks = StreamClocks(timer=lambda: t[0])
    seen = []

    def gen(name, other, steps, work):
        mine, theirs = clocks.clock(name), clocks.clock(other)
        for _ in range(steps):
            start = mine()
            t[0] += work
            seen.append((name, mine() - start, theirs()))
            yield

    run_in_turn({"a": gen("a", "b", 2, 5.0), "b": gen("b", "a", 3, 1.0)}, clocks)
    # one step each in turn until the shorter one is done; each step sees its own work on its own clock and
    # the other stream's clock standing at that stream's total so far
    assert seen == [("a", 5.0, 0.0), ("b", 1.0, 5.0), ("a", 5.0, 1.0), ("b", 1.0, 10.0), ("b", 1.0, 10.0)]
    assert dict(clocks.spent) == {"a": 10.0, "b": 3.0} and t[0] == 13.0


def test_the_decode_loop_times_with_the_clock_it_is_given(llama_smol):
    ticks = itertools.count()
    res = Engine.from_models(llama_smol).stream("Say hi", GenerationConfig(max_new_tokens=4, temperature=0),
                                                clock=lambda: float(next(ticks))).run()
    s = res.stats
    assert s.prefill_s == 1.0  # exactly one tick between the two readings around the prefill: never wall time
    assert s.decode_s == int(s.decode_s) and s.decode_s > 0


def test_a_new_context_shares_the_weights_and_keeps_its_own_cache(smol_gguf):
    owner = LlamaCppModel(smol_gguf, n_ctx=256, threads=2)
    twin = owner.new_context()
    assert twin.info.extra["shares_weights_with"] == owner.info.name and twin._model is owner._model
    a = [1, 2, 3, 4, 5, 6]
    fresh = np.array(owner.forward(a))
    owner.reset()
    twin.forward([9, 8, 7, 6, 5, 4, 3, 2])  # fills the twin's cache with something else
    owner.forward(a[:3])
    twin.truncate(2)
    np.testing.assert_allclose(owner.forward(a[3:]), fresh[3:], rtol=1e-4, atol=1e-4)  # untouched by the twin
    twin.reset()
    np.testing.assert_allclose(twin.forward(a), fresh, rtol=1e-4, atol=1e-4)  # the same weights
    owner.close()  # closes the twin first: its context must not outlive the weights
    assert twin._ctx is None and owner._ctx is None


@pytest.mark.parametrize("draft", ["ngram", "self:8"])
def test_lockstep_pair_equals_each_run_alone(smol_gguf, draft):
    """Interleaving changes nothing but timing: each generation's output is what it makes alone (greedy)."""
    spec = Engine(model="smollm2-135m", draft=draft, threads=2, ctx_size=512, allow_memory_overhead=True)
    plain = Engine.from_models(spec.target.new_context(), None, spec.config)
    twin = spec.twin()
    prompt = ("Rewrite this code, renaming a and b to x and y:\ndef add(a, b):\n    return a + b\n")
    cfg = GenerationConfig(max_new_tokens=32, temperature=0)
    alone = plain.generate(prompt, cfg).tokens
    clocks = StreamClocks()
    gens = {"plain": plain.stream(prompt, cfg, clock=clocks.clock("plain")),
            "spec": spec.stream(prompt, cfg, clock=clocks.clock("spec")),
            "twin": twin.stream(prompt, cfg.replace(k=3, policy="fixed"), clock=clocks.clock("twin"))}
    run_in_turn(gens, clocks)
    for g in gens.values():
        assert g.result.tokens == alone
        assert 0 < g.result.stats.decode_s < sum(clocks.spent.values())
    assert gens["twin"].result.stats.num_draft_tokens > 0
    spec.target.close()
