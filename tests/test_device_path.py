"""The torch backend's device path, through the same code on any device: RYZANSTEIN_TEST_DEVICE (cpu here;
benchmarks/gpu_check.py runs this file with cuda on a GPU machine).

What a GPU needs from the decode loop: logits stay where the backend computed them, a greedy step brings back
only token ids (each forward's rows reduced once on the device, never copied whole), sampling copies back the
rows it samples from and nothing else, and the device-side reductions give the host's answers. Models here are
tiny random-weight Llamas (2 layers, SmolLM2's tokenizer and vocabulary), so the file runs in seconds.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ryzanstein import Engine, GenerationConfig
from ryzanstein.errors import ConfigError
from ryzanstein.models.base import Logits
from ryzanstein.models.torch_model import ModelArgs, TorchLogits, TorchModel
from ryzanstein.speculative.costs import measure
from ryzanstein.speculative.proposers import Draft, ModelProposer, Proposer

TINY = ModelArgs(model_type="llama", vocab_size=49152, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16,
                 hidden_dim=128, norm_eps=1e-5, rope_theta=10000.0, n_ctx_train=512, qkv_bias=False, o_bias=False,
                 tie_embeddings=False)
PROMPT = [5, 17, 300, 4000, 42, 9, 1234, 77]
TEST_DEVICE = os.environ.get("RYZANSTEIN_TEST_DEVICE", "cpu")  # as conftest.py reads it


class Oracle(Proposer):
    """A model-free draft that knows plain decoding's continuation but gets every 5th token wrong."""

    name = "oracle"

    def __init__(self, prompt_len: int, continuation: list[int]) -> None:
        self.prompt_len = prompt_len
        self.cont = [7 if i % 5 == 4 else t for i, t in enumerate(continuation)] + [7] * 16

    def propose(self, context, k, stop=None, catch_up=None):
        done = len(context) - self.prompt_len
        return Draft(self.cont[done:done + k])


def tiny(tokenizer, dtype="float32", device=TEST_DEVICE) -> TorchModel:
    # std 0.25: logits spread over a few units, so top-k picks are distinct and a 1-layer draft disagrees often
    return TorchModel.random(TINY, tokenizer, name=f"tiny-{dtype}", n_ctx=512, dtype=dtype, device=device, std=0.25)


@pytest.fixture(scope="module")
def tokenizer(torch_smol):
    return torch_smol.tokenizer


@pytest.fixture(scope="module")
def model(tokenizer):
    return tiny(tokenizer)


@pytest.fixture()
def transfers(monkeypatch):
    """Counts, per kind, what crosses from the torch backend's logits to the host (numpy: the rows' copies)."""
    counts = {"score": 0, "argmax": 0, "top": 0, "numpy": 0}

    def counting(name, fn):
        def wrapper(*a, **kw):
            if name != "numpy" or a[0]._host is None:  # numpy(): a copy only the first time it is asked
                counts[name] += 1
            return fn(*a, **kw)
        return wrapper

    monkeypatch.setattr(TorchModel, "_score", counting("score", TorchModel._score))
    for name in ("argmax", "top", "numpy"):
        monkeypatch.setattr(TorchLogits, name, counting(name, getattr(TorchLogits, name)))
    return counts


def test_logits_stay_on_the_models_device(model):
    model.reset()
    logits = model.score(PROMPT)
    assert isinstance(logits, TorchLogits) and len(logits) == len(PROMPT)
    assert logits.rows.device == model.device == model.cache.k.device == model._cos.device
    assert all(p.device == model.device for p in model.net.parameters())
    host = model.forward([3])  # forward() is score() brought to the host
    assert isinstance(host, np.ndarray) and host.dtype == np.float32 and host.shape == (1, TINY.vocab_size)
    model.reset()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_device_reductions_equal_the_hosts(tokenizer, dtype):
    m = tiny(tokenizer, dtype)
    rows = m.score(PROMPT).rows  # (T, V) in the model's dtype, where the model keeps it
    ties = torch.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [-1.0, -5.0, -1.0, 7.0]]).to(rows)
    for r in (rows, ties):
        dev, host = TorchLogits(r), Logits(r.float().cpu().numpy())
        assert dev.argmax() == host.argmax()
        (ids_d, p_d), (ids_h, p_h) = dev.top(), host.top()
        assert ids_d == ids_h == host.argmax()
        np.testing.assert_allclose(p_d, p_h, rtol=1e-5)
        np.testing.assert_array_equal(dev.numpy(), host.numpy())
    assert TorchLogits(ties).argmax() == [1, 0, 3]  # the lowest id on a tie, as numpy's argmax


