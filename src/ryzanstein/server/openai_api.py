"""The OpenAI API as this server speaks it: requests -> GenerationConfig and prompt, results -> response bodies.

Pure functions of plain values (no web framework here), so each can be tested alone. Anything invalid raises
an APIError naming the parameter, answered as OpenAI does.
"""
from __future__ import annotations

import json
import re

from ..config import GenerationConfig
from ..errors import ConfigError, RyzansteinError
from ..speculative.stats import GenerationStats
from .config import ServerConfig

SPEC_FIELDS = ("k", "policy", "draft", "k_min", "k_max", "p_min", "min_speedup")
UNSUPPORTED = ("echo", "suffix", "tools", "functions", "logit_bias")
SURROGATE = re.compile("[\ud800-\udfff]")  # in a str from json.loads, only a lone one is left


class APIError(Exception):
    """An error answered as OpenAI does: a status code and {"error": {message, type, param, code}}."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def check_unicode(body: dict) -> None:
    """400 naming the first string (by its path, as "messages[0].content") that holds a lone surrogate."""
    todo = [(body, "")]
    while todo:  # iterative: the body may nest as deep as json.loads allows
        value, path = todo.pop()
        items = (value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ())
        for key, v in items:
            where = f"{path}[{key}]" if isinstance(key, int) else (f"{path}.{key}" if path else str(key))
            for text in (key, v) if isinstance(key, str) else (v,):
                if isinstance(text, str) and SURROGATE.search(text):
                    raise APIError(400, f"{where} holds a lone surrogate (a \\ud800-\\udfff escape that is not "
                                   "one half of a pair): send valid Unicode text", param=where)
            if isinstance(v, (dict, list)):
                todo.append((v, where))


def usage_of(result) -> dict:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.num_tokens,
            "total_tokens": result.prompt_tokens + result.num_tokens}


def chunk(head: dict, chat: bool, text: str = "", finish: str | None = None, role: bool = False,
          logprobs: dict | None = None) -> dict:
    """One streamed chunk in OpenAI's format."""
    if chat:
        delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
        choice = {"index": 0, "delta": delta}
    else:
        choice = {"index": 0, "text": text}
    choice.update(logprobs=logprobs, finish_reason=finish)
    return {**head, "object": "chat.completion.chunk" if chat else "text_completion", "choices": [choice]}


def speculation(piece) -> dict:
    """A streamed chunk's non-standard "ryzanstein" field (docs/server.md): each token of its text with how it
    came (step | accepted | recovered | bonus), and the rounds completed since the previous chunk."""
    return {"tokens": [[text, kind] for text, kind in piece.spans],
            "rounds": [{"k": r.k, "drafted": r.drafted, "accepted": r.accepted} for r in piece.rounds]}


