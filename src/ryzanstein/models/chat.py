"""Chat templates from the model's own metadata, rendered the way transformers renders them (Jinja2)."""
from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from ..errors import RyzansteinError
from .base import Tokenizer


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


def encode_prompt(tokenizer: Tokenizer, prompt: str | list[dict], chat: bool) -> list[int]:
    """Token ids for a raw prompt (chat=False) or a user message / message list under the chat template."""
    if chat and tokenizer.chat_template:
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        return tokenizer.encode(render_chat(tokenizer, messages), add_special=False)
    if isinstance(prompt, list):
        raise RyzansteinError("a message list needs a chat template; this model has none")
    return tokenizer.encode(prompt, add_special=True)
