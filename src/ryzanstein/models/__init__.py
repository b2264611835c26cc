"""Models: the `Model` interface (base.py), its backends (native.py, llamacpp.py, torch_model.py), GGUF conversion and
truncation, the model store (store.py), and loading a model by name, .gguf path or Hugging Face folder.

`config.BACKENDS` lists the backends and `config.default_backend` chooses one; `_LOADERS` below maps each name
to the function that loads it. A new backend is a module here behind the same `Model` interface, its name in
`BACKENDS` and its loader in `_LOADERS`. The llama.cpp and torch backends need optional extras
(`llamacpp`, `torch`): without one, asking for it is one MissingExtra line naming the extra.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..config import BACKENDS, default_backend
from ..errors import MissingExtra, RyzansteinError
from . import store
from .base import Logits, MemoryUse, Model, ModelInfo, SpecialTokens, Tokenizer
from .llamacpp import LlamaCppModel, _lib
from .native import NativeModel, NativeUnsupported

log = logging.getLogger("ryzanstein")

__all__ = ["load_model", "Model", "Logits", "Tokenizer", "SpecialTokens", "MemoryUse", "ModelInfo", "hf_folder_for_gguf"]


def load_model(spec: str, *, backend: str | None = None, threads: int | None = None, n_ctx: int | None = None,
               dtype: str = "float32", device: str = "cpu", auto_pull: bool = True) -> Model:
    """Load a known model name, a .gguf file or an HF folder; pull a known model first if it is missing."""
    res = store.resolve(spec, auto_pull=auto_pull)
    chosen = backend or default_backend(res.kind)
    if chosen not in _LOADERS:
        raise RyzansteinError(f"unknown backend {chosen!r}: use {' or '.join(BACKENDS)}")
    try:
        model = _LOADERS[chosen](res, n_ctx=n_ctx, threads=threads, dtype=dtype, device=device)
    except NativeUnsupported as e:
        if backend is not None and not e.cpu:  # asked for by name: the one-line error, exit 2
            raise
        try:
            _lib()  # the fallback needs the llamacpp extra: one line saying so, not a note and then an error
        except MissingExtra as missing:
            raise RyzansteinError(f"{e.reason}; {missing}") from None
        log.warning("%s; using the llama.cpp backend", e.reason)
        model = _load_llamacpp(res, n_ctx=n_ctx, threads=threads, dtype=dtype, device=device)
    model.info.extra["sha256"] = res.sha256
    return model


def _need_gguf(res: store.ResolvedModel, backend: str) -> None:
    if res.kind != "gguf":
        raise RyzansteinError(f"the {backend} backend needs a .gguf file, {res.path} is a Hugging Face folder: "
                              "use --backend torch")


def _load_llamacpp(res: store.ResolvedModel, *, n_ctx: int | None, threads: int | None, dtype: str,
                   device: str) -> Model:
    _need_gguf(res, "llama.cpp")
    return LlamaCppModel(res.path, name=res.name, n_ctx=n_ctx, threads=threads)


def _load_native(res: store.ResolvedModel, *, n_ctx: int | None, threads: int | None, dtype: str,
                 device: str) -> Model:
    _need_gguf(res, "native")
    return NativeModel(res.path, name=res.name, n_ctx=n_ctx, threads=threads)


# What the torch extra installs: a missing one of these is that extra missing.
_TORCH_EXTRA = ("torch", "transformers", "safetensors", "accelerate")


def _torch_extra(e: ModuleNotFoundError, what: str) -> Exception:
    """MissingExtra for a package of the torch extra that is not installed; any other missing module as it is."""
    return MissingExtra(what, "torch") if (e.name or "").split(".")[0] in _TORCH_EXTRA else e


def _load_torch(res: store.ResolvedModel, *, n_ctx: int | None, threads: int | None, dtype: str,
                device: str) -> Model:
    try:
        from .torch_model import TorchModel  # imports torch (seconds): only for the torch backend
    except ModuleNotFoundError as e:
        raise _torch_extra(e, "the torch backend") from None
    folder = res.path if res.kind == "hf" else hf_folder_for_gguf(res.path, res.sha256)
    return TorchModel.load(folder, name=res.name, n_ctx=n_ctx, dtype=dtype, device=device, threads=threads)


_LOADERS = {"native": _load_native, "llama.cpp": _load_llamacpp, "torch": _load_torch}  # one per name in config.BACKENDS


def hf_folder_for_gguf(gguf: Path, sha256: str | None) -> Path:
    """A Hugging Face folder made from a GGUF once (dequantized weights + tokenizer), cached in the store."""
    out = store.home() / "converted" / store.cache_key(gguf, sha256)
    if not (out / "config.json").exists():
        try:
            from .gguf_convert import convert_gguf  # imports torch (seconds): only when a GGUF is converted

            convert_gguf(gguf, out)
        except ModuleNotFoundError as e:  # (transformers is imported inside convert_gguf)
            raise _torch_extra(e, "converting a GGUF for the torch backend") from None
    return out
