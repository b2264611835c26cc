"""The GGUF's own tokenizer without llama.cpp: byte-level BPE read from the file's metadata, run on the
`tokenizers` library, giving the ids llama.cpp gives (tests/test_gguf_tokenizer.py compares them on
thousands of texts for each of our models).

What llama.cpp does (src/llama-vocab.cpp and src/unicode.cpp of the llama.cpp in llama-cpp-python 0.3.36),
and where it is done here:
- Token attributes (`_Vocab`): tokenizer.ggml.token_type, then overrides by token text: the end-of-turn,
  end-of-message and fill-in-the-middle tokens it recognises become control tokens, and the
  end-of-generation set is built from those texts and the special ids.
- Special tokens (`_partition`): every control, user-defined and unknown token, the longest text first, is
  cut out of the text wherever it occurs; without special-token parsing only user-defined ones are.
- Pre-tokenization (`_PRE`): the regexes of tokenizer.ggml.pre, which llama.cpp runs as hand-written
  splitters with its own Unicode tables. Here each is one regex with those tables written out as classes
  (llama_unicode.py: Python's and the Rust regex's own tables are an older or newer Unicode).
- BPE: merges by rank, the leftmost pair first, over the byte-level alphabet: the `tokenizers` BPE model.
- Pieces (decode): control, user-defined and unknown tokens render as their text; normal tokens through the
  byte-level alphabet.
Anything else (another tokenizer model or pre-tokenizer, byte tokens, a merge outside the vocabulary,
per-token strip rules) is TokenizerUnsupported, before any text is tokenized: the llama.cpp backend reads
those files.
"""
from __future__ import annotations

import json

import tokenizers

from ..errors import RyzansteinError
from . import llama_unicode
from .base import PieceTokenizer, SpecialTokens, valid_text
from .gguf_file import GGUFFile

# llama.cpp's token types (GGUF tokenizer.ggml.token_type) and attributes (llama.h)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
A_UNKNOWN, A_UNUSED, A_NORMAL, A_CONTROL, A_USER_DEFINED, A_BYTE = 1, 2, 4, 8, 16, 32
_TYPE_ATTR = {NORMAL: A_NORMAL, UNKNOWN: A_UNKNOWN, CONTROL: A_CONTROL, USER_DEFINED: A_USER_DEFINED,
              UNUSED: A_UNUSED, BYTE: A_BYTE}  # other types: no attribute (llama.cpp's UNDEFINED)


def _cls(spec: str) -> str:
    """A regex character class body for one of llama_unicode's range lists."""
    return "".join(f"\\x{{{a:x}}}" if a == b else f"\\x{{{a:x}}}-\\x{{{b:x}}}" for a, b in llama_unicode.ranges(spec))


_L, _N, _S = _cls(llama_unicode.LETTER), _cls(llama_unicode.NUMBER), _cls(llama_unicode.WHITESPACE)
# unicode_regex_split_custom_gpt2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
_GPT2 = (f"'s|'t|'re|'ve|'m|'ll|'d| ?[{_L}]+| ?[{_N}]+| ?[^{_S}{_L}{_N}]+|[{_S}]+(?![^{_S}])|[{_S}]+")
# unicode_regex_split_custom_qwen2: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}
#   | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+   (its case folding: ASCII letters only, as llama.cpp's)
_QWEN2 = (f"'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]|[^\\r\\n{_L}{_N}]?[{_L}]+|[{_N}]"
          f"| ?[^{_S}{_L}{_N}]+[\\r\\n]*|[{_S}]*[\\r\\n]+|[{_S}]+(?![^{_S}])|[{_S}]+")

# tokenizer.ggml.pre -> the regexes llama.cpp splits with, in order (each splits the pieces of the one before).
# Only names whose llama.cpp pre-tokenizer is one of these splitters with no other setting changed; smollm
# and qwen2 are the ones tested against llama.cpp.
_PRE = {
    **dict.fromkeys(("gpt-2", "phi-2", "mpt", "olmo", "jais", "trillion", "granite-docling", "exaone4", "gigachat",
                     "a.x-4.0", "mellum"), (_GPT2,)),
    **dict.fromkeys(("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", "mellum2"),
                    (f"[{_N}]", _GPT2)),
    **dict.fromkeys(("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan",
                     "solar-open"), (_QWEN2,)),
}

