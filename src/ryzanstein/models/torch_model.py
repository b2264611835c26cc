"""PyTorch backend: our own compact Llama / Qwen2, the fp32 reference for exactness tests and the GPU path.

Reads a Hugging Face style folder (config.json + *.safetensors, sharded or not). One sequence, so there is no
batch dimension: activations are (T, ...) for the T new tokens of a forward.
Qwen2 is Llama plus a bias on the q/k/v projections.

References: gpt-fast model.py (a KV cache preallocated to n_ctx and indexed by position, so a rollback is a
position move), nanoGPT model.py (one readable file, shape comments), transformers' modeling_llama.py (the
numerics we match: RMSNorm in float32, rotate-half RoPE with float32 tables cast to the model dtype).

`TorchModel.truncated(n)` is a self-draft: the first n blocks + the final norm + lm_head of the same weights,
with its own KV cache.

On a GPU (device="cuda") the weights, the KV cache, the RoPE tables and the logits stay on the device. `score`
returns `TorchLogits`: greedy decoding reduces each row to its argmax there and copies back n ids, the one host
synchronisation of a step (it is also where a step's time ends, so timing needs no explicit synchronise);
sampling copies back the rows it samples from. The only host-to-device copy is the new token ids, issued
non-blocking. The same code runs on device="cpu", which is how the tests exercise it.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from torch import nn

from ..config import DEVICES, DTYPES
from ..errors import ConfigError, ModelNotFound, RyzansteinError
from .base import Logits, MemoryUse, Model, ModelInfo, Tokenizer
from .hf_tokenizer import HFTokenizer

SUPPORTED = ("llama", "qwen2")


@dataclass(frozen=True)
class ModelArgs:
    """The architecture, read from config.json."""

    model_type: str
    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    hidden_dim: int
    norm_eps: float
    rope_theta: float
    n_ctx_train: int
    qkv_bias: bool
    o_bias: bool
    tie_embeddings: bool

    @classmethod
    def from_config(cls, cfg: dict) -> ModelArgs:
        kind = cfg.get("model_type")
        if kind not in SUPPORTED:
            raise RyzansteinError(f"model_type {kind!r} is not supported by the torch backend; use {' or '.join(SUPPORTED)}")
        # transformers < 5 writes rope_theta + rope_scaling; 5 writes rope_parameters {rope_type, rope_theta}.
        scaling = cfg.get("rope_scaling") or {}
        params = cfg.get("rope_parameters") or {}
        rope_type = scaling.get("rope_type", scaling.get("type")) or params.get("rope_type", "default")
        if rope_type != "default":
            raise RyzansteinError(f"rope scaling {rope_type!r} is not supported by the torch backend")
        if cfg.get("mlp_bias") or cfg.get("use_sliding_window") or cfg.get("hidden_act", "silu") != "silu":
            raise RyzansteinError("mlp_bias, sliding-window attention and non-SiLU MLPs are not supported by the torch backend")
        n_heads = cfg["num_attention_heads"]
        attention_bias = bool(cfg.get("attention_bias", False))  # Llama: bias on q, k, v and o
        return cls(
            model_type=kind,
            vocab_size=cfg["vocab_size"],
            dim=cfg["hidden_size"],
            n_layers=cfg["num_hidden_layers"],
            n_heads=n_heads,
            n_kv_heads=cfg.get("num_key_value_heads") or n_heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // n_heads,
            hidden_dim=cfg["intermediate_size"],
            norm_eps=cfg.get("rms_norm_eps", 1e-6),
            rope_theta=cfg.get("rope_theta", params.get("rope_theta", 10000.0)),
            n_ctx_train=cfg.get("max_position_embeddings", 4096),
            qkv_bias=kind == "qwen2" or attention_bias,
            o_bias=attention_bias,
            tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # In float32 whatever the model dtype, as transformers does: a bf16 mean of squares loses too much.
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def rope_tables(head_dim: int, theta: float, n_pos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin for positions 0..n_pos-1, each (n_pos, head_dim) float32, in rotate-half layout."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)  # (hd/2,)
    freqs = torch.outer(torch.arange(n_pos, dtype=torch.float32), inv_freq)  # (n_pos, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (n_pos, hd): pair i is (i, i + hd/2)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x (heads, T, hd) by the angles of its positions; cos/sin (T, hd)."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-x2, x1], dim=-1) * sin


class KVCache:
    """Keys and values of one sequence for the first `n_layers` blocks, preallocated to n_ctx positions.

    Slots at or past the model's position hold stale entries from rejected tokens: they are never read
    (attention reads cache[:pos+T]) and are overwritten by the next forward, so a rollback is a position move.
    """

    def __init__(self, n_layers: int, n_kv_heads: int, n_ctx: int, head_dim: int, dtype, device) -> None:
        shape = (n_layers, n_kv_heads, n_ctx, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)

    def update(self, layer: int, pos: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store k, v (nkv, T, hd) at positions pos..pos+T-1; return all keys/values (nkv, pos+T, hd)."""
        end = pos + k.shape[1]
        self.k[layer, :, pos:end] = k
        self.v[layer, :, pos:end] = v
        return self.k[layer, :, :end], self.v[layer, :, :end]

    @property
    def nbytes(self) -> int:
        return self.k.nbytes + self.v.nbytes


