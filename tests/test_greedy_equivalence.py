"""Greedy equivalence on the exact backend: with temperature 0, speculative output is token for token the
target's plain greedy output, for every proposer and K. PyTorch fp32, SmolLM2-135M, 4 prompts x 32 tokens.

Also: both backends agree on greedy continuations of the same weights (llama.cpp's Q4 kernels vs the
dequantized fp32 reference: they may part at near-ties, so the agreement rate is reported and bounded
loosely), and `auto` keeps greedy equivalence.
"""
import json

import pytest

from ryzanstein import Engine, GenerationConfig
from ryzanstein.speculative.proposers import ModelProposer, NgramProposer

PROMPTS = [
    "Write a Python function that returns the n-th Fibonacci number.",
    "Rewrite this so it uses a list comprehension:\nresult = []\nfor x in items:\n    if x > 0:\n"
    "        result.append(x * 2)\nreturn result",
    "Summarize: The city council voted on Tuesday to expand the bike lane network by 40 kilometres over "
    "the next three years, citing a rise in cycling since 2020.",
    "Tell me a short story about a lighthouse keeper.",
]
N_NEW = 32
CFG = GenerationConfig(max_new_tokens=N_NEW, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def plain_outputs(torch_smol):
    eng = Engine.from_models(torch_smol)
    return [eng.generate(p, CFG).tokens for p in PROMPTS]


PROPOSERS = {
    "target-itself": lambda t: ModelProposer(t.truncated(t.info.n_layers), name="target-itself", owns_weights=False),
    "self:4": lambda t: ModelProposer(t.truncated(4), name="self:4", owns_weights=False),
    "ngram": lambda t: NgramProposer(1, 4),
}


# every proposer, and K from one draft to the most, on the exact fp32 backend; the native tests run every K with
# every drafter (the torch self-draft is the slowest here: one K)
@pytest.mark.parametrize("proposer,k", [("target-itself", 1), ("target-itself", 8), ("self:4", 3), ("ngram", 1),
                                        ("ngram", 3), ("ngram", 8)])
def test_speculative_greedy_equals_plain(torch_smol, plain_outputs, proposer, k):
    eng = Engine.from_models(torch_smol, PROPOSERS[proposer](torch_smol))
    drafted = 0
    for prompt, ref in zip(PROMPTS, plain_outputs):
        out = eng.generate(prompt, CFG.replace(k=k))
        assert len(out.tokens) == N_NEW
        assert out.tokens == ref, f"{proposer} k={k} diverged on {prompt[:30]!r}"
        drafted += out.stats.num_draft_tokens
        if proposer == "target-itself":  # a perfect draft: everything is accepted
            assert out.stats.acceptance_rate == 1.0
    assert drafted > 0


def test_auto_policy_keeps_greedy_equivalence(torch_smol, plain_outputs):
    eng = Engine.from_models(torch_smol, NgramProposer(1, 4))
    for prompt, ref in zip(PROMPTS[:2], plain_outputs[:2]):
        assert eng.generate(prompt, CFG).tokens == ref  # policy auto is the default


def test_auto_with_a_model_draft_keeps_greedy_equivalence(torch_smol, plain_outputs, tmp_path):
    # a flat cost profile (a GPU's, say) so that auto drafts with the model and cuts drafts by confidence
    from ryzanstein.config import LoadConfig

    prof = tmp_path / "flat.json"
    prof.write_text(json.dumps({"v_s": [0.01 * (1 + 0.02 * i) for i in range(16)], "draft_ratio": 0.05}))
    eng = Engine.from_models(torch_smol, PROPOSERS["self:4"](torch_smol), LoadConfig(cost_profile=str(prof)))
    lengths = []
    for prompt, ref in zip(PROMPTS[:3], plain_outputs[:3]):
        out = eng.generate(prompt, CFG)
        assert out.tokens == ref
        lengths += [k for k in out.stats.k_per_round if k]
    # the draft asked for k_max = 8 and cut itself short (by confidence and the measured costs), every time
    assert lengths and max(lengths) < 8


def test_backends_agree_on_greedy_continuations(torch_smol, llama_smol):
    cfg = GenerationConfig(max_new_tokens=24, temperature=0.0, ignore_eos=True)
    t, l = Engine.from_models(torch_smol), Engine.from_models(llama_smol)
    agree = total = 0
    for prompt in PROMPTS:
        assert t.encode(prompt) == l.encode(prompt)  # same tokenizer on both sides
        a, b = t.generate(prompt, cfg).tokens, l.generate(prompt, cfg).tokens
        n = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
        agree += n
        total += len(a)
    rate = agree / total
    print(f"torch fp32 vs llama.cpp Q4_1: {rate:.0%} of greedy tokens agree before the first divergence")
    assert rate >= 0.3  # Q4 kernels vs dequantized fp32 part at near-ties; a broken backend agrees on ~0
