"""A fast GGUF reader for loading weights: scalar metadata, tensor infos, and a memory map of the data.

The `gguf` package's GGUFReader builds a numpy view of every metadata array (a 152k-token vocabulary and
its merges), which takes seconds on the Qwen files; here arrays are skipped while the header is parsed and
read only when asked for (`array`: the tokenizer's vocabulary, merges and token types). Anything malformed (bad
magic, an unknown value type, a length past the end, a tensor whose data runs past the end of the file) is
one RyzansteinError naming the file and what is wrong, raised before any compute.
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import RyzansteinError

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # GGUF order: ne0 (the contiguous, input dimension) first
    type: int  # GGML type id
    offset: int  # absolute, in the file
    nbytes: int

    @property
    def type_name(self) -> str:
        from gguf.constants import GGMLQuantizationType  # `import gguf` loads its whole package: only on demand

        try:
            return GGMLQuantizationType(self.type).name
        except ValueError:
            return f"type {self.type}"


class GGUFFile:
    """The parsed header of a GGUF and a read-only memory map of it; `data(t)` is a tensor's bytes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as e:
            raise RyzansteinError(f"cannot read {self.path}: {e}") from None
        self.fields: dict[str, object] = {}  # scalars and strings; arrays map to None (skipped)
        self._arrays: dict[str, int] = {}  # array key -> file offset of its element type
        self.tensors: list[TensorInfo] = []
        try:
            self._parse()
        except (struct.error, UnicodeDecodeError, IndexError) as e:
            raise RyzansteinError(f"{self.path} is truncated or corrupt ({e}): download it again") from None

    # reading ---------------------------------------------------------------------------------------------
    def _take(self, fmt: str):
        v = struct.unpack_from(fmt, self._map, self._pos)
        self._pos += struct.calcsize(fmt)
        return v[0]

    def _string(self) -> str:
        n = self._take("<Q")
        if self._pos + n > len(self._map):
            raise IndexError("a string runs past the end of the file")
        s = self._map[self._pos:self._pos + n].decode("utf-8")
        self._pos += n
        return s

    def _value(self, vtype: int):
        if vtype in _SCALARS:
            return self._take(_SCALARS[vtype])
        if vtype == _STRING:
            return self._string()
        if vtype == _ARRAY:
            etype, count = self._take("<I"), self._take("<Q")
            if etype in _SCALARS:
                self._pos += count * struct.calcsize(_SCALARS[etype])
            elif etype == _STRING:  # each string's length is all we read: a tight loop (a 152k vocabulary: ~50 ms)
                m, pos, length = self._map, self._pos, _U64.unpack_from
                for _ in range(count):
                    pos += 8 + length(m, pos)[0]
                self._pos = pos
            else:
                for _ in range(count):
                    self._value(etype)
            if self._pos > len(self._map):
                raise IndexError("an array runs past the end of the file")
            return None
        raise RyzansteinError(f"{self.path} has a metadata value of unknown type {vtype}: the file is corrupt")

    def _parse(self) -> None:
        # the block sizes of every GGML type (`import gguf` loads its whole package, ~0.1 s: when a file is read)
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

        size = len(self._map)
        if self._map[:4] != b"GGUF":
            raise RyzansteinError(f"{self.path} is not a GGUF file (it starts with {self._map[:4]!r})")
        self._pos = 4
        version = self._take("<I")
        if version not in (2, 3):
            raise RyzansteinError(f"{self.path} is GGUF version {version}; versions 2 and 3 are supported")
        n_tensors, n_kv = self._take("<Q"), self._take("<Q")
        if n_tensors > 1 << 20 or n_kv > 1 << 20:
            raise RyzansteinError(f"{self.path} claims {n_tensors} tensors and {n_kv} metadata keys: corrupt")
        for _ in range(n_kv):
            key = self._string()
            vtype = self._take("<I")
            if vtype == _ARRAY:
                self._arrays[key] = self._pos
            self.fields[key] = self._value(vtype)
        infos = []
        for _ in range(n_tensors):
            name = self._string()
            n_dims = self._take("<I")
            if n_dims > 8:
                raise RyzansteinError(f"{self.path}: tensor {name} has {n_dims} dimensions: corrupt")
            shape = tuple(self._take("<Q") for _ in range(n_dims))
            infos.append((name, shape, self._take("<I"), self._take("<Q")))
        align = int(self.fields.get("general.alignment") or 32)
        start = -(-self._pos // align) * align
        for name, shape, ttype, off in infos:
            try:
                block, nbytes_block = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
            except (ValueError, KeyError):
                raise RyzansteinError(f"{self.path}: tensor {name} has unknown type {ttype}: the file is corrupt "
                                      "or newer than this reader") from None
            count = int(np.prod(shape, dtype=np.int64)) if shape else 1
            nbytes = count // block * nbytes_block
            if start + off + nbytes > size:
                raise RyzansteinError(f"{self.path} is truncated: tensor {name} ends at byte {start + off + nbytes} "
                                      f"of {size}; download the file again")
            self.tensors.append(TensorInfo(name, shape, ttype, start + off, nbytes))

    # access ----------------------------------------------------------------------------------------------
    def data(self, t: TensorInfo) -> memoryview:
        """The tensor's raw bytes (a view of the memory map)."""
        return memoryview(self._map)[t.offset:t.offset + t.nbytes]

    def array(self, key: str) -> list | np.ndarray | None:
        """A metadata array: a list of str for strings, a numpy array for numbers; None if the key is absent."""
        if key not in self._arrays:
            return None
        self._pos = self._arrays[key]
        etype, count = self._take("<I"), self._take("<Q")
        try:
            if etype in _SCALARS:
                dtype = np.dtype(_SCALARS[etype])
                return np.frombuffer(self._map, dtype, count, self._pos).copy()
            if etype == _STRING:
                return self._strings(count)
        except (struct.error, UnicodeDecodeError, ValueError) as e:
            raise RyzansteinError(f"{self.path}: metadata array {key} is corrupt ({e}): download the file "
                                  "again") from None
        raise RyzansteinError(f"{self.path}: metadata array {key} holds values of type {etype}, not strings or numbers")

    def _strings(self, count: int) -> list[str]:
        """`count` GGUF strings from self._pos (a 152k-entry vocabulary in ~0.1 s)."""
        m, pos, out, length = self._map, self._pos, [], _U64.unpack_from
        for _ in range(count):
            end = pos + 8 + length(m, pos)[0]
            out.append(m[pos + 8:end].decode("utf-8"))
            pos = end
        if pos > len(m):
            raise ValueError("a string runs past the end of the file")
        return out

    def field(self, key: str, default=None):
        v = self.fields.get(key)
        return default if v is None else v

    def close(self) -> None:
        try:
            self._map.close()
        except BufferError:  # a view is still alive; the map closes when it goes
            pass
