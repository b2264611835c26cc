"""llama.cpp backend: GGUF files on quantized CPU kernels, through llama-cpp-python's low-level API.

The fast path on CPUs. Per-step Python is kept small (a careless ctypes loop can lose milliseconds a token:
benchmarks/plain_overhead.py measures ours against a bare llama-cpp-python loop): one preallocated batch,
logits read as a zero-copy numpy view of llama.cpp's output buffer, and KV rollback through
`llama_memory_seq_rm` (a position move: no recompute). `truncated(n)` is the `self:N` draft: a GGUF written
once with only the first n blocks (gguf_truncate.py), loaded as a model of its own. llama-cpp-python is the
optional `llamacpp` extra: without it, every path here is one MissingExtra line naming it.
"""
from __future__ import annotations

import ctypes
import dataclasses
import weakref
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import MissingExtra, RyzansteinError
from ..machine import usable_cores
from .base import MemoryUse, Model, ModelInfo, PieceTokenizer, SpecialTokens, valid_text
from .gguf_truncate import self_draft_path

_SEQ = 0  # single sequence
_BACKEND_READY = False
_LOG_CB = None  # keep the ctypes callback alive for the process


def _lib():
    try:
        import llama_cpp  # the optional llamacpp extra; loads the native library (~0.2 s): only when used
    except (ImportError, OSError, RuntimeError) as e:
        if isinstance(e, ModuleNotFoundError) and e.name == "llama_cpp":  # not installed
            raise MissingExtra("the llama.cpp backend", "llamacpp") from None
        # installed, but it or its compiled library does not load
        raise RyzansteinError(f"llama-cpp-python does not load ({e}): reinstall it with pip install "
                              "--force-reinstall 'ryzanstein[llamacpp]'") from None
    return llama_cpp


def _init_backend(verbose: bool) -> None:
    global _BACKEND_READY, _LOG_CB
    if _BACKEND_READY:
        return
    L = _lib()
    if not verbose:  # llama.cpp logs every load detail to stderr; keep the terminal for the user's text
        _LOG_CB = L.llama_log_callback(lambda level, text, user: None)
        L.llama_log_set(_LOG_CB, ctypes.c_void_p(0))
    L.llama_backend_init()
    _BACKEND_READY = True


class LlamaCppTokenizer(PieceTokenizer):
    """The GGUF's own tokenizer, as llama.cpp implements it."""

    def __init__(self, L, model_p, vocab_p) -> None:
        self._L, self._vocab = L, vocab_p
        self._n = L.llama_vocab_n_tokens(vocab_p)
        self._pieces: dict[int, bytes] = {}
        self._special: dict[str, int] | None = None
        self._buf = ctypes.create_string_buffer(256)
        bos, eos, eot = (L.llama_vocab_bos(vocab_p), L.llama_vocab_eos(vocab_p), L.llama_vocab_eot(vocab_p))
        stops = {i for i in range(self._n) if L.llama_vocab_is_eog(vocab_p, i)}
        stops |= {t for t in (eos, eot) if t >= 0}
        self.special = SpecialTokens(bos if bos >= 0 else None, eos if eos >= 0 else None, frozenset(stops))
        tmpl = L.llama_model_chat_template(model_p, None)
        self.chat_template = tmpl.decode("utf-8") if tmpl else None
        self.bos_text = self.token_text(bos) if bos >= 0 else ""
        self.eos_text = self.token_text(eos) if eos >= 0 else ""

    @property
    def vocab_size(self) -> int:
        return self._n

    def encode(self, text: str, add_special: bool = False, parse_special: bool = True) -> list[int]:
        data = valid_text(text)
        n_max = len(data) + 8
        buf = (self._L.llama_token * n_max)()
        n = self._L.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_special, parse_special)
        if n < 0:  # buffer too small: n is minus the size needed
            n_max = -n
            buf = (self._L.llama_token * n_max)()
            n = self._L.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_special, parse_special)
        return list(buf[:n])

    def special_texts(self) -> dict[str, int]:
        """Control (and unknown-token) texts: what llama_tokenize parses only with parse_special."""
        if self._special is None:  # a scan of the vocabulary's attributes (~30 ms at 150k): on first use
            L, gated = self._L, self._L.LLAMA_TOKEN_ATTR_CONTROL | self._L.LLAMA_TOKEN_ATTR_UNKNOWN
            self._special = {self.token_text(i): i for i in range(self._n)
                             if L.llama_vocab_get_attr(self._vocab, i) & gated and self.token_text(i)}
        return self._special

    def piece(self, token_id: int) -> bytes:
        """The bytes this token adds to the text (special tokens rendered)."""
        p = self._pieces.get(token_id)
        if p is None:
            n = self._L.llama_token_to_piece(self._vocab, token_id, self._buf, len(self._buf), 0, True)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = self._L.llama_token_to_piece(self._vocab, token_id, buf, len(buf), 0, True)
                p = buf.raw[:n]
            else:
                p = self._buf.raw[:n]
            self._pieces[token_id] = p
        return p

    def token_text(self, token_id: int) -> str:
        return self._L.llama_vocab_get_text(self._vocab, token_id).decode("utf-8", errors="replace")