def sse(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def unknown_model(name, model_id: str) -> APIError:
    return APIError(404, f"the model {name!r} does not exist: this server serves {model_id!r}", param="model",
                    code="model_not_found")


def generation_config_from_request(body: dict, chat: bool, server: ServerConfig, loaded_draft: str) -> GenerationConfig:
    """The request's GenerationConfig; APIError 400 naming the parameter for anything invalid."""
    if body.get("n") not in (None, 1):
        raise APIError(400, f"invalid n={body['n']!r}: only n=1 is supported", param="n")
    for name in UNSUPPORTED:
        if body.get(name):
            raise APIError(400, f"{name} is not supported by this server", param=name)
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:  # silently returning prose would be wrong output
        raise APIError(400, f"response_format={fmt!r} is not supported by this server (no constrained decoding; "
                       "only {'type': 'text'})", param="response_format")
    if body.get("best_of") not in (None, 1):
        raise APIError(400, "best_of is not supported by this server (only 1)", param="best_of")
    for name in ("presence_penalty", "frequency_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise APIError(400, f"{name} is not supported by this server (only 0)", param=name)
    if body.get("stream") not in (None, True, False):
        raise APIError(400, f"invalid stream={body['stream']!r}: must be true or false", param="stream")
    stop = body.get("stop")
    if not (stop is None or isinstance(stop, (str, list))):
        raise APIError(400, f"invalid stop={stop!r}: must be a string or a list of strings", param="stop")
    spec = body.get("speculative") or {}
    if not isinstance(spec, dict) or set(spec) - set(SPEC_FIELDS):
        raise APIError(400, f"invalid speculative={spec!r}: an object with fields {', '.join(SPEC_FIELDS)}",
                       param="speculative")
    draft = spec.get("draft")
    if draft not in (None, "none", loaded_draft):
        raise APIError(400, f"invalid speculative.draft={draft!r}: this server loaded draft {loaded_draft!r} "
                       "(use it, or 'none')", param="speculative.draft")
    k = spec.get("k", server.k)
    k = 0 if draft == "none" else (None if k == "auto" else k)
    max_tokens = body.get("max_completion_tokens") if chat else None
    max_tokens = body.get("max_tokens") if max_tokens is None else max_tokens
    extra = {f: spec[f] for f in ("k_min", "k_max", "p_min", "min_speedup") if f in spec}
    logprobs = requested_logprobs(body, chat)
    d = GenerationConfig()  # an absent sampling field gets llama.cpp's default, as llama-server answers

    def get(name, default):
        return default if body.get(name) is None else body[name]
    try:
        return GenerationConfig(
            max_new_tokens=16 if max_tokens is None else max_tokens, temperature=get("temperature", d.temperature),
            top_p=get("top_p", d.top_p), top_k=get("top_k", d.top_k), min_p=get("min_p", d.min_p),
            seed=body.get("seed"), stop=stop or (), k=k, policy=spec.get("policy", server.policy),
            logprobs=logprobs, **extra)
    except ConfigError as e:
        m = re.match(r"invalid (\w+)=", str(e))
        field = m.group(1) if m else None
        param = {"max_new_tokens": "max_tokens", "logprobs": "top_logprobs" if chat else "logprobs"}.get(
            field, f"speculative.{field}" if field in SPEC_FIELDS else field)
        raise APIError(400, str(e).replace(f"invalid {field}=", f"invalid {param}=", 1), param=param) from None


def requested_logprobs(body: dict, chat: bool) -> int | None:
    """GenerationConfig.logprobs: None (off) or how many most likely tokens to list per token.
    Chat: logprobs (bool) + top_logprobs; completions: logprobs (an integer)."""
    lp = body.get("logprobs")
    if chat:
        top = body.get("top_logprobs")
        if lp not in (None, True, False):
            raise APIError(400, f"invalid logprobs={lp!r}: must be true or false", param="logprobs")
        if top is not None and not lp:
            raise APIError(400, "top_logprobs needs logprobs: true", param="top_logprobs")
        return (0 if top is None else top) if lp else None
    if isinstance(lp, bool):
        raise APIError(400, f"invalid logprobs={lp!r}: an integer in [0, 20] for completions", param="logprobs")
    return lp


def logprobs_body(entries, chat: bool, token_bytes, offset: int = 0) -> dict:
    """OpenAI's logprobs object for these tokens: chat {"content": [{token, logprob, bytes, top_logprobs}]},
    completions {tokens, token_logprobs, top_logprobs, text_offset} (offsets from `offset` characters)."""
    def text(t: int) -> str:
        return token_bytes(t).decode("utf-8", errors="replace")

    if chat:
        def one(t: int, lp: float) -> dict:
            return {"token": text(t), "logprob": lp, "bytes": list(token_bytes(t))}
        return {"content": [{**one(e.token, e.logprob), "top_logprobs": [one(t, lp) for t, lp in e.top]}
                            for e in entries]}
    tokens = [text(e.token) for e in entries]
    offsets = []
    for s in tokens:
        offsets.append(offset)
        offset += len(s)
    return {"tokens": tokens, "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{text(t): lp for t, lp in e.top} for e in entries], "text_offset": offsets}


def parse_prompt(body: dict, vocab_size: int) -> str | list[int]:
    """A completion's prompt: a string or token ids (one prompt per request)."""
    p = body.get("prompt")
    if isinstance(p, list) and len(p) == 1 and isinstance(p[0], (str, list)):
        p = p[0]
    if isinstance(p, str):
        return p
    if isinstance(p, list) and p and all(type(t) is int and 0 <= t < vocab_size for t in p):
        return p
    raise APIError(400, "prompt must be a string or a list of token ids in the vocabulary (one prompt per "
                   "request)", param="prompt")


def parse_messages(body: dict) -> list[dict]:
    """Chat messages as [{role, content: str}]: text parts are joined; other parts are refused."""
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise APIError(400, "messages must be a non-empty list of {role, content}", param="messages")
    out = []
    for i, m in enumerate(msgs):
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise APIError(400, f"messages[{i}].content: only text parts are supported", param="messages")
            content = "".join(p["text"] for p in content)
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(content, (str, type(None))):
            raise APIError(400, f"messages[{i}] must be {{role: string, content: string}}", param="messages")
        out.append({"role": m["role"], "content": content or ""})
    return out


def event_error(kind: str, value, request_timeout: float) -> APIError:
    """The answer to a job that ended without a result: ("aborted", reason) or ("error", exception)."""
    if isinstance(value, APIError):  # already an answer (replica_pool.py: a replica lost)
        return value
    if kind == "aborted" and value == "shutdown":
        return APIError(503, "the server is shutting down; retry elsewhere or later", "server_error",
                        code="shutting_down")
    if kind == "aborted":
        return APIError(504, f"the request took longer than --request-timeout={request_timeout:g} s",
                        "timeout_error", code="timeout")
    if isinstance(value, RyzansteinError):
        return APIError(400, str(value))
    return APIError(500, f"generation failed ({type(value).__name__}); details are in the server log",
                    "server_error")

def summary(result) -> dict:
    """The response's non-standard "ryzanstein" field: the generation's speculative figures and its seed."""
    replica = getattr(result, "replica", None)  # set by cluster.py: which engine replica answered
    return {**spec_summary(result.stats), "seed": result.seed, **({"replica": replica} if replica else {})}

def result_body(head: dict, chat: bool, result, token_bytes=None) -> dict:
    """A whole (non-streamed) completion or chat completion (`token_bytes(id)` spells logprobs' tokens)."""
    if chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": result.text}}
    else:
        choice = {"index": 0, "text": result.text}
    entries = getattr(result, "logprobs", None)
    choice.update(logprobs=None if entries is None else logprobs_body(entries, chat, token_bytes),
                  finish_reason=result.finish_reason)
    return {**head, "object": "chat.completion" if chat else "text_completion", "choices": [choice],
            "usage": usage_of(result), "ryzanstein": summary(result)}


def spec_summary(stats: GenerationStats) -> dict:
    """The speculative figures of one generation, for the response's "ryzanstein" field."""
    return {
        "draft": stats.draft, "policy": stats.policy,
        "rounds": stats.rounds, "spec_rounds": stats.spec_rounds,
        "num_draft_tokens": stats.num_draft_tokens, "num_accepted": stats.num_accepted,
        "draft_fed_tokens": stats.draft_fed_tokens, "catch_up_rounds": stats.catch_up_rounds,
        "acceptance_rate": stats.acceptance_rate, "mean_acceptance_length": stats.mean_acceptance_length,
        "acceptance_by_position": stats.acceptance_by_position,
        "k_per_round": k_summary(stats.k_per_round),  # drafts verified
        "k_chosen": k_summary(stats.k_chosen),  # what the policy asked the proposer for
        "speculation_stopped": stats.speculation_stopped(),
        "ttft_s": stats.ttft_s, "queued_s": stats.queued_s, "tokens_per_s": stats.tokens_per_s,
        "fallback": stats.fallback,
        "cached_prompt_tokens": stats.cached_prompt_tokens,  # prompt positions the KV cache already held
    }


def k_summary(ks: list[int]) -> dict:
    """Min, max, mean and the count of each K over a generation's rounds."""
    counts: dict[str, int] = {}
    for k in ks:
        counts[str(k)] = counts.get(str(k), 0) + 1
    return {"min": min(ks, default=0), "max": max(ks, default=0), "mean": sum(ks) / len(ks) if ks else 0.0,
            "counts": counts}
