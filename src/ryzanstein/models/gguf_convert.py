"""Convert a llama / qwen2 GGUF into a Hugging Face style folder, once, for the torch backend.

Weights are dequantized with the `gguf` package into float32 (or bfloat16) safetensors under the Hugging Face
tensor names. Tokenizer files come from transformers' GGUF tokenizer conversion, then corrected from the GGUF
metadata, which we trust over transformers: special ids (SmolLM2's GGUF says EOS is id 2 `<|im_end|>`), the
chat template, and the pre-tokenizer where transformers has no rule for it.

Everything is written to a temporary folder that is renamed into place at the end, so a folder that exists is
complete: the caller can treat `out_folder/config.json` as "already converted".
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tokenizers
import torch
from safetensors.torch import save_file

from ..config import DTYPES
from ..errors import RyzansteinError

ARCHS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}

# GGUF tensor names -> Hugging Face names (llama and qwen2 use the same ones).
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}

# Pre-tokenizers (tokenizer.ggml.pre) that transformers' GGUF conversion does not reproduce. llama.cpp splits
# SmolLM digits one by one ("\p{N}" before the GPT-2 regex), as the original tokenizer.json does.
_PRE_TOKENIZERS = {
    "smollm": lambda pt: pt.Sequence([pt.Digits(individual_digits=True), pt.ByteLevel(add_prefix_space=False)]),
}


def hf_name(gguf_name: str) -> str:
    """Hugging Face name of a GGUF tensor: blk.3.attn_q.weight -> model.layers.3.self_attn.q_proj.weight."""
    base, suffix = gguf_name.rsplit(".", 1)  # suffix: weight | bias
    try:
        if base.startswith("blk."):
            _, layer, part = base.split(".", 2)
            return f"model.layers.{int(layer)}.{_LAYER_NAMES[part]}.{suffix}"
        return f"{_GLOBAL_NAMES[base]}.{suffix}"
    except (KeyError, ValueError):
        raise RyzansteinError(f"unsupported tensor {gguf_name!r} in the GGUF; the torch backend reads llama/qwen2") from None


def unpermute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved RoPE pairs -> Hugging Face rotate-half halves).

    llama.cpp's converter did `w.reshape(n_head, 2, d // n_head // 2, *rest).swapaxes(1, 2).reshape(w.shape)`.
    """
    d = w.shape[0]
    return w.reshape(n_head, d // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def convert_gguf(gguf_path: str | Path, out_folder: str | Path, *, dtype: str = "float32",
                 shard_bytes: int = 2 << 30) -> Path:
    """Make (once) an HF-style folder from a GGUF; returns `out_folder`. Reuses it if it is already there."""
    import gguf  # ~0.2 s to import: only when converting

    gguf_path, out = Path(gguf_path), Path(out_folder)
    if (out / "config.json").is_file():
        return out
    if dtype not in DTYPES:
        raise RyzansteinError(f"dtype {dtype!r} not supported for conversion; use one of {', '.join(DTYPES)}")
    if not gguf_path.is_file():
        raise RyzansteinError(f"GGUF file not found: {gguf_path}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the renamed folder is an ordinary cache entry
    try:
        reader = _reader(gguf, gguf_path)
        config = _hf_config(reader, dtype)
        _write_weights(reader, config, tmp, getattr(torch, dtype), shard_bytes)
        _write_tokenizer(gguf_path, reader, config, tmp)
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        try:
            os.rename(tmp, out)  # atomic; replaces `out` only if it is an empty folder
        except OSError:
            if not (out / "config.json").is_file():  # not a concurrent converter that finished first
                raise RyzansteinError(f"cannot write the converted model to {out}: remove that folder and retry")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _reader(gguf, path: Path):
    """A GGUFReader over a file whose every tensor lies inside it; one line saying so if it is cut short."""
    corrupt = f"{path} is truncated or corrupt"
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, IndexError, KeyError, OSError) as e:  # what a damaged header raises in gguf's parser
        raise RyzansteinError(f"{corrupt} ({type(e).__name__}: {e}): download it again") from None
    size = path.stat().st_size
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size:
            raise RyzansteinError(f"{corrupt}: tensor {t.name} ends at byte {t.data_offset + t.n_bytes}, the "
                                  f"file has {size}: download it again")
    return reader


def _field(reader, key: str, default=KeyError):
    """One metadata value, decoded (str, number, or list)."""
    field = reader.fields.get(key)
    if field is None:
        if default is KeyError:
            raise RyzansteinError(f"GGUF metadata lacks {key!r}; cannot convert this file")
        return default
    return field.contents()


def _f32(x: float) -> float:
    """A float32 metadata value as the decimal it was written from (9.99999975e-06 -> 1e-05)."""
    return float(str(np.float32(x)))


