"""The one small interface every backend implements.

The decoding loop only ever talks to `Model` and `Tokenizer`: it never learns which backend runs the forward.
A model's KV cache holds `tokens` (one entry per cached position); `score` (and `forward`) append to it,
`truncate` rolls it back. Rolling back then re-forwarding must give the same logits as never having gone forward.
A backend implements `_forward`, `_truncate`, `memory`, `vocab_size`, and may offer `new_context` (another KV
cache over the same weights) and `truncated` (its first N layers: the `self:N` draft).

`score` is the decode loop's forward: it returns `Logits`, rows left where the backend computed them, which
the loop asks only for what it needs (the argmax ids when greedy, a host copy of the rows when sampling).
A host backend's rows are a numpy array already; the torch backend on a GPU keeps them on the device
(`_score`, torch_model.TorchLogits), so a greedy step brings back n token ids, never n x vocab floats.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import ContextOverflow, RyzansteinError


@dataclass(frozen=True)
class SpecialTokens:
    bos_id: int | None
    eos_id: int | None
    stop_ids: frozenset[int]  # every end-of-generation id (EOS, EOT, <|im_end|>, ...)


def valid_text(text: str) -> bytes:
    """`text` as UTF-8, or one line naming the lone surrogate (from a JSON "\\ud800" escape) and where it is."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RyzansteinError(f"the text holds a lone surrogate U+{ord(text[e.start]):04X} at character {e.start}: "
                              "it is not valid Unicode; send UTF-8 text (a \\ud800-\\udfff escape in JSON must be "
                              "one half of a pair)") from None


class Tokenizer(ABC):
    """Text <-> token ids with the model's own vocabulary.

    Control tokens (<|im_start|>, <|im_end|>, ...) come only from text we trust: `encode` parses their texts
    unless told not to, and `encode_markup` parses them only in the segments marked as markup (a chat
    template's own text), so a message's content can never forge a turn.
    """

    special: SpecialTokens
    chat_template: str | None
    bos_text: str  # textual forms, for chat templates
    eos_text: str

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @abstractmethod
    def encode(self, text: str, add_special: bool = False, parse_special: bool = True) -> list[int]:
        """Token ids of `text`; with parse_special, control-token texts in `text` map to their ids, else they
        are plain text. RyzansteinError for text that is not valid Unicode (valid_text)."""

    @abstractmethod
    def special_texts(self) -> dict[str, int]:
        """The texts parse_special turns into control tokens, and their ids."""

    def special_ids(self, width: int) -> set[int]:
        """Every special id below `width` (BOS, EOS, the stop ids, the control tokens): what a reduced draft
        vocabulary always keeps."""
        s = self.special
        return {i for i in (s.bos_id, s.eos_id, *s.stop_ids, *self.special_texts().values())
                if i is not None and 0 <= i < width}

    def encode_markup(self, segments: Sequence[tuple[str, bool]]) -> list[int]:
        """Ids of the concatenated texts of `segments` [(text, is_markup)]: control-token texts become control
        tokens only inside markup. The rest is tokenized as one text across segment edges, so when the plain
        segments hold no control-token text the ids are exactly those of encode(whole text)."""
        if not hasattr(self, "_special_re"):  # built once: the alternation, longest text first
            texts = sorted(self.special_texts(), key=len, reverse=True)
            self._special_re = re.compile("|".join(map(re.escape, texts))) if texts else None
        specials, ids, run = self.special_texts(), [], []

        def flush() -> None:
            text = "".join(run)
            run.clear()
            if text:
                ids.extend(self.encode(text, parse_special=False))

        for text, markup in segments:
            pos = 0
            for m in (self._special_re.finditer(text) if markup and self._special_re else ()):
                run.append(text[pos:m.start()])
                flush()
                ids.append(specials[m.group()])
                pos = m.end()
            run.append(text[pos:])
        flush()
        return ids

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; a partial UTF-8 sequence at the end decodes to U+FFFD."""

    @abstractmethod
    def token_text(self, token_id: int) -> str:
        """The vocabulary entry of one id, as stored (for compatibility checks)."""

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token adds to the text (a piece of a UTF-8 character stays a piece): for logprobs."""
        return self.decode([token_id]).encode("utf-8")


