"""The server's parts, each alone (no model, no HTTP): the OpenAI request mapping, the response bodies, the
answers to a job that ended without a result, and a route over a stand-in engine."""
import asyncio
from types import SimpleNamespace

import pytest

from ryzanstein.errors import RyzansteinError
from ryzanstein.server.config import ServerConfig
from ryzanstein.server.openai_api import (APIError, chunk, event_error, generation_config_from_request,
                                          logprobs_body, parse_messages, parse_prompt, result_body, summary)
from ryzanstein.speculative.stats import GenerationStats

SERVER = ServerConfig()


def config(body, chat=False, server=SERVER, draft="ngram"):
    return generation_config_from_request(body, chat, server, draft)


def refused(fn, *args) -> APIError:
    with pytest.raises(APIError) as e:
        fn(*args)
    assert e.value.status == 400
    return e.value


def test_a_request_becomes_a_generation_config():
    cfg = config({"prompt": "x"})
    assert (cfg.max_new_tokens, cfg.k, cfg.policy) == (16, None, "auto")
    assert (cfg.temperature, cfg.top_k, cfg.top_p, cfg.min_p) == (0.8, 40, 0.95, 0.05)  # llama-server's defaults
    assert config({"min_p": 0, "top_k": 0, "temperature": 0}).min_p == 0
    cfg = config({"max_tokens": 5, "max_completion_tokens": 7, "temperature": 0, "seed": 3, "stop": "END"}, chat=True)
    assert (cfg.max_new_tokens, cfg.temperature, cfg.seed, cfg.stop) == (7, 0, 3, ("END",))
    assert config({"max_completion_tokens": 7, "max_tokens": 5}).max_new_tokens == 5  # completions: max_tokens
    assert config({"speculative": {"k": 4}}).k == 4 and config({"speculative": {"k": 4}}).policy == "fixed"
    assert config({"speculative": {"draft": "none"}}).k == 0
    assert config({"speculative": {"k": "auto"}}, server=ServerConfig(k=2)).k is None
    assert config({}, server=ServerConfig(k=2)).k == 2


@pytest.mark.parametrize("body, param", [
    ({"temperature": -1}, "temperature"), ({"max_tokens": 0}, "max_tokens"), ({"n": 2}, "n"),
    ({"stop": 5}, "stop"), ({"speculative": {"k": 99}}, "speculative.k"), ({"speculative": {"kk": 1}}, "speculative"),
    ({"speculative": {"draft": "llama"}}, "speculative.draft"), ({"logprobs": 21}, "logprobs"),
    ({"logprobs": True}, "logprobs"),
    ({"presence_penalty": 0.5}, "presence_penalty"), ({"stream": "yes"}, "stream"),
    ({"response_format": {"type": "json_object"}}, "response_format"), ({"response_format": "json"}, "response_format"),
])
def test_an_invalid_request_names_its_parameter(body, param):
    assert refused(config, body).param == param


def test_logprobs_requests():
    assert config({"logprobs": 3}).logprobs == 3 and config({}).logprobs is None
    assert config({"logprobs": True, "top_logprobs": 2}, chat=True).logprobs == 2
    assert config({"logprobs": True}, chat=True).logprobs == 0 and config({}, chat=True).logprobs is None
    assert refused(config, {"top_logprobs": 2}, True).param == "top_logprobs"
    assert refused(config, {"logprobs": True, "top_logprobs": 30}, True).param == "top_logprobs"
    assert refused(config, {"logprobs": 2}, True).param == "logprobs"


def test_logprobs_bodies():
    from ryzanstein.speculative.logprobs import TokenLogprob

    entries = [TokenLogprob(1, -0.5, [(1, -0.5), (2, -1.5)]), TokenLogprob(2, -0.1, [(2, -0.1)])]
    spell = {1: b"Hi", 2: b" there"}.__getitem__
    chat = logprobs_body(entries, True, spell)
    assert chat["content"][0] == {"token": "Hi", "logprob": -0.5, "bytes": list(b"Hi"), "top_logprobs": [
        {"token": "Hi", "logprob": -0.5, "bytes": list(b"Hi")}, {"token": " there", "logprob": -1.5,
                                                                 "bytes": list(b" there")}]}
    legacy = logprobs_body(entries, False, spell, offset=3)
    assert legacy == {"tokens": ["Hi", " there"], "token_logprobs": [-0.5, -0.1],
                      "top_logprobs": [{"Hi": -0.5, " there": -1.5}, {" there": -0.1}], "text_offset": [3, 5]}


