"""A draft head: a one-layer drafter that reads the target's own hidden states (EAGLE-3's design, trained by
`ryzanstein distill`), run on the native kernels.

What it computes for the row of target position i (the token x_i the target has forwarded, and x_{i+1} after it):

    g   = fuse . [rms(f_1); rms(f_2); rms(f_3)]    the target's outputs of three layers (low, middle, high) at i
    x   = mix . [rms(embd(x_{i+1})); rms(g)]       embd: the target's own token embedding
    h   = one decoder layer (its own KV cache) over x, at position i
    p   = softmax(output . rmsnorm(h))             over the draft vocabulary; d2t maps a draft id to a target id

and p predicts x_{i+2}. Past what the target has computed (the 2nd, 3rd ... drafted token) the head's own h of
the row before stands in for g: that is how it was trained (distill unrolls several steps the same way).
`rms` has no weight of its own (its scale is in the matrix after it). The output layer's rows are the
target's own output rows of the draft vocabulary, copied byte for byte (frozen in training).

The file is a GGUF (architecture `ryzanstein-head`), stored under the model store keyed by the target file's
sha256 (store.head_path); it names the target it was trained on and is refused for any other file.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import RyzansteinError
from .base import Logits, MemoryUse, Model, ModelInfo
from .gguf_file import GGUFFile
from .native import NativeModel, _ext, build_id

ARCH = "ryzanstein-head"
FORMAT = 1
Q8_0, F16, F32, I32 = 8, 1, 0, 26  # GGML type ids


class HeadError(RyzansteinError):
    """A head file that cannot be used (corrupt, for another target, or of another format)."""


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """The shape of a head and the target it belongs to (the GGUF's metadata)."""

    target_sha256: str
    target_name: str
    layers: tuple[int, ...]  # target layers whose outputs are fused
    dim: int
    n_head: int
    n_head_kv: int
    head_dim: int
    ffn: int
    eps: float
    rope_base: float
    draft_vocab: int
    target_vocab: int
    trained_tokens: int = 0  # training positions seen (all epochs), for `models list`

    def native_config(self) -> dict:
        return {"n_layer": 1, "dim": self.dim, "n_head": self.n_head, "n_head_kv": self.n_head_kv,
                "head_dim": self.head_dim, "ffn": self.ffn, "vocab": self.draft_vocab, "eps": self.eps,
                "rope_base": self.rope_base, "rope_neox": 1, "n_feat": len(self.layers),
                "embd_rows": self.target_vocab}

    def matrix_shapes(self) -> dict[str, tuple[int, int]]:
        """(rows, cols) of every trained matrix, by GGUF name."""
        d, qd, kvd = self.dim, self.n_head * self.head_dim, self.n_head_kv * self.head_dim
        return {"fuse": (d, len(self.layers) * d), "mix": (d, 2 * d), "blk.0.attn_q": (qd, d),
                "blk.0.attn_k": (kvd, d), "blk.0.attn_v": (kvd, d), "blk.0.attn_output": (d, qd),
                "blk.0.ffn_gate": (self.ffn, d), "blk.0.ffn_up": (self.ffn, d), "blk.0.ffn_down": (d, self.ffn)}

    def vector_names(self) -> tuple[str, ...]:
        return ("blk.0.attn_norm", "blk.0.ffn_norm", "output_norm")


def default_layers(n_layer: int) -> tuple[int, int, int]:
    """EAGLE-3's choice: a low, a middle and a high layer (the last one's output is the logits' input, which
    the high layer already nearly is)."""
    return (2, n_layer // 2, n_layer - 3)


# ---- the file ------------------------------------------------------------------------------------------
def _key(name: str) -> str:
    return f"{ARCH}.{name}"


def write_head(path: Path, spec: HeadSpec, matrices: dict[str, np.ndarray], vectors: dict[str, np.ndarray],
               d2t: np.ndarray, output_rows: bytes, output_type: int, matrix_types: dict[str, int] | None = None
               ) -> Path:
    """Write the head atomically: to a temporary name beside `path`, read back and checked, then renamed, so a
    crash (or a full disk) never leaves a half-written head under the name that is used."""
    import gguf  # only when a head is written
    from gguf import GGMLQuantizationType as T
    from gguf import quants

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    types = {"fuse": F16, **(matrix_types or {})}
    try:
        w = gguf.GGUFWriter(str(tmp), ARCH)
        w.add_uint32(_key("format"), FORMAT)
        w.add_string(_key("target_sha256"), spec.target_sha256)
        w.add_string(_key("target_name"), spec.target_name)
        w.add_array(_key("layers"), [int(x) for x in spec.layers])
        for k in ("dim", "n_head", "n_head_kv", "head_dim", "ffn", "draft_vocab", "target_vocab"):
            w.add_uint32(_key(k), int(getattr(spec, k)))
        w.add_uint64(_key("trained_tokens"), int(spec.trained_tokens))
        w.add_float32(_key("eps"), float(spec.eps))
        w.add_float32(_key("rope_base"), float(spec.rope_base))
        for name, (rows, cols) in spec.matrix_shapes().items():
            a = np.ascontiguousarray(matrices[name], dtype=np.float32)
            if a.shape != (rows, cols):
                raise HeadError(f"head matrix {name} is {a.shape}, expected {(rows, cols)}")
            t = types.get(name, Q8_0)
            if t == F16:
                w.add_tensor(f"{name}.weight", a.astype(np.float16))
            elif t == F32:
                w.add_tensor(f"{name}.weight", a)
            else:
                w.add_tensor(f"{name}.weight", quants.quantize(a, T(t)), raw_dtype=T(t))
        for name in spec.vector_names():
            w.add_tensor(f"{name}.weight", np.ascontiguousarray(vectors[name], dtype=np.float32))
        row_bytes = len(output_rows) // spec.draft_vocab
        w.add_tensor("output.weight", np.frombuffer(output_rows, np.uint8).reshape(spec.draft_vocab, row_bytes),
                     raw_dtype=T(output_type))
        w.add_tensor("d2t", np.ascontiguousarray(d2t, dtype=np.int32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        read_spec(GGUFFile(tmp))  # what was written reads back
        os.replace(tmp, path)
    except OSError as e:
        raise HeadError(f"cannot write the head {path}: {e.strerror or e}; free some disk space or choose another "
                        "place (RYZANSTEIN_HOME)") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_spec(g: GGUFFile) -> HeadSpec:
    """The head's spec from its metadata, every tensor checked for presence and shape; HeadError if not."""
    name = g.path.name
    if g.field("general.architecture") != ARCH:
        raise HeadError(f"{g.path} is not a draft head (architecture {g.field('general.architecture')!r})")
    if g.field(_key("format")) != FORMAT:
        raise HeadError(f"{g.path} is a head of format {g.field(_key('format'))}, this version reads {FORMAT}: "
                        "train it again with `ryzanstein distill`")
    try:
        spec = HeadSpec(
            target_sha256=str(g.field(_key("target_sha256"))), target_name=str(g.field(_key("target_name"))),
            layers=tuple(int(x) for x in g.array(_key("layers"))),
            **{k: int(g.field(_key(k))) for k in ("dim", "n_head", "n_head_kv", "head_dim", "ffn", "draft_vocab",
                                                  "target_vocab")},
            eps=float(g.field(_key("eps"))), rope_base=float(g.field(_key("rope_base"))),
            trained_tokens=int(g.field(_key("trained_tokens"), 0)))
    except (TypeError, ValueError) as e:
        raise HeadError(f"{g.path} lacks head metadata ({e}): the file is corrupt; train it again with "
                        "`ryzanstein distill`") from None
    tensors = {t.name: t for t in g.tensors}
    want = {f"{k}.weight": (c, r) for k, (r, c) in spec.matrix_shapes().items()}
    want.update({f"{k}.weight": (spec.dim,) for k in spec.vector_names()})
    want["output.weight"] = (spec.dim, spec.draft_vocab)
    want["d2t"] = (spec.draft_vocab,)
    for k, shape in want.items():
        t = tensors.get(k)
        if t is None or tuple(int(x) for x in t.shape) != shape:
            raise HeadError(f"{name}: tensor {k} is {'missing' if t is None else tuple(t.shape)}, expected {shape}: "
                            "the file is corrupt; train it again with `ryzanstein distill`")
    return spec


# ---- the head at inference --------------------------------------------------------------------------------
class DraftHead(Model):
    """A head over a native target: its own weights and KV cache, the target's token embedding.

    A Model whose position i is the head row of target position i; `tokens[i]` is the token x_{i+1} it read
    there. `teacher(tokens, feats)` feeds rows whose target hidden states are known (the forward ends on the
    row whose logits draft the next token); `score(tokens)` feeds rows on the head's own previous output (the
    chain of drafts past the target). Logits are over the draft vocabulary; `d2t` maps them to target ids.
    """

    def __init__(self, path: str | Path, target: Model) -> None:
        super().__init__()
        path = Path(path)
        if not isinstance(target, NativeModel):
            raise HeadError(f"a draft head runs on the native backend; the target is on {target.info.backend}: "
                            "use --backend native")
        try:
            g = GGUFFile(path)
        except RyzansteinError as e:
            raise HeadError(f"{path} is not a readable head ({e}); train it again with `ryzanstein distill`") from None
        spec = read_spec(g)
        self.spec, self.target = spec, target
        arch = target._arch
        if (spec.dim, spec.target_vocab) != (arch.dim, arch.vocab) or max(spec.layers) >= arch.n_layer - 1:
            raise HeadError(f"{path.name} was trained for {spec.target_name} and does not fit {target.info.name}: "
                            f"train one for it with `ryzanstein distill --model {target.info.name}`")
        N = _ext()
        tensors = {"token_embd": target.tensors["token_embd"]}
        for t in g.tensors:
            name = t.name.removesuffix(".weight")
            if len(t.shape) == 2:
                tensors[name] = N.Tensor(t.type, int(t.shape[1]), int(t.shape[0]), g.data(t), 0)
        vectors = {k: np.frombuffer(g.data(next(t for t in g.tensors if t.name == f"{k}.weight")), np.float32).copy()
                   for k in spec.vector_names()}
        self.d2t = np.frombuffer(g.data(next(t for t in g.tensors if t.name == "d2t")), np.int32).astype(np.int64)
        if self.d2t.min() < 0 or self.d2t.max() >= arch.vocab:
            raise HeadError(f"{path.name}: its vocabulary map points outside the target's vocabulary: the file is "
                            "corrupt; train it again with `ryzanstein distill`")
        del g
        threads = target.info.threads
        self._weights = N.Model(spec.native_config(), tensors, vectors, threads, target.info.extra.get("isa"))
        self.tokenizer = target.tokenizer
        self.info = ModelInfo(
            name=f"head:{target.info.name}", path=str(path), backend="native", arch=ARCH, n_layers=1,
            n_ctx=target.info.n_ctx, n_ctx_train=target.info.n_ctx_train, threads=self._weights.threads,
            dtype="head", extra={"isa": self._weights.isa, "kernels": build_id()})
        self._ctx = N.Context(self._weights, self.info.n_ctx, 1)
        self._out = np.empty((17, spec.draft_vocab), np.float32)
        self._hidden = np.zeros((1, spec.dim), np.float32)  # the last row's output: the next draft's g
        self._feats: np.ndarray | None = None

    @property
    def vocab_size(self) -> int:
        return self.spec.draft_vocab

    def teacher(self, tokens: Sequence[int], feats: np.ndarray) -> Logits:
        """Feed rows with the target's hidden states `feats` (len(tokens), layers * dim); the last row's logits."""
        self._feats = np.ascontiguousarray(feats, dtype=np.float32)
        try:
            return self.score(tokens, last_only=True)
        finally:
            self._feats = None

    def _forward(self, tokens: Sequence[int], last_only: bool) -> np.ndarray:
        ids = np.asarray(tokens, dtype=np.int32)
        rows = 1 if last_only else len(ids)
        if self._out.shape[0] < rows:
            self._out = np.empty((max(rows, 17), self.spec.draft_vocab), np.float32)
        if self._hidden.shape[0] < rows:
            self._hidden = np.resize(self._hidden, (rows, self.spec.dim))
        io = {"feats": self._feats} if self._feats is not None else {
            "hidden_in": np.ascontiguousarray(np.broadcast_to(self._hidden[rows - 1 if not last_only else 0],
                                                              (len(ids), self.spec.dim)))}
        try:
            self._ctx.forward(ids, self.pos, self._out, last_only, hidden_out=self._hidden, **io)
        except ValueError as e:
            raise RyzansteinError(f"draft head forward: {e}") from None
        if not last_only:  # the chain continues from the last row
            self._hidden[0] = self._hidden[rows - 1]
        return self._out[:rows]

    def _truncate(self, pos: int) -> None:
        pass  # a position move, as in the target

    def memory(self) -> MemoryUse:
        return MemoryUse(weights_bytes=int(self._weights.weights_bytes), kv_cache_bytes=int(self._ctx.kv_bytes),
                         kv_bytes_per_token=int(self._ctx.kv_bytes_per_token))

    def over(self, target: Model) -> DraftHead:
        """This head's weights with a KV cache of its own, drafting for `target` (another context of the same
        target weights: bench --lockstep)."""
        twin = object.__new__(DraftHead)
        Model.__init__(twin)
        for k in ("spec", "d2t", "_weights", "tokenizer"):
            setattr(twin, k, getattr(self, k))
        twin.target = target
        twin.info = dataclasses.replace(self.info, extra={**self.info.extra, "shares_weights_with": self.info.name})
        twin._ctx = type(self._ctx)(self._weights, self.info.n_ctx, 1)
        twin._out, twin._hidden, twin._feats = self._out.copy(), self._hidden.copy(), None
        return twin

    def close(self) -> None:
        self._ctx = None