# Texts llama.cpp gives a meaning (llama_vocab::impl::load): a kind of special id found by text when the file
# names none, and the end-of-generation texts. Such tokens become control tokens.
_BY_TEXT = {
    "eot": ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>",
            "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"),
    "eom": ("<|eom_id|>",),
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
                "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
                "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
                "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}
_EOG_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
              "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
              "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
              "<｜end▁of▁sentence｜>", "[e~[")
_RENDERED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")  # gpt-oss: always user-defined
_KEYS = {"bos": "bos_token_id", "eos": "eos_token_id", "eot": "eot_token_id", "eom": "eom_token_id",
         "fim_pre": "fim_pre_token_id", "fim_suf": "fim_suf_token_id", "fim_mid": "fim_mid_token_id",
         "fim_pad": "fim_pad_token_id", "fim_rep": "fim_rep_token_id", "fim_sep": "fim_sep_token_id"}
_DEPRECATED_KEYS = {"fim_pre": "prefix_token_id", "fim_suf": "suffix_token_id", "fim_mid": "middle_token_id"}


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte as the printable character a byte-level vocabulary uses."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = iter(range(256, 512))
    return {b: chr(b) if b in keep else chr(next(extra)) for b in range(256)}


_ALPHABET = _byte_alphabet()
_BYTE_OF = {c: b for b, c in _ALPHABET.items()}


class TokenizerUnsupported(RyzansteinError):
    """The GGUF's tokenizer is not one this module reproduces exactly; llama.cpp's own tokenizer reads it."""


class _Vocab:
    """Tokens, their llama.cpp attributes and the special ids, as llama_vocab::impl::load leaves them."""

    def __init__(self, g: GGUFFile) -> None:
        name = g.path.name
        self.tokens = [t or f"[EMPTY_{i}]" for i, t in enumerate(g.array("tokenizer.ggml.tokens") or [])]
        n = len(self.tokens)
        if n == 0:
            raise RyzansteinError(f"{name} has no tokenizer.ggml.tokens: the file is corrupt")
        self.ids = {t: i for i, t in enumerate(self.tokens)}
        if len(self.ids) != n:
            raise RyzansteinError(f"{name} repeats a token of its vocabulary (llama.cpp refuses it too): the file is "
                                  "corrupt")
        types = g.array("tokenizer.ggml.token_type")
        if types is not None and len(types) < n:
            raise RyzansteinError(f"{name} has {len(types)} token types for {n} tokens: the file is corrupt")
        attr = [A_NORMAL] * n if types is None else [_TYPE_ATTR.get(t, 0) for t in types[:n].tolist()]
        if any(a & A_BYTE for a in attr):
            raise TokenizerUnsupported(f"{name} has byte tokens in a BPE vocabulary, which the built-in tokenizer "
                                       "does not read")

        special = {"bos": 11 if n > 11 else None, "eos": 11 if n > 11 else None}  # llama.cpp's BPE defaults
        for kind, key in (*_KEYS.items(), *_DEPRECATED_KEYS.items()):
            value = g.field(f"tokenizer.ggml.{key}")
            if value is not None and 0 <= int(value) < n:
                special[kind] = int(value)
        for kind, texts in _BY_TEXT.items():  # found by text where the file names none
            if special.get(kind) is not None:
                continue
            found = [self.ids[t] for t in texts if t in self.ids]
            # of several, llama.cpp takes the one its hash map yields first: that matters where the choice ends
            # generation (fim pad/rep/sep) or makes a token a control token (every eot text ends generation)
            matters = kind in ("fim_pad", "fim_rep", "fim_sep") or any(not attr[i] & A_CONTROL for i in found)
            if len(found) > 1 and kind != "eot" and matters:
                listed = ", ".join(self.tokens[i] for i in found)
                raise TokenizerUnsupported(f"{name} has several {kind} tokens ({listed}), which llama.cpp picks "
                                           "from in hash order")
            if found:
                special[kind] = found[0]
                attr[found[0]] |= A_CONTROL
        for i, a in enumerate(attr):  # control tokens named "unused"
            if a & A_CONTROL and "unused" in self.tokens[i]:
                attr[i] |= A_UNUSED

        eog = {special[k] for k in ("fim_pad", "fim_rep", "fim_sep") if special.get(k) is not None}
        for t in _EOG_TEXTS:
            if t in self.ids:
                eog.add(self.ids[t])
                attr[self.ids[t]] |= A_CONTROL
        for t in _RENDERED:
            if t in self.ids:
                attr[self.ids[t]] = A_USER_DEFINED
        eog |= {special[k] for k in ("eos", "eot", "eom") if special.get(k) is not None}
        texts = {self.tokens[i]: i for i in eog}
        ends = texts.keys()
        if "<|end|>" in ends and {"<|call|>", "<|calls|>"} & ends and {"<|return|>", "<|flush|>"} & ends:
            eog.discard(texts["<|end|>"])  # o200k_harmony, solar-open: <|end|> ends a message, not generation
            attr[texts["<|end|>"]] = A_USER_DEFINED
        if "</s>" in ends and {"<|tool_response>", "<|plamo:eos|>"} & ends:
            eog.discard(texts["</s>"])
            attr[texts["</s>"]] = A_NORMAL
        self.attr, self.special, self.eog = attr, special, eog

        model_name = str(g.field("general.name") or "").lower()
        if any(s in model_name for s in ("phi-3", "phi3", "modern-bert")):
            raise TokenizerUnsupported(f"{name} is a model ({model_name}) whose special tokens llama.cpp strips "
                                       "spaces around, which the built-in tokenizer does not do")
        self.add_bos = bool(g.field("tokenizer.ggml.add_bos_token", False))
        self.add_eos = bool(g.field("tokenizer.ggml.add_eos_token", False))
        for kind, add in (("bos", self.add_bos), ("eos", self.add_eos)):
            if add and special.get(kind) is None:
                raise RyzansteinError(f"{name} asks for a {kind.upper()} token it does not have: the file is corrupt")


