"""End-to-end decoding on real weights (SmolLM2-135M on llama.cpp): plain decoding, the KV cache, speculative
greedy equivalence, and the edge cases of a round (EOS inside a draft, budget or context hit mid-draft,
a draft that fails)."""
import numpy as np
import pytest

from ryzanstein import Engine, GenerationConfig, RyzansteinError
from ryzanstein.speculative.proposers import Draft, NgramProposer, Proposer

CODE_PROMPT = ("Rewrite this code, renaming the parameters a and b to x and y:\n"
               "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n")


class Oracle(Proposer):
    """Proposes a known continuation (plain decoding's output, then junk): a perfect draft up to the junk."""

    name = "oracle"

    def __init__(self, prompt_len, continuation, junk=7):
        self.prompt_len, self.cont, self.junk = prompt_len, list(continuation) + [junk] * 16, junk

    def propose(self, context, k, stop=None, catch_up=None):
        done = len(context) - self.prompt_len
        return Draft(self.cont[done:done + k])


class Failing(Proposer):
    """A draft that breaks on its n-th call (as a corrupt or out-of-memory draft model would)."""

    name = "failing"

    def __init__(self, inner, fail_at=3):
        self.inner, self.calls, self.fail_at = inner, 0, fail_at

    def propose(self, context, k, stop=None, catch_up=None):
        self.calls += 1
        if self.calls == self.fail_at:
            raise MemoryError("draft ran out of memory")
        return self.inner.propose(context, k, stop, catch_up)


@pytest.fixture(scope="module")
def plain(llama_smol):
    return Engine.from_models(llama_smol)


def cold(engine, *args, **kwargs):
    """A generation from an empty KV cache. llama.cpp's logits for a position depend on the batch that computes
    it (a whole prompt prefilled at once, or its last token recomputed alone after the engine reused the cached
    prefix), and a near-tie can flip: two generations compared token for token start from the same state."""
    engine.target.reset()
    return engine.generate(*args, **kwargs)


def test_greedy_is_deterministic(plain):
    a = plain.generate("Tell me about volcanoes.", temperature=0, max_new_tokens=32)
    b = plain.generate("Tell me about volcanoes.", temperature=0, max_new_tokens=32)
    assert a.tokens == b.tokens and a.text == b.text and a.num_tokens == 32


def test_prefill_in_one_call_equals_token_by_token(llama_smol):
    ids = llama_smol.tokenizer.encode("The quick brown fox jumps over the lazy dog because")
    llama_smol.reset()
    one = llama_smol.forward(ids).argmax(-1).tolist()
    llama_smol.reset()
    step = [int(llama_smol.forward([t]).argmax(-1)[0]) for t in ids]
    llama_smol.reset()
    assert one == step


def test_truncate_then_reforward_equals_fresh_forward(llama_smol):
    ids = llama_smol.tokenizer.encode("Rolling back a cache must not change what comes after it.")
    llama_smol.reset()
    llama_smol.forward(ids[:6])
    fresh = np.array(llama_smol.forward(ids[6:]))
    llama_smol.truncate(6)
    llama_smol.forward([1, 2, 3, 4, 5])  # garbage written over the rolled-back positions
    llama_smol.truncate(6)
    again = np.array(llama_smol.forward(ids[6:]))
    llama_smol.reset()
    np.testing.assert_allclose(again, fresh, atol=1e-4)


def test_sampling_with_a_seed_is_reproducible(plain):
    cfg = GenerationConfig(temperature=0.9, top_p=0.95, max_new_tokens=24, seed=7)
    a, b = plain.generate("Invent a name for a cat.", cfg), plain.generate("Invent a name for a cat.", cfg)
    c = plain.generate("Invent a name for a cat.", cfg.replace(seed=8))
    assert a.tokens == b.tokens and a.seed == 7
    assert a.tokens != c.tokens


@pytest.mark.parametrize("k", [1, 2, 4, 8, None])
def test_ngram_greedy_equals_plain(llama_smol, plain, k):
    spec = Engine.from_models(llama_smol, NgramProposer(1, 4))
    ref = cold(plain, CODE_PROMPT, temperature=0, max_new_tokens=64)
    out = cold(spec, CODE_PROMPT, temperature=0, max_new_tokens=64, k=k)
    assert out.tokens == ref.tokens
    if k:
        assert out.stats.spec_rounds > 0 and out.stats.num_accepted > 0


