"""Chat templates from the model's own metadata, rendered the way transformers renders them (Jinja2)."""
from __future__ import annotations

import re
import secrets
from datetime import datetime
from functools import lru_cache

from ..errors import RyzansteinError
from .base import Tokenizer

ROLES = ("system", "user", "assistant", "tool")  # what a message may say it is (a role is template markup)


def _raise(message: str) -> None:
    raise RyzansteinError(f"chat template: {message}")


@lru_cache(maxsize=8)
def _compile(template: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment  # ~80 ms to import: only for a chat prompt

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def render_chat(tokenizer: Tokenizer, messages: list[dict], add_generation_prompt: bool = True) -> str:
    """The prompt text for `messages` ([{role, content}, ...]) under the model's chat template."""
    if not tokenizer.chat_template:
        raise RyzansteinError("this model has no chat template in its metadata: pass --no-chat and a raw prompt")
    return _compile(tokenizer.chat_template).render(
        messages=messages, add_generation_prompt=add_generation_prompt,
        bos_token=tokenizer.bos_text, eos_token=tokenizer.eos_text,
    )


def chat_segments(tokenizer: Tokenizer, messages: list[dict], add_generation_prompt: bool = True
                  ) -> list[tuple[str, bool]]:
    """The rendered prompt as [(text, is_markup)]: each message's content is a plain segment, the rest is the
    template's markup. Contents are rendered between markers with a fresh random nonce (a client cannot
    forge one), which are then cut out; a template that rewrites a content loses its markers and is refused."""
    nonce = secrets.token_hex(8)
    marked = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            role = m.get("role") if isinstance(m, dict) else m
            raise RyzansteinError(f"message {i} has role {role!r}: use one of {', '.join(ROLES)}")
        content = m.get("content") or ""
        if not isinstance(content, str):
            raise RyzansteinError(f"message {i} has content of type {type(content).__name__}: give a string")
        if content:  # an empty content has nothing to protect, and a template may test it for truth
            content = f"\ue000{nonce}:{i}:s\ue000{content}\ue000{nonce}:{i}:e\ue000"
        marked.append({**m, "content": content})
    rendered = render_chat(tokenizer, marked, add_generation_prompt)
    rewritten = RyzansteinError("chat template: this model's template rewrites message contents, so they cannot "
                                "be kept apart from its markup: pass --no-chat and a raw prompt")
    segments, pos, inside = [], 0, None
    for m in re.finditer(f"\ue000{nonce}:(\\d+):([se])\ue000", rendered):
        index, edge = m.group(1), m.group(2)
        if (edge == "s") != (inside is None) or (edge == "e" and index != inside):
            raise rewritten
        segments.append((rendered[pos:m.start()], edge == "s"))  # before a start: markup; before an end: content
        inside, pos = (index if edge == "s" else None), m.end()
    if inside is not None:
        raise rewritten
    segments.append((rendered[pos:], True))
    return segments


def encode_prompt(tokenizer: Tokenizer, prompt: str | list[dict], chat: bool) -> list[int]:
    """Token ids for a raw prompt (chat=False) or a user message / message list under the chat template.

    A raw prompt is the caller's whole text, control tokens included; under a chat template only the
    template's own markup yields control tokens (chat_segments, Tokenizer.encode_markup)."""
    if chat and tokenizer.chat_template:
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        return tokenizer.encode_markup(chat_segments(tokenizer, messages))
    if isinstance(prompt, list):
        raise RyzansteinError("a message list needs a chat template; this model has none")
    return tokenizer.encode(prompt, add_special=True)