def _bpe(g: GGUFFile, vocab: _Vocab, pre: tuple[str, ...]) -> tokenizers.Tokenizer:
    """The BPE model over the vocabulary and merges, behind the pre-tokenizer regexes and the byte alphabet.

    A byte-level character the vocabulary lacks (SmolLM2 has no token for the bytes 0x04, 0xF1, ...) stays a
    symbol of its own in llama.cpp: no merge joins it, and it gives no token. Here it is a token numbered past
    the vocabulary, which no merge names, and `encode` drops it (the `tokenizers` BPE would skip the character
    and merge its neighbours). The model is read from JSON, which the library parses in Rust: 0.3 s for
    Qwen's 151k merges, against 1 s through Python tuples."""
    name, n = g.path.name, len(vocab.tokens)
    ids = dict(vocab.ids)
    ids.update((c, n + j) for j, c in enumerate(c for c in _ALPHABET.values() if c not in vocab.ids))
    # "a b" pairs, a repeat keeping its first rank (llama.cpp's); a merge that is not two tokens of the
    # vocabulary making a third (the library checks) would behave in llama.cpp as no tokenizer does
    merges = list(dict.fromkeys(g.array("tokenizer.ggml.merges") or []))
    if not merges:
        raise RyzansteinError(f"{name} has no tokenizer.ggml.merges: the file is corrupt")
    model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "vocab": ids, "merges": merges}
    try:
        tok = tokenizers.Tokenizer.from_str(json.dumps({
            "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
            "pre_tokenizer": None, "post_processor": None, "decoder": None, "model": model}, ensure_ascii=False))
    except Exception as e:  # the library raises a bare Exception naming the merge
        raise TokenizerUnsupported(f"{name}'s merges are not pairs of its tokens making a token "
                                   f"({str(e).splitlines()[0][:120]})") from None
    pt = tokenizers.pre_tokenizers
    tok.pre_tokenizer = pt.Sequence([*(pt.Split(tokenizers.Regex(r), "isolated") for r in pre),
                                     pt.ByteLevel(add_prefix_space=False, use_regex=False)])
    return tok