def _hf_config(reader, dtype: str) -> dict:
    """config.json for the model the GGUF describes."""
    arch = _field(reader, "general.architecture")
    if arch not in ARCHS:
        raise RyzansteinError(f"GGUF architecture {arch!r} is not supported by the torch backend; use llama or qwen2")
    names = {t.name: t for t in reader.tensors}
    scaling = _field(reader, f"{arch}.rope.scaling.type", None)
    if scaling not in (None, "none") or "rope_freqs.weight" in names:
        raise RyzansteinError(f"RoPE scaling ({scaling or 'rope_freqs'}) is not supported by the torch backend")
    n_head = int(_field(reader, f"{arch}.attention.head_count"))
    config = {
        "architectures": [ARCHS[arch]],
        "model_type": arch,
        "vocab_size": int(names["token_embd.weight"].shape[1]),  # GGUF shapes are (in, out): ne0 first
        "hidden_size": int(_field(reader, f"{arch}.embedding_length")),
        "intermediate_size": int(_field(reader, f"{arch}.feed_forward_length")),
        "num_hidden_layers": int(_field(reader, f"{arch}.block_count")),
        "num_attention_heads": n_head,
        "num_key_value_heads": int(_field(reader, f"{arch}.attention.head_count_kv", n_head)),
        "rms_norm_eps": _f32(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon")),
        "rope_theta": _f32(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
        "max_position_embeddings": int(_field(reader, f"{arch}.context_length")),
        "tie_word_embeddings": "output.weight" not in names,
        "hidden_act": "silu",
        "torch_dtype": dtype,
    }
    head_dim = _field(reader, f"{arch}.attention.key_length", None)
    if head_dim is not None:
        config["head_dim"] = int(head_dim)
    if arch == "llama":
        config["attention_bias"] = "blk.0.attn_q.bias" in names
    else:
        config["use_sliding_window"] = False
    bos, eos = _field(reader, "tokenizer.ggml.bos_token_id", None), _field(reader, "tokenizer.ggml.eos_token_id", None)
    config["bos_token_id"], config["eos_token_id"] = bos, eos
    return config


def _write_weights(reader, config: dict, folder: Path, dtype: torch.dtype, shard_bytes: int) -> None:
    """Dequantize every tensor into safetensors shards of about `shard_bytes` (one model.safetensors if small).

    Shards keep the peak memory near one shard, not the whole model (a 1.5B model is 6 GB in float32).
    """
    from gguf.quants import dequantize  # as above: only when converting

    n_head, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    permuted = {"attn_q": n_head, "attn_k": n_kv} if config["model_type"] == "llama" else {}
    weight_map: dict[str, str] = {}  # HF name -> shard file
    current: dict[str, torch.Tensor] = {}

    def flush() -> None:
        filename = f"model-{len(set(weight_map.values())) + 1:05d}.safetensors"
        save_file(current, str(folder / filename), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(current, filename))
        current.clear()

    for t in reader.tensors:
        name = hf_name(t.name)
        shape = [int(x) for x in reversed(t.shape)]  # GGUF lists ne0 (the input dim) first
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
        part = t.name.split(".")[2] if t.name.startswith("blk.") else ""
        if part in permuted:
            w = unpermute_rope(w, permuted[part])
        tensor = torch.tensor(w, dtype=dtype)  # copies: `w` may be a read-only view of the mapped file
        if current and sum(x.nbytes for x in current.values()) + tensor.nbytes > shard_bytes:
            flush()
        current[name] = tensor
    flush()

    files = sorted(set(weight_map.values()))
    if len(files) == 1:
        os.rename(folder / files[0], folder / "model.safetensors")
    else:
        index = {"metadata": {}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")


def _write_tokenizer(gguf_path: Path, reader, config: dict, folder: Path) -> None:
    """tokenizer.json + tokenizer_config.json + generation_config.json, special ids taken from the GGUF."""
    from transformers import AutoTokenizer  # seconds to import: only when converting

    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, local_files_only=True)
    tok.save_pretrained(str(folder))

    fast = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    pre = _PRE_TOKENIZERS.get(_field(reader, "tokenizer.ggml.pre", None))
    if pre is not None:
        fast.pre_tokenizer = pre(tokenizers.pre_tokenizers)
        fast.save(str(folder / "tokenizer.json"))

    bos, eos = config["bos_token_id"], config["eos_token_id"]
    eot = _field(reader, "tokenizer.ggml.eot_token_id", None)
    stop = [i for i in dict.fromkeys([eos, eot]) if i is not None]  # ordered, no duplicates
    tok_cfg_path = folder / "tokenizer_config.json"
    tok_cfg = json.loads(tok_cfg_path.read_text())
    for key in ("is_local", "local_files_only"):  # load-time arguments transformers saved along
        tok_cfg.pop(key, None)
    if bos is not None:
        tok_cfg["bos_token"] = fast.id_to_token(bos)
    if eos is not None:
        tok_cfg["eos_token"] = fast.id_to_token(eos)
    tok_cfg["add_bos_token"] = bool(_field(reader, "tokenizer.ggml.add_bos_token", False))
    template = _field(reader, "tokenizer.chat_template", None)
    if template is not None:
        tok_cfg["chat_template"] = template
        (folder / "chat_template.jinja").unlink(missing_ok=True)  # one copy of the template, not two
    tok_cfg_path.write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False) + "\n")

    gen_cfg = {"bos_token_id": bos, "eos_token_id": stop if len(stop) > 1 else eos}
    (folder / "generation_config.json").write_text(json.dumps(gen_cfg, indent=2) + "\n")