class Attention(nn.Module):
    def __init__(self, a: ModelArgs) -> None:
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = a.n_heads, a.n_kv_heads, a.head_dim
        self.q_proj = nn.Linear(a.dim, a.n_heads * a.head_dim, bias=a.qkv_bias)
        self.k_proj = nn.Linear(a.dim, a.n_kv_heads * a.head_dim, bias=a.qkv_bias)
        self.v_proj = nn.Linear(a.dim, a.n_kv_heads * a.head_dim, bias=a.qkv_bias)
        self.o_proj = nn.Linear(a.n_heads * a.head_dim, a.dim, bias=a.o_bias)

    def forward(self, x, layer: int, pos: int, cache: KVCache, cos, sin, mask) -> torch.Tensor:
        T = x.shape[0]
        q = self.q_proj(x).view(T, self.n_heads, self.head_dim).transpose(0, 1)  # (nh, T, hd)
        k = self.k_proj(x).view(T, self.n_kv_heads, self.head_dim).transpose(0, 1)  # (nkv, T, hd)
        v = self.v_proj(x).view(T, self.n_kv_heads, self.head_dim).transpose(0, 1)  # (nkv, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k, v = cache.update(layer, pos, k, v)  # (nkv, pos+T, hd)
        # enable_gqa: each group of nh/nkv query heads reads one kv head, without copying the cache.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)  # (nh, T, hd)
        return self.o_proj(y.transpose(0, 1).reshape(T, -1))  # (T, dim)


class MLP(nn.Module):
    def __init__(self, a: ModelArgs) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(a.dim, a.hidden_dim, bias=False)
        self.up_proj = nn.Linear(a.dim, a.hidden_dim, bias=False)
        self.down_proj = nn.Linear(a.hidden_dim, a.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # SwiGLU


class Block(nn.Module):
    def __init__(self, a: ModelArgs) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(a.dim, a.norm_eps)
        self.self_attn = Attention(a)
        self.post_attention_layernorm = RMSNorm(a.dim, a.norm_eps)
        self.mlp = MLP(a)

    def forward(self, x, layer, pos, cache, cos, sin, mask) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), layer, pos, cache, cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