class _VocabOnly:
    """A GGUF's vocabulary loaded into llama.cpp without its weights; frees it when the tokenizer goes."""

    def __init__(self, L, path: Path) -> None:
        params = L.llama_model_default_params()
        params.vocab_only = True
        params.n_gpu_layers = 0
        self._L, self._model = L, L.llama_model_load_from_file(str(path).encode(), params)
        if not self._model:
            raise RyzansteinError(f"cannot read the tokenizer of {path}: the file is corrupt")

    def __del__(self) -> None:  # pragma: no cover - best effort
        try:
            if self._model:
                self._L.llama_model_free(self._model)
                self._model = None
        except Exception:
            pass


def vocab_only_tokenizer(path: str | Path) -> LlamaCppTokenizer:
    """llama.cpp's own tokenizer for a GGUF, its weights left unread: the native backend's, for a tokenizer
    gguf_tokenizer.py does not reproduce, and the reference its tests compare with."""
    L = _lib()
    _init_backend(False)
    vocab = _VocabOnly(L, Path(path))
    tokenizer = LlamaCppTokenizer(L, vocab._model, L.llama_model_get_vocab(vocab._model))
    tokenizer._owner = vocab  # the vocabulary lives in the llama.cpp model: keep it alive
    return tokenizer


class LlamaCppModel(Model):
    """A GGUF on llama.cpp with one KV-cache sequence."""

    def __init__(self, path: str | Path, *, name: str | None = None, n_ctx: int | None = None,
                 threads: int | None = None, n_batch: int = 512, verbose: bool = False) -> None:
        super().__init__()
        L = _lib()
        _init_backend(verbose)
        self._L = L
        path = Path(path)
        mparams = L.llama_model_default_params()
        mparams.n_gpu_layers = 0
        # Read the weights into process memory instead of mmap-ing the file: page-cache pages of a mapped
        # model can be reclaimed under memory pressure (this machine runs proactive reclaim), and then every
        # token re-reads them from disk (seen: 2.7 s/token instead of 25 ms). Anonymous memory stays put.
        mparams.load_mode = L.LLAMA_LOAD_MODE_NONE
        self._model = L.llama_model_load_from_file(str(path).encode(), mparams)
        if not self._model:
            raise RyzansteinError(f"llama.cpp could not load {path}: the file is corrupt or its architecture is unsupported")
        n_ctx_train = L.llama_model_n_ctx_train(self._model)
        n_ctx = n_ctx or min(n_ctx_train, 4096)
        threads = threads or usable_cores()
        self._owner, self._twins = None, weakref.WeakSet()
        try:
            self._open_context(n_ctx, threads, n_batch)
        except RyzansteinError:
            L.llama_model_free(self._model)
            raise
        vocab = L.llama_model_get_vocab(self._model)
        self.tokenizer = LlamaCppTokenizer(L, self._model, vocab)
        self.tokenizer._owner = self  # the vocab lives in the model: keep it alive while the tokenizer is
        self._n_vocab = self.tokenizer.vocab_size
        arch = self._meta("general.architecture") or "?"
        n_layer = L.llama_model_n_layer(self._model)
        self.info = ModelInfo(
            name=name or str(path), path=str(path), backend="llama.cpp", arch=arch, n_layers=n_layer,
            # llama.cpp allocates at least 256 positions (and pads); the context holds what was asked for
            n_ctx=min(n_ctx, L.llama_n_ctx(self._ctx)), n_ctx_train=n_ctx_train, threads=threads,
            dtype=self._meta("general.file_type") or "gguf",
            extra={"kernels": f"llama-cpp-python {L.__version__}"},  # cost profiles are keyed by it
        )
        n_embd, n_head, n_head_kv = (L.llama_model_n_embd(self._model), L.llama_model_n_head(self._model),
                                     L.llama_model_n_head_kv(self._model))
        # K and V, f16 (llama.cpp's default cache type), every layer
        self._kv_per_token = 2 * n_layer * n_head_kv * (n_embd // n_head) * 2

    def _open_context(self, n_ctx: int, threads: int, n_batch: int) -> None:
        """A llama.cpp context (KV cache + compute buffers) over self._model, and the batch we feed it."""
        L = self._L
        cparams = L.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = 1
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        self._ctx = L.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            raise RyzansteinError(f"llama.cpp could not create a context of {n_ctx} tokens: try a smaller --ctx-size")
        self._mem = L.llama_get_memory(self._ctx)
        self._n_batch_asked = n_batch
        self._n_batch = min(L.llama_n_batch(self._ctx), L.llama_n_ubatch(self._ctx))  # llama.cpp may clamp them
        self._batch = L.llama_batch_init(n_batch, 0, 1)
        for i in range(n_batch):  # every position belongs to sequence 0, once and for all
            self._batch.n_seq_id[i] = 1
            self._batch.seq_id[i][0] = _SEQ

    def new_context(self) -> LlamaCppModel:
        """Another KV cache over these same weights (no second copy): a generation that runs beside ours."""
        owner = self._owner or self
        twin = object.__new__(LlamaCppModel)
        Model.__init__(twin)
        twin._L, twin._model, twin._owner, twin._twins = self._L, self._model, owner, weakref.WeakSet()
        twin.tokenizer, twin._n_vocab, twin._kv_per_token = self.tokenizer, self._n_vocab, self._kv_per_token
        twin._open_context(self.n_ctx, self.info.threads, self._n_batch_asked)
        twin.info = dataclasses.replace(self.info, extra={**self.info.extra, "shares_weights_with": owner.info.name})
        owner._twins.add(twin)
        return twin

    def truncated(self, n_layers: int) -> LlamaCppModel:
        """The `self:N` draft: the cached GGUF of this file's first n_layers blocks (written once, under the
        store's selfdraft/), loaded with this model's context size and threads. Its weights are its own."""
        path = self_draft_path(Path(self.info.path), n_layers, self.info.extra.get("sha256"))
        return LlamaCppModel(path, name=f"self:{n_layers}", n_ctx=self.n_ctx, threads=self.info.threads)

    def _meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(256)
        n = self._L.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", errors="replace") if n >= 0 else None

    @property
    def vocab_size(self) -> int:
        return self._n_vocab

    def _forward(self, tokens: Sequence[int], last_only: bool) -> np.ndarray:
        L, b = self._L, self._batch
        n, pos0 = len(tokens), self.pos
        for start in range(0, n, self._n_batch):  # prompts longer than a batch go in chunks
            chunk = tokens[start:start + self._n_batch]
            m = len(chunk)
            is_last_chunk = start + m == n
            for i, t in enumerate(chunk):
                b.token[i] = t
                b.pos[i] = pos0 + start + i
                b.logits[i] = is_last_chunk and (not last_only or i == m - 1)
            b.n_tokens = m
            rc = L.llama_decode(self._ctx, b)
            if rc != 0:
                L.llama_memory_seq_rm(self._mem, _SEQ, pos0, -1)  # leave the cache as it was
                raise RyzansteinError(f"llama.cpp decode failed (code {rc}) at position {pos0 + start}")
        n_out = 1 if last_only else n
        ptr = L.llama_get_logits(self._ctx)
        return np.ctypeslib.as_array(ptr, shape=(n_out, self._n_vocab))  # (n_out, V) view, valid until next call

    def _truncate(self, pos: int) -> None:
        self._L.llama_memory_seq_rm(self._mem, _SEQ, pos, -1)

    def memory(self) -> MemoryUse:
        return MemoryUse(
            weights_bytes=int(self._L.llama_model_size(self._model)),
            kv_cache_bytes=self._kv_per_token * self._L.llama_n_ctx(self._ctx),  # allocated, padding included
            kv_bytes_per_token=self._kv_per_token,
        )

    def close(self) -> None:
        """Free the context; the weights too unless they are another model's (its twins close first)."""
        for twin in list(getattr(self, "_twins", ())):
            twin.close()
        if getattr(self, "_ctx", None):
            self._L.llama_batch_free(self._batch)
            self._L.llama_free(self._ctx)
            if self._owner is None:
                self._L.llama_model_free(self._model)
            self._ctx = None

    def __del__(self) -> None:  # pragma: no cover - best effort at interpreter exit
        try:
            self.close()
        except Exception:
            pass
