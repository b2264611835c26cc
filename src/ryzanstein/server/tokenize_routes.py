"""POST /tokenize and /detokenize in the shapes llama-server and vLLM answer, as pure functions.

    /tokenize   {"content": text}  (llama-server: add_special false, "with_pieces")
                {"prompt": text}   (vLLM: add_special_tokens true, "return_token_strs")
                {"messages": [...]} (vLLM: the chat template, "add_generation_prompt" true)
        -> {"tokens": [id, ...] (or [{"id", "piece"}, ...] with_pieces), "count", "max_model_len",
            "token_strs" (with return_token_strs)}
    /detokenize {"tokens": [id, ...]} -> {"content": text, "prompt": text}   (llama-server's and vLLM's key)
"""
from __future__ import annotations

from ..errors import RyzansteinError
from ..models.base import Tokenizer
from ..models.chat import chat_segments
from .openai_api import APIError, parse_messages


def _flag(body: dict, names: tuple[str, ...], default: bool) -> bool:
    for name in names:
        value = body.get(name)
        if value is not None:
            if not isinstance(value, bool):
                raise APIError(400, f"invalid {name}={value!r}: must be true or false", param=name)
            return value
    return default


def tokenize(body: dict, tok: Tokenizer, n_ctx: int) -> dict:
    """The token ids of a text (control-token texts parsed, as in a raw prompt) or of chat messages."""
    pieces = _flag(body, ("with_pieces",), False)
    strs = _flag(body, ("return_token_strs",), False)
    try:
        if body.get("messages") is not None:
            gen_prompt = _flag(body, ("add_generation_prompt",), True)
            ids = tok.encode_markup(chat_segments(tok, parse_messages(body), gen_prompt))
        else:
            key = "content" if "content" in body else "prompt"
            text = body.get(key)
            if not isinstance(text, str):
                raise APIError(400, "give the text as content (llama-server) or prompt (vLLM), or messages",
                               param=key)
            add = _flag(body, ("add_special", "add_special_tokens"), key == "prompt")
            ids = tok.encode(text, add_special=add)
    except RyzansteinError as e:
        raise APIError(400, str(e), param="messages" if "messages" in body else None) from None
    out: dict = {"tokens": [{"id": i, "piece": tok.decode([i])} for i in ids] if pieces else ids,
                 "count": len(ids), "max_model_len": n_ctx}
    if strs:
        out["token_strs"] = [tok.token_text(i) for i in ids]
    return out


def detokenize(body: dict, tok: Tokenizer, vocab_size: int) -> dict:
    """The text of token ids."""
    ids = body.get("tokens")
    if not isinstance(ids, list) or not all(type(t) is int and 0 <= t < vocab_size for t in ids):
        raise APIError(400, f"tokens must be a list of token ids in [0, {vocab_size})", param="tokens")
    text = tok.decode(ids)
    return {"content": text, "prompt": text}