class Transformer(nn.Module):
    """Parameter names follow Hugging Face's (less the "model." prefix), so a checkpoint loads without a map."""

    def __init__(self, a: ModelArgs) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(a.vocab_size, a.dim)
        self.layers = nn.ModuleList(Block(a) for _ in range(a.n_layers))
        self.norm = RMSNorm(a.dim, a.norm_eps)
        self.lm_head = nn.Linear(a.dim, a.vocab_size, bias=False)

    def forward(self, idx: torch.Tensor, pos: int, cache: KVCache, cos, sin, last_only: bool) -> torch.Tensor:
        """Logits (T or 1, vocab) for the tokens idx (T,) at positions pos..pos+T-1, through len(cache) blocks."""
        T = idx.shape[0]
        # Query i (position pos+i) may see keys 0..pos+i; one new token sees everything, so needs no mask.
        mask = None if T == 1 else torch.ones(T, pos + T, dtype=torch.bool, device=idx.device).tril(pos)
        cos, sin = cos[pos:pos + T], sin[pos:pos + T]  # (T, hd)
        x = self.embed_tokens(idx)  # (T, dim)
        for layer, block in enumerate(self.layers[:cache.k.shape[0]]):
            x = block(x, layer, pos, cache, cos, sin, mask)
        if last_only:
            x = x[-1:]  # the output layer is the largest matmul: run it only on the rows asked for
        return self.lm_head(self.norm(x))  # (T or 1, vocab)


def _read_args(path: Path) -> ModelArgs:
    """The architecture from config.json; one line naming the file if it is not JSON or lacks a key."""
    try:
        return ModelArgs.from_config(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, UnicodeDecodeError) as e:
        raise RyzansteinError(f"{path} is not valid JSON ({e}): restore it from the model's source") from None
    except KeyError as e:
        raise RyzansteinError(f"{path} lacks {e.args[0]!r}, which the torch backend needs: restore it from the "
                              "model's source") from None
    except (AttributeError, TypeError):  # valid JSON, but not an object of the expected types
        raise RyzansteinError(f"{path} is not a Hugging Face model config: restore it from the model's source") from None


def _read_state_dict(folder: Path, dtype: torch.dtype, device: str) -> dict[str, torch.Tensor]:
    """All tensors of the folder's safetensors (sharded or not), in `dtype` on `device`, without "model."."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in folder.glob("*.safetensors"))
    if not files:
        raise ModelNotFound(f"no *.safetensors weights in {folder}")
    state = {}
    for name in files:
        try:
            with safe_open(str(folder / name), framework="pt", device=device) as f:
                for key in f.keys():
                    # One tensor at a time, so converting to bf16 never holds two float32 copies of the model.
                    state[key.removeprefix("model.")] = f.get_tensor(key).to(dtype)
        except (SafetensorError, OSError) as e:
            raise RyzansteinError(f"{folder / name} is truncated or corrupt ({e}): download the model "
                                  "again") from None
    state.pop("rotary_emb.inv_freq", None)  # older checkpoints save the RoPE table; we compute ours
    return state


def _param_bytes(modules: Sequence[nn.Module]) -> int:
    """Bytes of the distinct parameter storages of `modules` (tied embeddings counted once)."""
    seen = {p.data_ptr(): p.nbytes for m in modules for p in m.parameters()}
    return sum(seen.values())


class TorchLogits(Logits):
    """Logits rows as a tensor on the model's device, in the model's dtype. argmax and top reduce there and
    copy back n ids (and n probabilities); numpy() copies the rows themselves, only for sampling."""

    def __init__(self, rows: torch.Tensor) -> None:
        self.rows = rows  # (n, V) on the model's device
        self._host: np.ndarray | None = None  # numpy()'s copy, made once (sampling and logprobs share it)

    def __len__(self) -> int:
        return self.rows.shape[0]

    def argmax(self) -> list[int]:
        """The most likely id of each row (the lowest on a tie, as numpy): n ids cross to the host."""
        return self.rows.argmax(dim=-1).tolist()

    def top(self) -> tuple[list[int], list[float]]:
        """Each row's argmax and its softmax probability, reduced on the device; one copy of 2n numbers back."""
        x = self.rows.float()
        ids = x.argmax(dim=-1)  # (n,)
        probs = 1.0 / torch.exp(x - x.gather(-1, ids[:, None])).sum(dim=-1, dtype=torch.float64)  # (n,)
        both = torch.stack((ids.double(), probs)).tolist()  # float64 holds every id exactly
        return [int(i) for i in both[0]], both[1]

    def numpy(self) -> np.ndarray:
        if self._host is None:
            self._host = self.rows.float().cpu().numpy()
        return self._host