def test_eos_inside_the_accepted_draft_ends_the_output(llama_smol, plain):
    ref = cold(plain, "Say hello.", temperature=0, max_new_tokens=64)
    assert ref.finish_reason == "stop"  # the model ends by itself
    ids = plain.encode("Say hello.")
    spec = Engine.from_models(llama_smol, Oracle(len(ids), ref.tokens))  # the draft runs past the EOS
    out = cold(spec, "Say hello.", temperature=0, max_new_tokens=64, k=8)
    assert out.tokens == ref.tokens and out.finish_reason == "stop" and out.text == ref.text
    assert out.stats.num_accepted >= len(ref.tokens) - 1 - out.stats.spec_rounds


def test_budget_hit_mid_draft(llama_smol, plain):
    ref = cold(plain, CODE_PROMPT, temperature=0, max_new_tokens=64)
    spec = Engine.from_models(llama_smol, Oracle(len(plain.encode(CODE_PROMPT)), ref.tokens))
    out = cold(spec, CODE_PROMPT, temperature=0, max_new_tokens=11, k=8)
    assert out.tokens == ref.tokens[:11] and out.finish_reason == "length"


def test_context_limit_hit_mid_draft(smol_gguf):
    from ryzanstein.models.llamacpp import LlamaCppModel

    small = LlamaCppModel(smol_gguf, name="smollm2-135m", n_ctx=200, threads=2)  # llama.cpp allocates 256
    assert small.n_ctx == 200  # but the context holds what was asked for
    plain = Engine.from_models(small)
    ids = small.tokenizer.encode(CODE_PROMPT * 8)[:small.n_ctx - 21]
    ref = cold(plain, ids, temperature=0, max_new_tokens=200, ignore_eos=True)
    assert ref.finish_reason == "length" and len(ids) + ref.num_tokens == small.n_ctx + 1  # full + the last
    spec = Engine.from_models(small, Oracle(len(ids), ref.tokens))
    out = cold(spec, ids, temperature=0, max_new_tokens=200, k=8, ignore_eos=True)
    assert out.tokens == ref.tokens
    small.close()


def test_draft_failure_falls_back_to_plain_without_losing_a_token(llama_smol, plain):
    ref = cold(plain, CODE_PROMPT, temperature=0, max_new_tokens=64)
    failing = Failing(NgramProposer(1, 4), fail_at=3)
    out = cold(Engine.from_models(llama_smol, failing), CODE_PROMPT, temperature=0, max_new_tokens=64, k=4)
    assert out.tokens == ref.tokens
    assert "MemoryError" in out.stats.fallback and failing.calls == 3
    with pytest.raises(RyzansteinError, match="draft failing failed: MemoryError"):
        Engine.from_models(llama_smol, Failing(NgramProposer(1, 4))).generate(
            CODE_PROMPT, max_new_tokens=64, k=4, fallback="error")


def test_model_draft_reports_confidence_and_obeys_the_stop_rule(llama_smol, smol_gguf):
    from ryzanstein.models.llamacpp import LlamaCppModel
    from ryzanstein.speculative.proposers import ModelProposer

    draft = ModelProposer(LlamaCppModel(smol_gguf, n_ctx=512, threads=2))
    ctx = llama_smol.tokenizer.encode("One, two, three, four, five, six,")
    full = draft.propose(ctx, 6)
    assert len(full.tokens) == len(full.conf) == 6 and all(0 < c <= 1 for c in full.conf)
    seen = []
    cut = draft.propose(ctx, 6, stop=lambda conf: seen.append(list(conf)) or len(conf) >= 2)
    assert cut.tokens == full.tokens[:2] and seen == [full.conf[:1], full.conf[:2]]
    draft.model.close()


def test_a_model_draft_catches_up_only_with_what_its_cache_lacks(llama_smol, smol_gguf):
    """Proposer.uncached: the catch-up policy auto is told about is the prompt less what the draft's KV cache
    already holds (a conversation's next turn), never less than the last token, which is always fed."""
    from ryzanstein.models.llamacpp import LlamaCppModel
    from ryzanstein.speculative.proposers import ModelProposer, NgramProposer

    draft = ModelProposer(LlamaCppModel(smol_gguf, n_ctx=512, threads=2))
    turn1 = llama_smol.tokenizer.encode("One, two, three, four, five, six,")
    assert draft.uncached(turn1) == len(turn1) and NgramProposer().uncached(turn1) == 0
    drafted = draft.propose(turn1, 3).tokens  # the draft's cache now holds turn1 and its drafts but the last
    assert draft.uncached(turn1 + drafted) == 1  # drafts it made are in its cache too
    turn2 = turn1 + [drafted[0] + 1, 11, 12]  # a turn that leaves the drafts at once
    assert draft.uncached(turn2) == len(turn2) - len(turn1)
    assert draft.uncached(turn1) == 1
    assert draft.uncached([7] + turn1) == len(turn1) + 1  # another prefix: nothing is reused
    draft.model.close()