class GGUFTokenizer(PieceTokenizer):
    """A GGUF's byte-level BPE tokenizer, giving llama.cpp's ids and pieces (TokenizerUnsupported if it cannot)."""

    def __init__(self, g: GGUFFile) -> None:
        name, model = g.path.name, g.field("tokenizer.ggml.model")
        if model != "gpt2":
            raise TokenizerUnsupported(f"{name} has a {model!r} tokenizer; the built-in tokenizer reads byte-level "
                                       "BPE ('gpt2') only")
        pre = g.field("tokenizer.ggml.pre")
        if pre not in _PRE:
            raise TokenizerUnsupported(f"{name}'s pre-tokenizer {pre!r} is not one the built-in tokenizer "
                                       "reproduces")
        v = _Vocab(g)
        self._tokens, self._attr, self._add_bos, self._add_eos = v.tokens, v.attr, v.add_bos, v.add_eos
        self._bpe = _bpe(g, v, _PRE[pre])
        self._whole = self._bpe.get_vocab_size() == len(v.tokens)  # every byte-level character is a token
        gated = [i for i, a in enumerate(v.attr) if a & (A_CONTROL | A_USER_DEFINED | A_UNKNOWN)]
        gated.sort(key=lambda i: -len(v.tokens[i].encode()))  # llama.cpp: longest text first (in bytes)
        self._always = [(v.tokens[i], i) for i in gated if v.attr[i] & A_USER_DEFINED and
                        not v.attr[i] & (A_CONTROL | A_UNKNOWN)]  # parsed with or without parse_special
        self._gated = [(v.tokens[i], i) for i in gated]
        self._pieces: dict[int, bytes] = {}
        self._special: dict[str, int] | None = None
        bos, eos = v.special.get("bos"), v.special.get("eos")
        stops = v.eog | {t for t in (eos, v.special.get("eot")) if t is not None}
        self.special = SpecialTokens(bos, eos, frozenset(stops))
        self.chat_template = g.field("tokenizer.chat_template")
        self.bos_text = self.token_text(bos) if bos is not None else ""
        self.eos_text = self.token_text(eos) if eos is not None else ""

    @property
    def vocab_size(self) -> int:
        return len(self._tokens)

    def _partition(self, text: str, parse_special: bool) -> list[str | int]:
        """`text` cut into plain runs (str) and special-token ids (int), as tokenizer_st_partition cuts it."""
        parts: list[str | int] = [text]
        for token, i in self._gated if parse_special else self._always:
            if token not in text:  # (a cheap test first: a part holds it only if the whole text does)
                continue
            cut: list[str | int] = []
            for part in parts:
                if isinstance(part, int) or token not in part:
                    cut.append(part)
                    continue
                for j, run in enumerate(part.split(token)):
                    if j:
                        cut.append(i)
                    if run:
                        cut.append(run)
            parts = cut
        return parts

    def encode(self, text: str, add_special: bool = False, parse_special: bool = True) -> list[int]:
        valid_text(text)
        ids = [self.special.bos_id] if add_special and self._add_bos else []
        for part in self._partition(text, parse_special) if text else ():
            if isinstance(part, int):
                ids.append(part)
            else:
                bpe = self._bpe.encode(part, add_special_tokens=False).ids
                ids.extend(bpe if self._whole else (i for i in bpe if i < len(self._tokens)))
        if add_special and self._add_eos:
            ids.append(self.special.eos_id)
        return ids

    def special_texts(self) -> dict[str, int]:
        """Control (and unknown-token) texts: what encode parses only with parse_special."""
        if self._special is None:
            self._special = {t: i for i, t in enumerate(self._tokens) if self._attr[i] & (A_CONTROL | A_UNKNOWN)}
        return self._special

    def piece(self, token_id: int) -> bytes:
        """The bytes this token adds to the text (special tokens rendered), as llama_token_to_piece gives them."""
        p = self._pieces.get(token_id)
        if p is None:
            text, attr = self.token_text(token_id), self._attr[token_id]
            if attr & (A_CONTROL | A_USER_DEFINED | A_UNKNOWN):
                p = text.encode()
            elif attr & A_NORMAL:  # llama_decode_text, with its marker for a character outside the alphabet
                p = b"".join(bytes([_BYTE_OF[c]]) if c in _BYTE_OF else
                             b"[UNK_BYTE_0x" + c.encode().hex().encode() + text.encode() + b"]" for c in text)
            else:
                p = b""  # unused and undefined tokens render as nothing
            self._pieces[token_id] = p
        return p

    def token_text(self, token_id: int) -> str:
        if not 0 <= token_id < len(self._tokens):
            raise ValueError(f"token id {token_id} outside the vocabulary (size {len(self._tokens)})")
        return self._tokens[token_id]
