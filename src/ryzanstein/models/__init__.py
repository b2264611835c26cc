"""Loading a model by name, .gguf path or Hugging Face folder, on the backend that fits."""
from __future__ import annotations

from pathlib import Path

from ..errors import RyzansteinError
from .base import MemoryUse, Model, ModelInfo, SpecialTokens, Tokenizer

__all__ = ["load_model", "Model", "Tokenizer", "SpecialTokens", "MemoryUse", "ModelInfo", "default_backend"]


def default_backend(kind: str) -> str:
    """llama.cpp for GGUF files, torch for Hugging Face folders."""
    return "llama.cpp" if kind == "gguf" else "torch"


def load_model(spec: str, *, backend: str | None = None, threads: int | None = None, n_ctx: int | None = None,
               dtype: str = "float32", device: str = "cpu", auto_pull: bool = True) -> Model:
    """Load a known model name, a .gguf file or an HF folder; pull a known model first if it is missing."""
    from . import store

    res = store.resolve(spec, auto_pull=auto_pull)
    backend = backend or default_backend(res.kind)
    if backend == "llama.cpp":
        if res.kind != "gguf":
            raise RyzansteinError(f"the llama.cpp backend needs a .gguf file, {res.path} is a Hugging Face folder: "
                                  "use --backend torch")
        from .llamacpp import LlamaCppModel

        model = LlamaCppModel(res.path, name=res.name, n_ctx=n_ctx, threads=threads)
        model.info.extra["sha256"] = res.sha256
        return model
    if backend != "torch":
        raise RyzansteinError(f"unknown backend {backend!r}: use llama.cpp or torch")
    from .torch_model import TorchModel

    folder = res.path if res.kind == "hf" else hf_folder_for_gguf(res.path, res.sha256)
    model = TorchModel.load(folder, name=res.name, n_ctx=n_ctx, dtype=dtype, device=device, threads=threads)
    model.info.extra["sha256"] = res.sha256
    return model


def hf_folder_for_gguf(gguf: Path, sha256: str | None) -> Path:
    """A Hugging Face folder made from a GGUF once (dequantized weights + tokenizer), cached in the store."""
    from . import store
    from .gguf_convert import convert_gguf

    st = gguf.stat()
    key = sha256[:16] if sha256 else f"{gguf.stem}-{st.st_size}-{int(st.st_mtime)}"
    out = store.home() / "converted" / key
    if not (out / "config.json").exists():
        convert_gguf(gguf, out)
    return out
