"""Layer-truncated self-draft: a GGUF that keeps only the first N transformer blocks of another.

The draft shares the target's tokenizer, embeddings, final norm and LM head, so its next-token guesses come
from the same vocabulary at a fraction of the compute (early-exit drafting, no extra weights to download).

`truncate_gguf` copies the source GGUF the way gguf-py's `gguf_new_metadata.py` does: every key/value goes
through `GGUFWriter.add_key_value` with its original type, every kept tensor is declared with its original
byte shape and GGML type and written from the reader's memory map, so quantized blocks are copied byte for
byte (nothing is dequantized). Only these keys change:

- `{arch}.block_count` becomes N;
- `general.name` gets the suffix " (first N layers)";
- per-layer arrays under `{arch}.` (an array whose length equals the old block count, as OpenELM's
  head counts or a sliding-window pattern) are cut to their first N entries, since llama.cpp rejects a
  per-layer array whose length is not block_count;
- `{arch}.nextn_predict_layers` (multi-token-prediction blocks, stored as the last blocks) becomes 0, since
  those blocks are dropped with the rest.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import RyzansteinError
from . import store

_BLOCK = re.compile(r"^blk\.(\d+)\.")


def _field_value(reader, key: str):
    field = reader.get_field(key)
    return field.contents() if field is not None else None


def truncate_gguf(src: Path, dst: Path, n_layers: int) -> Path:
    """Write `dst`: `src` with only blocks 0..n_layers-1 (plus every non-block tensor); returns `dst`."""
    import gguf  # ~0.2 s to import: only when a self-draft is first written

    src, dst = Path(src), Path(dst)
    reader = gguf.GGUFReader(src, "r")
    arch = _field_value(reader, gguf.Keys.General.ARCHITECTURE)
    if not arch:
        raise RyzansteinError(f"{src} has no general.architecture: not a model GGUF")
    block_key = f"{arch}.block_count"
    n_blocks = _field_value(reader, block_key)
    if n_blocks is None:
        raise RyzansteinError(f"{src} has no {block_key}: cannot truncate its layers")
    n_blocks = int(n_blocks)
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or not 1 <= n_layers < n_blocks:
        raise RyzansteinError(f"self:{n_layers} needs 1 <= N < L={n_blocks} layers")

    tmp = dst.with_suffix(".partial")
    dst.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(tmp, arch=arch, endianess=reader.endianess)
    alignment = _field_value(reader, gguf.Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = int(alignment)

    try:
        _copy_fields(reader, writer, gguf, arch, n_blocks, n_layers)
        kept = [t for t in reader.tensors if (m := _BLOCK.match(t.name)) is None or int(m.group(1)) < n_layers]
        for t in kept:  # declared with the reader's raw byte shape: the writer derives the logical shape
            writer.add_tensor_info(t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in kept:
            writer.write_tensor_data(t.data, tensor_endianess=reader.endianess)
        writer.close()
        os.replace(tmp, dst)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return dst


def _copy_fields(reader, writer, gguf, arch: str, n_blocks: int, n_layers: int) -> None:
    """Every key/value of `reader` into `writer`, with its type; the few layer-count keys adjusted."""
    overrides = {
        f"{arch}.block_count": n_layers,
        f"{arch}.nextn_predict_layers": 0,
    }
    for field in reader.fields.values():
        # GGUF.* are the reader's header pseudo-fields; the writer writes general.architecture itself
        if field.name.startswith("GGUF.") or field.name == gguf.Keys.General.ARCHITECTURE:
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = field.contents()
        if field.name in overrides and vtype != gguf.GGUFValueType.ARRAY:
            value = overrides[field.name]
        elif field.name == gguf.Keys.General.NAME:
            value = f"{value} (first {n_layers} layers)"
        elif (vtype == gguf.GGUFValueType.ARRAY and field.name.startswith(f"{arch}.")
              and len(field.types) == 2 and len(value) == n_blocks):
            value = value[:n_layers]  # a per-layer array
        writer.add_key_value(field.name, value, vtype, sub_type=sub_type)


def self_draft_path(src: Path, n_layers: int, sha256: str | None) -> Path:
    """The cached N-layer self-draft of `src` under `home()/selfdraft/`, made on first use."""
    src = Path(src)
    out = store.home() / "selfdraft" / f"{store.cache_key(src, sha256)}-L{n_layers}.gguf"
    if not out.is_file():
        truncate_gguf(src, out, n_layers)
    return out
