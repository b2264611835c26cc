"""A `Tokenizer` over a Hugging Face style folder, using the fast `tokenizers` library.

Reads tokenizer.json, and the special ids from the folder's own files: tokenizer_config.json (token texts),
generation_config.json and config.json (ids; an eos_token_id may be a list). Every EOS-like id any of them
names is a stop id; the first one found, in that order, is `eos_id`.
We do not import transformers here: it costs seconds at startup and adds nothing at run time.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import tokenizers

from ..errors import ModelNotFound, RyzansteinError
from .base import SpecialTokens, Tokenizer, valid_text


def _read_json(path: Path) -> dict:
    """A JSON object file, {} if absent; one line naming the file if it is not a JSON object."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise RyzansteinError(f"{path} is not valid JSON ({e}): restore it from the model's source") from None
    if not isinstance(data, dict):
        raise RyzansteinError(f"{path} is not a JSON object: restore it from the model's source")
    return data


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte as the printable character a byte-level BPE vocabulary uses."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


_UNICODE_TO_BYTE = {c: b for b, c in _bytes_to_unicode().items()}


def _as_list(value) -> list[int]:
    """An id field as a list: absent -> [], int -> [int], list -> list."""
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


class HFTokenizer(Tokenizer):
    """Text <-> ids for a folder holding tokenizer.json (+ tokenizer_config.json, generation_config.json)."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise ModelNotFound(f"no tokenizer.json in {folder}; expected a Hugging Face style model folder")
        try:
            self._tok = tokenizers.Tokenizer.from_file(str(path))
        except Exception as e:  # the Rust side raises a bare Exception for any parse error
            raise RyzansteinError(f"{path} is not a valid tokenizer ({str(e).splitlines()[0][:120]}): restore it "
                                  "from the model's source") from None
        self._plain = tokenizers.Tokenizer.from_file(str(path))  # a second one: never a control token
        self._plain.encode_special_tokens = True  # (not toggled on one shared object: encode runs in threads)
        self._byte_level = isinstance(self._tok.decoder, tokenizers.decoders.ByteLevel)
        tok_cfg = _read_json(folder / "tokenizer_config.json")
        gen_cfg = _read_json(folder / "generation_config.json")
        model_cfg = _read_json(folder / "config.json")

        bos = [self._id_of(tok_cfg.get("bos_token")), *_as_list(gen_cfg.get("bos_token_id")),
               *_as_list(model_cfg.get("bos_token_id"))]
        eos = [self._id_of(tok_cfg.get("eos_token")), *_as_list(gen_cfg.get("eos_token_id")),
               *_as_list(model_cfg.get("eos_token_id"))]
        bos = [i for i in bos if i is not None and 0 <= i < self.vocab_size]
        eos = [i for i in eos if i is not None and 0 <= i < self.vocab_size]
        self.special = SpecialTokens(bos_id=bos[0] if bos else None, eos_id=eos[0] if eos else None,
                                     stop_ids=frozenset(eos))
        self.bos_text = self._tok.id_to_token(bos[0]) if bos else ""
        self.eos_text = self._tok.id_to_token(eos[0]) if eos else ""
        # Some tokenizers (sentencepiece Llama) ask for BOS in the config rather than in tokenizer.json's
        # post-processor; honour it so add_special means the same thing for every folder.
        self._add_bos = bool(tok_cfg.get("add_bos_token", False))
        self.chat_template = self._chat_template(folder, tok_cfg)

    def _id_of(self, token) -> int | None:
        """Id of a special token given as text or as an AddedToken dict ({"content": ...})."""
        if isinstance(token, dict):
            token = token.get("content")
        return self._tok.token_to_id(token) if isinstance(token, str) else None

    @staticmethod
    def _chat_template(folder: Path, tok_cfg: dict) -> str | None:
        template = tok_cfg.get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in template}
            template = named.get("default")
        if template is None and (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        return template

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special: bool = False, parse_special: bool = True) -> list[int]:
        """Token ids of `text`; with parse_special, special-token texts in `text` map to their ids."""
        valid_text(text)
        ids = (self._tok if parse_special else self._plain).encode(text, add_special_tokens=add_special).ids
        bos = self.special.bos_id
        if add_special and self._add_bos and bos is not None and ids[:1] != [bos]:
            ids = [bos, *ids]
        return ids

    def special_texts(self) -> dict[str, int]:
        """The added tokens marked special: what encode_special_tokens=False turns into their ids."""
        return {t.content: i for i, t in self._tok.get_added_tokens_decoder().items() if t.special}

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`; byte-level decoding turns a partial UTF-8 tail into U+FFFD."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def token_bytes(self, token_id: int) -> bytes:
        """Byte-level BPE: the token's characters mapped back to bytes (GPT-2's table), so a piece of a UTF-8
        character stays a piece; other tokenizers: its decoded text."""
        text = self._tok.id_to_token(int(token_id))
        if text is not None and self._byte_level and all(c in _UNICODE_TO_BYTE for c in text):
            return bytes(_UNICODE_TO_BYTE[c] for c in text)
        return self.decode([token_id]).encode("utf-8")

    def token_text(self, token_id: int) -> str:
        """The vocabulary entry of one id, as stored (byte-level BPE: 'Ġthe' for ' the')."""
        text = self._tok.id_to_token(int(token_id))
        if text is None:
            raise ValueError(f"token id {token_id} outside the vocabulary (size {self.vocab_size})")
        return text