def test_tokenize_and_detokenize_shapes():
    from ryzanstein.server.tokenize_routes import detokenize, tokenize

    class Tok:
        vocab_size = 10

        def encode(self, text, add_special=False):
            return ([9] if add_special else []) + [ord(c) - 96 for c in text]

        def decode(self, ids):
            return "".join(chr(i + 96) for i in ids)

        def token_text(self, i):
            return chr(i + 96)

    assert tokenize({"content": "abc"}, Tok(), 64) == {"tokens": [1, 2, 3], "count": 3, "max_model_len": 64}
    assert tokenize({"prompt": "ab"}, Tok(), 64)["tokens"] == [9, 1, 2]  # vLLM adds special tokens by default
    assert tokenize({"content": "a", "with_pieces": True}, Tok(), 64)["tokens"] == [{"id": 1, "piece": "a"}]
    assert tokenize({"prompt": "ab", "add_special_tokens": False, "return_token_strs": True}, Tok(), 64)[
        "token_strs"] == ["a", "b"]
    assert detokenize({"tokens": [1, 2]}, Tok(), 10) == {"content": "ab", "prompt": "ab"}
    for bad, fn in (({"content": 5}, tokenize), ({"content": "a", "with_pieces": "yes"}, tokenize),
                    ({"tokens": [1, 99]}, detokenize), ({"tokens": "ab"}, detokenize)):
        with pytest.raises(APIError) as e:
            fn(bad, Tok(), 10)
        assert e.value.status == 400


def test_prompts_and_messages():
    assert parse_prompt({"prompt": "hi"}, 100) == "hi" and parse_prompt({"prompt": ["hi"]}, 100) == "hi"
    assert parse_prompt({"prompt": [1, 2, 99]}, 100) == [1, 2, 99]
    for bad in ({}, {"prompt": [1, 100]}, {"prompt": ["a", "b"]}, {"prompt": []}):
        assert refused(parse_prompt, bad, 100).param == "prompt"
    msgs = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": None}]
    assert parse_messages({"messages": msgs}) == [{"role": "user", "content": "ab"}, {"role": "assistant", "content": ""}]
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]
    for bad in ({}, {"messages": []}, {"messages": [{"content": "x"}]}, {"messages": image}):
        assert refused(parse_messages, bad).param == "messages"


def test_a_job_that_ended_without_a_result():
    e = event_error("aborted", "shutdown", 300)
    assert (e.status, e.code) == (503, "shutting_down")
    e = event_error("aborted", "timeout", 2.5)
    assert (e.status, e.type, e.code) == (504, "timeout_error", "timeout") and "--request-timeout=2.5 s" in e.message
    assert event_error("error", RyzansteinError("bad draft"), 300).status == 400
    e = event_error("error", MemoryError("oom"), 300)
    assert e.status == 500 and "MemoryError" in e.message and "oom" not in e.message
    assert set(e.body()["error"]) == {"message", "type", "param", "code"}


def test_response_bodies():
    stats = GenerationStats(draft="ngram", policy="auto", rounds=4, spec_rounds=1, num_draft_tokens=4,
                            num_accepted=3, k_per_round=[0, 4, 0, 0], k_chosen=[0, 4, 0, 0])
    result = SimpleNamespace(text="hi", finish_reason="stop", prompt_tokens=5, num_tokens=7, seed=9, stats=stats)
    head = {"id": "x", "created": 0, "model": "m"}
    chat = result_body(head, True, result)
    assert chat["object"] == "chat.completion" and chat["choices"][0]["message"] == {"role": "assistant", "content": "hi"}
    assert chat["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    assert result_body(head, False, result)["choices"][0]["text"] == "hi"
    s = summary(result)
    assert s["draft"] == "ngram" and s["seed"] == 9 and s["mean_acceptance_length"] == pytest.approx(7 / 4)
    assert s["k_per_round"] == {"min": 0, "max": 4, "mean": 1.0, "counts": {"0": 3, "4": 1}}
    assert s["speculation_stopped"] == {"reason": "policy", "since_round": 2, "detail": s["speculation_stopped"]["detail"]}
    assert chunk(head, True, role=True)["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunk(head, False, text="a", finish="length")["choices"][0] == {"index": 0, "text": "a", "logprobs": None,
                                                                          "finish_reason": "length"}


def test_a_route_alone():
    pytest.importorskip("fastapi")
    pytest.importorskip("prometheus_client")
    from ryzanstein.server.app import Served, get_model, health

    worker = SimpleNamespace(health=lambda: {"waiting": 2, "running": 3, "slots": 8})
    info = SimpleNamespace(n_ctx=512, n_ctx_train=8192, backend="llama.cpp", dtype="q4_1")
    engine = SimpleNamespace(target=SimpleNamespace(info=info))
    served = Served(engine=engine, config=SERVER, worker=worker, metrics=None, model_id="m", loaded_draft="ngram",
                    created=1_700_000_000)
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(served=served)))
    assert asyncio.run(health(request)) == {"status": "ok", "model": "m", "draft": "ngram", "waiting": 2,
                                            "running": 3, "slots": 8}
    card = asyncio.run(get_model("m", request))
    assert (card["id"], card["created"], card["max_model_len"]) == ("m", 1_700_000_000, 512)
    assert card["ryzanstein"]["draft"] == "ngram" and card["ryzanstein"]["context_length"] == 512
    with pytest.raises(APIError) as e:
        asyncio.run(get_model("other", request))
    assert e.value.status == 404 and e.value.code == "model_not_found"