def _check_placement(dtype: str, device: str) -> None:
    """One clear line for a dtype or device we cannot run, a GPU asked for and absent included."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} not supported by the torch backend; use one of {', '.join(DTYPES)}")
    if device not in DEVICES:
        raise ConfigError(f"device {device!r} not supported; use one of {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for, but this torch build sees no CUDA GPU; use --device cpu")


def _device_extra(device: str) -> dict:
    """What ModelInfo.extra records about the device and the code that computes on it: the GPU's name and the
    torch version (cost profiles are keyed by both)."""
    return {"kernels": f"torch {torch.__version__}",
            **({"device_name": torch.cuda.get_device_name(device)} if device == "cuda" else {})}


class TorchModel(Model):
    """A Llama / Qwen2 run by PyTorch over its first `n_layers` blocks, with its own KV cache."""

    def __init__(self, net: Transformer, args: ModelArgs, tokenizer: HFTokenizer, info: ModelInfo,
                 n_layers: int) -> None:
        super().__init__()
        self.net, self.args, self.tokenizer, self.info = net, args, tokenizer, info
        weight = net.embed_tokens.weight
        self.device, self.dtype = weight.device, weight.dtype
        with torch.inference_mode():
            self.cache = KVCache(n_layers, args.n_kv_heads, info.n_ctx, args.head_dim, self.dtype, self.device)
            cos, sin = rope_tables(args.head_dim, args.rope_theta, info.n_ctx)
            # float32 tables cast to the model dtype, as transformers does.
            self._cos, self._sin = cos.to(self.device, self.dtype), sin.to(self.device, self.dtype)

    @classmethod
    def load(cls, folder: str | Path, *, name: str | None = None, n_ctx: int | None = None,
             dtype: str = "float32", device: str = "cpu", threads: int | None = None) -> TorchModel:
        """Load an HF-style folder; n_ctx defaults to min(max_position_embeddings, 4096)."""
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise ModelNotFound(f"no config.json in {folder}; expected a Hugging Face style model folder")
        _check_placement(dtype, device)
        if threads:
            torch.set_num_threads(threads)  # process-wide: torch has one intra-op pool
        args = _read_args(folder / "config.json")
        n_ctx = n_ctx or min(args.n_ctx_train, 4096)
        if n_ctx < 1:
            raise ConfigError(f"n_ctx must be positive, got {n_ctx}")

        with torch.inference_mode():
            state = _read_state_dict(folder, getattr(torch, dtype), device)
            if args.tie_embeddings:
                state["lm_head.weight"] = state["embed_tokens.weight"]  # one storage, two names
            with torch.device("meta"):  # no memory for the random init we are about to replace
                net = Transformer(args)
            net.requires_grad_(False)
            try:
                net.load_state_dict(state, strict=True, assign=True)
            except RuntimeError as e:  # missing / unexpected / mis-shaped tensors: say which, on one line
                detail = " ".join(line.strip() for line in str(e).splitlines()[1:])[:300]
                raise RyzansteinError(f"weights in {folder} do not match its config.json: {detail}") from None
        info = ModelInfo(
            name=name or folder.name, path=str(folder), backend="torch", arch=args.model_type,
            n_layers=args.n_layers, n_ctx=n_ctx, n_ctx_train=args.n_ctx_train, threads=torch.get_num_threads(),
            dtype=dtype, device=device,
            extra={"rope_theta": args.rope_theta, "tie_word_embeddings": args.tie_embeddings, **_device_extra(device)},
        )
        return cls(net, args, HFTokenizer(folder), info, args.n_layers)

    @classmethod
    def random(cls, args: ModelArgs, tokenizer: Tokenizer, *, name: str, n_ctx: int = 4096,
               dtype: str = "float32", device: str = "cpu", std: float = 0.02, seed: int = 0) -> TorchModel:
        """A model of this architecture with random weights (normal(0, std); norms 1): for timing a shape
        (benchmarks/gpu_check.py) and for tests, never for text. `tokenizer` only supplies ids and stop ids."""
        _check_placement(dtype, device)
        with torch.inference_mode():
            with torch.device("meta"):  # no memory until the real device's
                net = Transformer(args).requires_grad_(False)
            net = net.to_empty(device=device).to(getattr(torch, dtype))
            gen = torch.Generator(device=device).manual_seed(seed)
            for pname, p in net.named_parameters():
                if pname.endswith("layernorm.weight") or pname == "norm.weight":
                    p.fill_(1.0)
                else:
                    p.normal_(0.0, std, generator=gen)
            if args.tie_embeddings:
                net.lm_head.weight = net.embed_tokens.weight
        info = ModelInfo(
            name=name, path=f"random:{name}", backend="torch", arch=args.model_type, n_layers=args.n_layers,
            n_ctx=n_ctx, n_ctx_train=args.n_ctx_train, threads=torch.get_num_threads(), dtype=dtype, device=device,
            extra={"random_weights": True, "seed": seed, **_device_extra(device)},
        )
        return cls(net, args, tokenizer, info, args.n_layers)

    def truncated(self, n_layers: int) -> TorchModel:
        """A self-draft: the first n_layers blocks + final norm + lm_head, sharing these weights, own KV cache."""
        if not 1 <= n_layers <= self.args.n_layers:
            raise ConfigError(f"a truncated model needs 1..{self.args.n_layers} layers, got {n_layers}")
        return self._view(name=f"self:{n_layers}", n_layers=n_layers)

    def new_context(self) -> TorchModel:
        """Another KV cache over these same weights: a generation that runs beside this one."""
        return self._view()

    def _view(self, **info_changes) -> TorchModel:
        """A model over these weights (info changed as given) with a KV cache of its own."""
        owner = self.info.extra.get("shares_weights_with", self.info.name)  # a view of a view: the real owner
        info = dataclasses.replace(self.info, **info_changes, extra={**self.info.extra, "shares_weights_with": owner})
        return TorchModel(self.net, self.args, self.tokenizer, info, info.n_layers)

    @property
    def vocab_size(self) -> int:
        return self.args.vocab_size

    def _score(self, tokens: Sequence[int], last_only: bool) -> TorchLogits:
        with torch.inference_mode():
            # non_blocking: no wait on the stream (it is idle anyway: the last step's ids were just read)
            idx = torch.tensor(list(tokens), dtype=torch.long).to(self.device, non_blocking=True)  # (T,)
            return TorchLogits(self.net(idx, self.pos, self.cache, self._cos, self._sin, last_only))  # (T or 1, V)

    def _forward(self, tokens: Sequence[int], last_only: bool) -> np.ndarray:
        return self._score(tokens, last_only).numpy()

    def _truncate(self, pos: int) -> None:
        pass  # the position is len(self.tokens), which Model.truncate cuts; stale slots get overwritten

    def memory(self) -> MemoryUse:
        """Weights this model reads (shared ones included: see info.extra["shares_weights_with"]) and its KV."""
        net = self.net
        used = [net.embed_tokens, *net.layers[:self.info.n_layers], net.norm, net.lm_head]
        return MemoryUse(weights_bytes=_param_bytes(used), kv_cache_bytes=self.cache.nbytes,
                         kv_bytes_per_token=self.cache.nbytes // self.info.n_ctx)