def plain_greedy(model, prompt, n) -> list[int]:
    eng = Engine.from_models(model)
    eng.reset()
    return eng.generate(prompt, GenerationConfig(max_new_tokens=n, temperature=0.0, ignore_eos=True)).tokens


def proposer_for(draft, model, prompt, n):
    if draft == "oracle":
        return Oracle(len(prompt), plain_greedy(model, prompt, n))
    if draft.startswith("self:"):  # self:2 is the target itself: a perfect draft
        return ModelProposer(model.truncated(int(draft[5:])), name=draft, owns_weights=False)
    return None


@pytest.mark.parametrize("draft", ["none", "oracle", "self:1"])
def test_greedy_brings_back_ids_only(model, draft, request):
    proposer = proposer_for(draft, model, PROMPT, 24)
    transfers = request.getfixturevalue("transfers")  # counted from here on
    eng = Engine.from_models(model, proposer)
    eng.reset()
    out = eng.generate(PROMPT, GenerationConfig(max_new_tokens=24, temperature=0.0, k=3, ignore_eos=True))
    assert out.num_tokens == 24
    if draft != "none":
        assert out.stats.num_draft_tokens > 0
    assert transfers["numpy"] == 0  # no full-vocabulary copy, ever
    assert transfers["argmax"] + transfers["top"] == transfers["score"]  # one reduction per forward, no more
    assert transfers["argmax"] == out.stats.rounds + 1  # the target's: prefill + one per round
    assert (transfers["top"] > 0) == (draft == "self:1")  # a draft model's: one per drafted token


def test_sampling_copies_the_rows_it_samples_from(model, transfers):
    eng = Engine.from_models(model, ModelProposer(model.truncated(1), name="self:1", owns_weights=False))
    eng.reset()
    out = eng.generate(PROMPT, GenerationConfig(max_new_tokens=16, temperature=1.0, top_k=3, k=2, seed=3,
                                                ignore_eos=True))
    assert out.num_tokens == 16 and out.stats.num_draft_tokens > 0
    assert transfers["numpy"] == transfers["score"] and transfers["argmax"] == transfers["top"] == 0


def test_logprobs_bring_the_rows_back_once_and_only_when_asked(model, transfers):
    eng = Engine.from_models(model)
    eng.reset()
    out = eng.generate(PROMPT, GenerationConfig(max_new_tokens=8, temperature=1.0, seed=1, logprobs=2,
                                                ignore_eos=True))
    assert len(out.logprobs) == 8 and all(len(e.top) == 2 for e in out.logprobs)
    # each forward's rows cross once, for sampling and logprobs together (host logits give the same figures)
    assert transfers["numpy"] == transfers["score"] == out.stats.rounds + 1


def test_the_cost_profile_is_timed_through_the_argmax(model, transfers):
    prof = measure(model, context=16, reps=1, quiet=True)
    assert len(prof.v_s) == 16 and all(v > 0 for v in prof.v_s)
    assert transfers["numpy"] == 0 and transfers["argmax"] == transfers["score"]
    assert prof.key["device"] == TEST_DEVICE and model.pos == 0


@pytest.mark.parametrize("draft", ["oracle", "self:1", "self:2"])
def test_greedy_speculation_equals_plain_on_this_device(model, draft):
    ref = plain_greedy(model, PROMPT, 32)
    for k in (1, 4):
        eng = Engine.from_models(model, proposer_for(draft, model, PROMPT, 32))
        eng.reset()
        out = eng.generate(PROMPT, GenerationConfig(max_new_tokens=32, temperature=0.0, k=k, ignore_eos=True))
        assert out.tokens == ref, (draft, k)
        assert out.stats.num_draft_tokens > 0 and (out.stats.num_accepted > 0 or draft == "self:1")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this torch sees a GPU")
def test_a_missing_gpu_is_one_clear_line(tokenizer, smol_gguf):
    with pytest.raises(ConfigError, match="sees no CUDA GPU; use --device cpu"):
        tiny(tokenizer, device="cuda")
    p = subprocess.run([sys.executable, "-m", "ryzanstein.cli", "generate", "hi", "--backend", "torch",
                        "--device", "cuda"], capture_output=True, text=True, timeout=300)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert p.returncode == 2 and len(lines) == 1 and "sees no CUDA GPU" in lines[0], p.stderr