def test_stop_strings_and_streaming(plain):
    gen = plain.stream("List three fruits, one per line.", temperature=0, max_new_tokens=48, stop=("\n",))
    pieces = list(gen)
    res = gen.result
    assert "".join(pieces) == res.text and "\n" not in res.text
    assert res.finish_reason == "stop"
    full = plain.generate("List three fruits, one per line.", temperature=0, max_new_tokens=48)
    assert full.text.startswith(res.text) and full.text[len(res.text)] == "\n"


def test_a_halted_generation_ends_after_the_round_in_progress(plain):
    """halt() (Ctrl-C in `ryzanstein chat`) ends a generation after the round in progress, from any thread,
    whether or not that round showed text (a stop id generated with ignore_eos shows none)."""
    cfg = dict(temperature=0, max_new_tokens=200, ignore_eos=True)
    plain.target.reset()
    gen = plain.stream("Count from 1 to 100, one number per line.", **cfg)
    pieces = gen.pieces()
    gen.halt()
    list(pieces)
    res = gen.result
    assert res.finish_reason == "cancelled" and res.num_tokens == 1  # the prefill's token, then the halt
    again = cold(plain, "Count from 1 to 100, one number per line.", **cfg)
    assert again.finish_reason == "length" and again.num_tokens == 200 and again.text.startswith(res.text)


def test_streaming_never_emits_broken_utf8(plain):
    gen = plain.stream("Write the word café, the word naïve and three emoji.", max_new_tokens=40,
                       temperature=1.0, seed=3)
    pieces = list(gen)
    assert pieces and all("\ufffd" not in p for p in pieces[:-1])
    assert "".join(pieces) == gen.result.text


def test_chat_template_is_applied_unless_no_chat(plain):
    with_chat = plain.encode("Hello")
    raw = plain.encode("Hello", chat=False)
    assert len(with_chat) > len(raw) + 5
    assert plain.target.tokenizer.decode(with_chat).startswith("<|im_start|>")


def test_prompt_longer_than_context_is_refused(plain):
    with pytest.raises(RyzansteinError, match=r"the prompt is \d+ tokens but the context holds 1024"):
        plain.generate("word " * 2000)


def test_prefix_cache_reuse_keeps_output_identical(plain):
    a = plain.generate("Explain rain in one sentence.", temperature=0, max_new_tokens=20)
    b = plain.generate("Explain rain in one sentence.", temperature=0, max_new_tokens=20)
    assert b.stats.cached_prompt_tokens == b.prompt_tokens - 1 and a.tokens == b.tokens


def test_logprobs_come_from_the_verify_rows_without_extra_forwards(llama_smol, plain):
    """Every emitted token's distribution is a row of a forward the loop made anyway (prefill or verify)."""
    ref = plain.generate(CODE_PROMPT, temperature=0, max_new_tokens=32, logprobs=3)
    engine = Engine.from_models(llama_smol, NgramProposer(1, 4))
    without = engine.generate(CODE_PROMPT, temperature=0, max_new_tokens=32, k=4)
    spec = engine.generate(CODE_PROMPT, temperature=0, max_new_tokens=32, k=4, logprobs=3)
    assert spec.tokens == ref.tokens == without.tokens and spec.stats.spec_rounds > 0
    assert spec.stats.rounds == without.stats.rounds  # the same forwards, logprobs or not
    assert without.logprobs is None and [e.token for e in spec.logprobs] == spec.tokens[:len(spec.logprobs)]
    stops = llama_smol.tokenizer.special.stop_ids
    assert len(spec.logprobs) == len([t for t in spec.tokens if t not in stops])
    for a, b in zip(ref.logprobs, spec.logprobs):
        assert len(a.top) == 3 and a.top[0][0] == a.token and a.top[0][1] == a.logprob <= 0  # greedy: the argmax
        assert abs(a.logprob - b.logprob) < 0.5  # batched vs one-token kernels differ a little
    sampled = plain.generate(CODE_PROMPT, max_new_tokens=8, logprobs=0, seed=1)
    assert all(e.top == [] and e.logprob <= 0 for e in sampled.logprobs)