class PieceTokenizer(Tokenizer):
    """A tokenizer whose text is the concatenation of each id's bytes, as llama.cpp renders a GGUF vocabulary
    (special tokens rendered too): decoding is joining pieces."""

    @abstractmethod
    def piece(self, token_id: int) -> bytes:
        """The bytes this token adds to the text."""

    def decode(self, ids: Sequence[int]) -> str:
        return b"".join(self.piece(int(i)) for i in ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return self.piece(int(token_id))


@dataclass
class MemoryUse:
    weights_bytes: int
    kv_cache_bytes: int  # allocated for n_ctx positions
    kv_bytes_per_token: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes


@dataclass
class ModelInfo:
    name: str  # what the user asked for (known name or path)
    path: str  # file or folder that was loaded
    backend: str  # "native" | "llama.cpp" | "torch"
    arch: str
    n_layers: int
    n_ctx: int
    n_ctx_train: int
    threads: int
    dtype: str  # "q4_k_m", "float32", "bfloat16", ...
    device: str = "cpu"
    extra: dict = field(default_factory=dict)


class Logits:
    """The logits rows of one forward, (n, vocab), held by the backend that computed them: here a float32 host
    array (valid until that model's next forward). The same questions are answered on the device by a
    backend that keeps its rows there (torch_model.TorchLogits)."""

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows  # (n, V) float32

    def __len__(self) -> int:
        return self.rows.shape[0]

    def argmax(self) -> list[int]:
        """The most likely id of each row; on a tie the lowest id (numpy's and torch's rule alike)."""
        return self.rows.argmax(axis=-1).tolist()

    def top(self) -> tuple[list[int], list[float]]:
        """Each row's argmax and its softmax probability (a draft's confidence), without building the softmax."""
        ids = self.rows.argmax(axis=-1)  # (n,)
        top = np.take_along_axis(self.rows, ids[:, None], axis=-1)  # (n, 1)
        probs = 1.0 / np.exp(self.rows - top).sum(axis=-1, dtype=np.float64)  # (n,)
        return ids.tolist(), probs.tolist()

    def numpy(self) -> np.ndarray:
        """All rows as a float32 host array (n, V): what sampling needs; a copy only where the rows are not on
        the host."""
        return self.rows


class Model(ABC):
    """A causal LM with a KV cache for a single sequence."""

    info: ModelInfo
    tokenizer: Tokenizer

    def __init__(self) -> None:
        self.tokens: list[int] = []  # ids whose keys/values are in the cache, position i = tokens[i]

    @property
    def pos(self) -> int:
        """Number of cached positions (the position the next token will take)."""
        return len(self.tokens)

    @property
    def n_ctx(self) -> int:
        return self.info.n_ctx

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Width of a logits row (may exceed the tokenizer's vocabulary: padded embeddings)."""

    @abstractmethod
    def _forward(self, tokens: Sequence[int], last_only: bool) -> np.ndarray:
        """Backend forward over new tokens at positions pos..pos+n-1; returns (n or 1, vocab) float32 logits."""

    def _score(self, tokens: Sequence[int], last_only: bool) -> Logits:
        """`_forward`, its rows where the backend keeps them; a backend whose logits live on a device overrides it."""
        return Logits(self._forward(tokens, last_only))

    @abstractmethod
    def _truncate(self, pos: int) -> None:
        """Drop cached positions >= pos."""

    @abstractmethod
    def memory(self) -> MemoryUse: ...

    def score(self, tokens: Sequence[int], last_only: bool = False) -> Logits:
        """Run the new `tokens` through the model in one call; the logits rows of each (or just the last) of them,
        left where the backend computed them. The decode loop's forward: ask the result for what you need.
        """
        n = len(tokens)
        if n == 0:
            raise ValueError("forward needs at least one token")
        if self.pos + n > self.n_ctx:
            raise ContextOverflow(
                f"context full: {self.pos} cached + {n} new tokens > context size {self.n_ctx}; "
                "use a shorter prompt or a larger --ctx-size"
            )
        logits = self._score(tokens, last_only)
        self.tokens.extend(int(t) for t in tokens)
        return logits

    def forward(self, tokens: Sequence[int], last_only: bool = False) -> np.ndarray:
        """`score`, as a float32 host array (n, vocab), or (1, vocab) with last_only.

        The array may be a view into backend memory that is valid only until the next call: copy it to keep it.
        """
        return self.score(tokens, last_only).numpy()

    def truncate(self, pos: int) -> None:
        """Roll the KV cache back so that it holds exactly the first `pos` tokens."""
        if not 0 <= pos <= self.pos:
            raise ValueError(f"truncate to {pos} outside 0..{self.pos}")
        if pos < self.pos:
            self._truncate(pos)
            del self.tokens[pos:]

    def reset(self) -> None:
        self.truncate(0)

    def cached_prefix(self, tokens: Sequence[int]) -> int:
        """How many leading positions of `tokens` the cache holds, at most all but its last token (whose logits
        a caller needs); the cache is left as it is."""
        cached, n = self.tokens, 0
        limit = min(len(cached), len(tokens) - 1)
        while n < limit and cached[n] == tokens[n]:
            n += 1
        return n

    def reuse_prefix(self, tokens: Sequence[int]) -> int:
        """Keep the cached positions shared with `tokens`, at most all but its last token (whose logits the
        caller needs), and drop the rest; return how many were kept."""
        n = self.cached_prefix(tokens)
        self.truncate(n)
        return n

    def new_context(self) -> "Model":
        """Another KV cache over the same weights, for generations run side by side (bench --lockstep)."""
        raise RyzansteinError(f"the {self.info.backend} backend cannot open a second context on one model")

    def restrict_vocab(self, keep: np.ndarray | None) -> bool:
        """Compute logits at least for the ids where the bool array `keep` (vocab_size,) is true and -inf for
        the others, until called again; None computes all again. A draft's cheaper output layer: the draft's
        distribution is then its softmax over those ids, which the acceptance rules use as they are, so
        output stays exact. False where the backend cannot skip output columns (every logit is computed)."""
        return False

    def capture(self, layers: Sequence[int]) -> bool:
        """From now on keep the outputs (residual stream) of these layers for every position forwarded, for
        `hidden_states`: what a draft head reads, taken from the forwards the target runs anyway (no extra
        pass). An empty list stops it. False where the backend cannot."""
        return False

    def hidden_states(self, start: int, end: int) -> np.ndarray:
        """The captured layers' outputs at cached positions start..end-1: (end - start, layers * dim) float32,
        a view valid until the next forward over those positions."""
        raise RyzansteinError(f"the {self.info.backend} backend does not hand back hidden states")

    def truncated(self, n_layers: int) -> "Model":
        """The first `n_layers` blocks of this model (+ its final norm and LM head), with a KV cache of its own:
        the `self:N` draft."""
        raise RyzansteinError(f"the {self.info.backend} backend cannot make a layer-truncated self-draft")

    @property
    def shares_weights(self) -> bool:
        """Whether these weights belong to another Model (a view, or a second context): not ours to count."""
        return "shares_weights_with" in self.info.extra

    def close(self) -> None:
        """Free backend resources (optional)."""
