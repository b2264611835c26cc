"""Continuous batching (batching.py) on the native backend with SmolLM2: one forward over several KV caches gives
each row the bits it gets alone, and every answer a batch gives is the one its request gets alone, with any
drafter, while requests join, leave, are cancelled and prefill long prompts in chunks."""
import threading

import numpy as np
import pytest

from ryzanstein import Engine, GenerationConfig
from ryzanstein.errors import RyzansteinError
from ryzanstein.models.native import NativeModel

PROMPTS = ["Write a haiku about the sea.", "def fib(n):", "List three differences between TCP and UDP.",
           "Translate into French: the library opens at nine and closes at six.",
           "What is the capital of France? Answer in one word.",
           "Explain, step by step, how a hash map resolves collisions."]
GREEDY = GenerationConfig(max_new_tokens=24, temperature=0)


@pytest.fixture(scope="module")
def target(smol_gguf):
    from ryzanstein.models import load_model

    return load_model("smollm2-135m", backend="native", threads=2, n_ctx=512)


@pytest.mark.parametrize("isa,threads", [(None, 2), (None, 1), ("c", 2)])
def test_a_batched_forward_gives_each_row_its_bits_alone(smol_gguf, isa, threads):
    model = NativeModel(smol_gguf, n_ctx=512, threads=threads, isa=isa)
    rng = np.random.default_rng(0)
    # 70, 130 (66 on the portable C path, 20x slower): prompts over several passes of 64 rows
    lengths = (70, 5, 130, 1) if isa is None else (66, 5, 9, 1)
    prompts = [rng.integers(0, 40000, n).astype(np.int32) for n in lengths]
    nexts = [rng.integers(0, 40000, n).astype(np.int32) for n in (3, 1, 9, 4)]
    alone = []
    for p, t in zip(prompts, nexts):
        m = model.new_context()
        last = np.array(m.forward(p.tolist(), last_only=True))
        alone.append((last, np.array(m.forward(t.tolist()))))
    ctxs = [model.new_context() for _ in prompts]
    out = NativeModel.forward_batch([(c, p, 0, 1) for c, p in zip(ctxs, prompts)])
    assert all(np.array_equal(out[i], alone[i][0][0]) for i in range(len(prompts)))
    out = NativeModel.forward_batch([(c, t, len(p), len(t)) for c, p, t in zip(ctxs, prompts, nexts)])
    rows = np.cumsum([0] + [len(t) for t in nexts])
    assert all(np.array_equal(out[rows[i]:rows[i + 1]], alone[i][1]) for i in range(len(prompts)))
    # a sequence that asks for no logits (a prompt's earlier chunk) beside one that does
    out = NativeModel.forward_batch([(ctxs[0], nexts[0], 80, 0), (ctxs[1], nexts[1], 10, 1)])
    assert out.shape == (1, model.vocab_size) and np.isfinite(out).any()
    with pytest.raises(RyzansteinError, match="outside"):
        NativeModel.forward_batch([(ctxs[0], nexts[0], 511, 3)])


def engine(target, draft: str) -> Engine:
    from ryzanstein.speculative.proposers import ModelProposer, NgramProposer

    if draft == "ngram":
        return Engine.from_models(target, NgramProposer())
    return Engine.from_models(target, ModelProposer(target.truncated(10), name="self:10", owns_weights=False))


@pytest.mark.parametrize("draft", ["ngram", "self:10"])
def test_greedy_answers_in_a_batch_are_the_answers_alone(target, draft):
    eng = engine(target, draft)
    alone = [eng.generate(p, GREEDY).tokens for p in PROMPTS]
    with eng.batcher(4) as b:  # 6 requests on 4 slots: two wait, then join as others leave
        got = [r.tokens for r in b.generate(PROMPTS, GREEDY)]
        assert b.stats()["steps"] > 0
    assert got == alone


def test_an_untrained_head_drafts_in_a_batch_and_output_is_unchanged(target, tmp_path):
    from ryzanstein.distill.fit import write_untrained_head
    from ryzanstein.models.head import DraftHead
    from ryzanstein.speculative.proposers import HeadProposer

    path = write_untrained_head(target, tmp_path / "head.gguf", draft_vocab=2048, seed=3)
    target.capture([])
    plain = [Engine.from_models(target).generate(p, GREEDY).tokens for p in PROMPTS[:4]]
    eng = Engine.from_models(target, HeadProposer(DraftHead(path, target), target))
    cfg = GREEDY.replace(policy="fixed", k=3)
    with eng.batcher(4) as b:
        results = b.generate(PROMPTS[:4], cfg)
    assert [r.tokens for r in results] == plain
    assert all(r.stats.spec_rounds > 0 for r in results)
    target.capture([])


def test_a_seeded_sample_is_the_same_in_a_batch(target):
    eng = engine(target, "ngram")
    cfg = GenerationConfig(max_new_tokens=24, temperature=0.8, top_p=0.95, seed=11)
    alone = [eng.generate(p, cfg).tokens for p in PROMPTS[:4]]
    assert [r.tokens for r in eng.generate_batch(PROMPTS[:4], cfg, parallel=4)] == alone


def test_a_long_prompt_is_prefilled_in_chunks_beside_the_others(target):
    eng = Engine.from_models(target)
    long_prompt = " ".join(f"Item {i}: the {i}th line of a long list of facts." for i in range(24))
    prompts = [PROMPTS[0], long_prompt + " Which item comes after item 7?", PROMPTS[1]]
    assert len(eng.encode(prompts[1])) > 250  # several steps of max_rows
    alone = [eng.generate(p, GREEDY).tokens for p in prompts]
    with eng.batcher(3, max_rows=32) as b:
        got = [r.tokens for r in b.generate(prompts, GREEDY)]
        assert b.stats()["steps"] > 250 // 32
    assert got == alone


def test_a_cancelled_request_frees_its_slot_and_streams_stop(target):
    eng = Engine.from_models(target)
    with eng.batcher(1) as b:
        first = b.submit(PROMPTS[5], GenerationConfig(max_new_tokens=200, temperature=0, ignore_eos=True))
        pieces = iter(first)
        next(pieces)
        first.cancel()
        rest = list(pieces)
        assert len(rest) < 10 and first.result is None
        second = b.submit(PROMPTS[1], GREEDY).run()  # the one slot serves the next request
    assert second.tokens == eng.generate(PROMPTS[1], GREEDY).tokens


def test_concurrent_submitters_each_get_their_own_answer(target):
    eng = Engine.from_models(target)  # no drafter: plain steps of several sequences
    alone = {p: eng.generate(p, GREEDY).tokens for p in PROMPTS}
    got = {}
    with eng.batcher(3) as b:
        def client(p):
            got[p] = b.submit(p, GREEDY).run().tokens
        threads = [threading.Thread(target=client, args=(p,)) for p in PROMPTS]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert got == alone


def test_batching_needs_the_native_backend(torch_smol):
    eng = Engine.from_models(torch_smol)
    with pytest.raises(RyzansteinError, match="native backend"):
        eng.batcher(2)
