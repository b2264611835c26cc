"""Native backend: GGUF files on our own C kernels (the `_native` extension), for Llama and Qwen2.

Why it exists: speculative decoding pays when verifying K+1 tokens costs little more than producing one.
These kernels read each repacked weight block from memory once per forward and apply it to every row of the
call (up to 8 in registers, more from cache), so a forward over 2-16 tokens costs about one token's on a
small CPU (docs/native-backend.md; the measured v(n): docs/benchmarks.md). And every row's arithmetic is the same
whatever the batch: logits are bit-identical alone, in a batch, or after a rollback, so greedy speculative
output equals plain greedy output exactly.

Weights are repacked once at load from the GGUF (its tensors are read through a memory map, gguf_file.py,
map and copied into the kernel layout, values unchanged); the tokenizer is the GGUF's own, built from its
metadata (gguf_tokenizer.py: llama.cpp's ids without llama.cpp), or llama.cpp's vocabulary-only load for a
tokenizer that one does not reproduce, where llama.cpp is installed. Unsupported files raise
NativeUnsupported (one line, naming what is not supported and suggesting `--backend llama.cpp`).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError, MissingExtra, RyzansteinError
from ..machine import usable_cores
from .base import MemoryUse, Model, ModelInfo, Tokenizer
from .gguf_file import GGUFFile
from .gguf_tokenizer import GGUFTokenizer, TokenizerUnsupported
from .llamacpp import vocab_only_tokenizer

ARCHS = ("llama", "qwen2")
ISA_ENV = "RYZANSTEIN_NATIVE_ISA"  # force an instruction set (c, avx2, avx512-vnni): tests and comparisons


class NativeUnsupported(RyzansteinError):
    """The native backend cannot run this file (or on this CPU) and llama.cpp can. The message suggests
    `--backend llama.cpp`; `reason` alone is the note printed when native was only the default backend."""

    def __init__(self, reason: str, cpu: bool = False) -> None:
        super().__init__(f"{reason}: use --backend llama.cpp")
        self.reason, self.cpu = reason, cpu


def _ext():
    try:
        from . import _native  # the compiled extension: a clear line if the build is missing
    except ImportError as e:  # pragma: no cover - a broken install
        raise NativeUnsupported(f"the native backend's compiled extension is missing ({e}); reinstall with "
                                "./install.sh") from None
    return _native


@functools.lru_cache(maxsize=1)
def build_id() -> str:
    """A fingerprint of the compiled kernels (the extension file's sha256, 16 hex digits): a rebuild with other
    kernels makes the cost profiles measured on the old ones stale."""
    return hashlib.sha256(Path(_ext().__file__).read_bytes()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class NativeArch:
    arch: str
    n_layer: int
    dim: int
    n_head: int
    n_head_kv: int
    head_dim: int
    ffn: int
    vocab: int
    eps: float
    rope_base: float
    n_ctx_train: int

    def config(self) -> dict:
        return {"n_layer": self.n_layer, "dim": self.dim, "n_head": self.n_head, "n_head_kv": self.n_head_kv,
                "head_dim": self.head_dim, "ffn": self.ffn, "vocab": self.vocab, "eps": self.eps,
                "rope_base": self.rope_base, "rope_neox": int(self.arch == "qwen2")}


def read_arch(g: GGUFFile) -> NativeArch:
    """The architecture the GGUF describes, or NativeUnsupported naming what the native backend lacks."""
    path = g.path
    arch = g.field("general.architecture")
    if arch not in ARCHS:
        raise NativeUnsupported(f"architecture {arch!r} of {path.name} is not supported by the native backend "
                                f"(it runs {' and '.join(ARCHS)})")
    names = {t.name: t for t in g.tensors}
    scaling = g.field(f"{arch}.rope.scaling.type")
    if scaling not in (None, "none") or "rope_freqs.weight" in names:
        raise NativeUnsupported(f"RoPE scaling ({scaling or 'rope_freqs'}) in {path.name} is not supported by the "
                                "native backend")
    try:
        n_head = int(g.field(f"{arch}.attention.head_count"))
        dim = int(g.field(f"{arch}.embedding_length"))
        return NativeArch(
            arch=arch, n_layer=int(g.field(f"{arch}.block_count")), dim=dim, n_head=n_head,
            n_head_kv=int(g.field(f"{arch}.attention.head_count_kv", n_head)),
            head_dim=int(g.field(f"{arch}.attention.key_length", dim // n_head)),
            ffn=int(g.field(f"{arch}.feed_forward_length")), vocab=int(names["token_embd.weight"].shape[1]),
            eps=float(g.field(f"{arch}.attention.layer_norm_rms_epsilon")),
            rope_base=float(g.field(f"{arch}.rope.freq_base", 10000.0)),
            n_ctx_train=int(g.field(f"{arch}.context_length", 4096)),
        )
    except (TypeError, KeyError, IndexError) as e:
        raise RyzansteinError(f"{path} lacks what the model needs ({type(e).__name__}: {e}): the file is "
                              "corrupt") from None


def _is_vector(t) -> bool:
    return len(t.shape) == 1 or t.name.endswith(".bias")


def check_types(g: GGUFFile) -> None:
    """NativeUnsupported for the first tensor whose type the kernels lack (before anything is repacked)."""
    N = _ext()
    for t in g.tensors:
        if _is_vector(t):
            if t.type != 0:
                raise NativeUnsupported(f"vector {t.name} in {g.path.name} is {t.type_name}, not F32, which the "
                                        "native backend needs")
        elif N.block_cols(t.type) == 0:
            raise NativeUnsupported(f"tensor {t.name} of {g.path.name} has type {t.type_name}, which the native "
                                    "backend does not support (it reads F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q8_0, "
                                    "Q4_K, Q6_K)")


def load_weights(g: GGUFFile, arch: NativeArch, threads: int, isa: str | None):
    """Repack every matrix of the GGUF and build the extension's Model (weights + thread pool); returns it and
    the repacked matrices by name (a draft head shares the target's token embedding).

    Matrices are repacked on `threads` threads (the extension releases the GIL while it repacks)."""
    N = _ext()
    vectors = {t.name.removesuffix(".weight"): np.frombuffer(g.data(t), np.float32).copy()
               for t in g.tensors if _is_vector(t)}

    def repack(t):
        try:
            return N.Tensor(t.type, int(t.shape[1]), int(t.shape[0]), g.data(t), 0)
        except ValueError as e:
            raise RyzansteinError(f"tensor {t.name} of {g.path}: {e}; download the file again") from None

    mats = sorted((t for t in g.tensors if not _is_vector(t)), key=lambda t: -t.nbytes)  # big ones first
    with ThreadPoolExecutor(max(1, threads)) as pool:
        tensors = dict(zip((t.name.removesuffix(".weight") for t in mats), pool.map(repack, mats)))
    try:
        return N.Model(arch.config(), tensors, vectors, threads, isa), tensors
    except (KeyError, ValueError) as e:
        raise NativeUnsupported(f"{g.path.name} does not fit the native backend's model ({e.args[0]})") from None


def load_tokenizer(g: GGUFFile) -> Tokenizer:
    """The GGUF's tokenizer: built from its metadata, or llama.cpp's own for one that cannot be reproduced
    exactly (NativeUnsupported where llama.cpp is not installed)."""
    try:
        return GGUFTokenizer(g)
    except TokenizerUnsupported as e:
        try:
            return vocab_only_tokenizer(g.path)
        except MissingExtra:
            raise NativeUnsupported(str(e)) from None


class NativeModel(Model):
    """A GGUF on the native kernels, with one KV cache (a context) over shared weights."""

    def __init__(self, path: str | Path, *, name: str | None = None, n_ctx: int | None = None,
                 threads: int | None = None, isa: str | None = None) -> None:
        super().__init__()
        path = Path(path)
        threads = threads or usable_cores()
        isa = isa or os.environ.get(ISA_ENV) or None
        if isa is None and not any(i != "c" for i in _ext().isa_names()):
            raise NativeUnsupported("this CPU has neither AVX2 (with FMA and F16C) nor AVX-512 VNNI, which the "
                                    "native kernels need", cpu=True)
        g = GGUFFile(path)
        arch = read_arch(g)
        check_types(g)
        n_ctx = n_ctx or min(arch.n_ctx_train, 4096)
        if n_ctx < 1:
            raise ConfigError(f"invalid ctx_size={n_ctx}: must be positive")
        tokenizer = load_tokenizer(g)  # before the weights: a file it cannot read fails in a second
        weights, self.tensors = load_weights(g, arch, threads, isa)
        file_type = g.field("general.file_type")
        del g  # the memory map: only the repacked copy stays
        self._init(weights, arch, tokenizer, ModelInfo(
            name=name or str(path), path=str(path), backend="native", arch=arch.arch, n_layers=arch.n_layer,
            n_ctx=n_ctx, n_ctx_train=arch.n_ctx_train, threads=weights.threads,
            dtype=f"gguf-ftype-{file_type}" if file_type is not None else "gguf", extra={"isa": weights.isa, "kernels": build_id()}))

    def _init(self, weights, arch: NativeArch, tokenizer: Tokenizer, info: ModelInfo) -> None:
        self._weights, self._arch, self.tokenizer, self.info = weights, arch, tokenizer, info
        self._ctx = _ext().Context(weights, info.n_ctx, info.n_layers)
        self._out = np.empty((0, arch.vocab), np.float32)
        self._captured: np.ndarray | None = None  # (n_ctx, layers * dim): capture()'s rows, by position

    def _view(self, **info_changes) -> NativeModel:
        """A model over these same weights with a KV cache of its own (info changed as given)."""
        owner = self.info.extra.get("shares_weights_with", self.info.name)
        info = dataclasses.replace(self.info, **info_changes, extra={**self.info.extra, "shares_weights_with": owner})
        view = object.__new__(NativeModel)
        Model.__init__(view)
        view.tensors = self.tensors
        view._init(self._weights, self._arch, self.tokenizer, info)
        return view

    def new_context(self) -> NativeModel:
        """Another KV cache over these weights: a generation that runs beside this one (bench --lockstep)."""
        return self._view()

    def truncated(self, n_layers: int) -> NativeModel:
        """A self-draft: the first n_layers blocks + final norm + output layer of these weights, own KV cache."""
        if not 1 <= n_layers <= self._arch.n_layer:
            raise ConfigError(f"a truncated model needs 1..{self._arch.n_layer} layers, got {n_layers}")
        return self._view(name=f"self:{n_layers}", n_layers=n_layers)

    @property
    def vocab_size(self) -> int:
        return self._arch.vocab

    def _forward(self, tokens: Sequence[int], last_only: bool) -> np.ndarray:
        ids = np.asarray(tokens, dtype=np.int32)
        rows = 1 if last_only else len(ids)
        if self._out.shape[0] < rows:
            self._out = np.empty((max(rows, 17), self._arch.vocab), np.float32)
        cap = self._captured
        try:
            if cap is None:
                self._ctx.forward(ids, self.pos, self._out, last_only)
            else:
                self._ctx.forward(ids, self.pos, self._out, last_only, captured=cap[self.pos:self.pos + len(ids)])
        except ValueError as e:
            raise RyzansteinError(f"native forward: {e}") from None
        return self._out[:rows]  # (rows, V) view, valid until the next forward

    def capture(self, layers: Sequence[int]) -> bool:
        layers = [int(x) for x in layers]
        if not all(0 <= x < self.info.n_layers - 1 for x in layers) or len(layers) > 4:
            raise ConfigError(f"capture layers must be at most 4 of 0..{self.info.n_layers - 2}, got {layers}")
        self._ctx.capture(layers)
        # np.empty: the pages are touched only as positions are forwarded
        self._captured = np.empty((self.info.n_ctx, len(layers) * self._arch.dim), np.float32) if layers else None
        return True

    def hidden_states(self, start: int, end: int) -> np.ndarray:
        if self._captured is None or not 0 <= start <= end <= self.pos:
            raise RyzansteinError(f"no hidden states captured for positions {start}..{end - 1}")
        return self._captured[start:end]

    def restrict_vocab(self, keep: np.ndarray | None) -> bool:
        """Only the output layer's 16-row groups holding a kept id are computed (a whole group, so a few more
        ids than `keep` get their logits); the others are -inf."""
        if keep is None:
            self._ctx.vocab(None)
            return True
        groups = self._ctx.output_groups
        pad = np.zeros(groups * 16, dtype=bool)
        pad[:len(keep)] = np.asarray(keep, dtype=bool)[:groups * 16]
        self._ctx.vocab(np.ascontiguousarray(pad.reshape(groups, 16).any(axis=1), dtype=np.uint8))
        return True

    @staticmethod
    def forward_batch(parts: Sequence[tuple[NativeModel, np.ndarray, int, int]], out: np.ndarray | None = None
                      ) -> np.ndarray:
        """One forward over the rows of several KV caches of one model's weights (continuous batching): each
        part (model, int32 tokens, pos, out_rows) forwards its tokens at positions pos.. of that model's
        cache and asks for the logits of its last out_rows rows. Every matmul runs over all rows at once, the
        attention per cache; a row's logits are the bits it gets forwarded alone. Returns the logits rows in
        part order (sum of out_rows, vocab), in `out` if it is large enough. Captured layers are kept as in
        `forward`. The models' `tokens` are the caller's to update (batching.py)."""
        if not parts:
            raise ValueError("forward_batch needs at least one part")
        first = parts[0][0]
        rows = sum(p[3] for p in parts)
        if out is None or out.shape[0] < rows or out.shape[1] != first._arch.vocab:
            out = np.empty((max(rows, 1), first._arch.vocab), np.float32)
        seqs = []
        for model, ids, pos, out_rows in parts:
            cap = model._captured
            seqs.append((model._ctx, ids, pos, out_rows, None if cap is None else cap[pos:pos + len(ids)]))
        try:
            _ext().forward_batch(seqs, out)
        except ValueError as e:
            raise RyzansteinError(f"native forward: {e}") from None
        return out[:rows]

    def _truncate(self, pos: int) -> None:
        pass  # a position move: cache rows past pos are overwritten before they are read

    def memory(self) -> MemoryUse:
        return MemoryUse(weights_bytes=int(self._weights.weights_bytes), kv_cache_bytes=int(self._ctx.kv_bytes),
                         kv_bytes_per_token=int(self._ctx.kv_bytes_per_token))

    def close(self) -> None:
        self._ctx = None
