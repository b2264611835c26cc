"""The server's parts, each alone (no model, no HTTP): the OpenAI request mapping, the response bodies, the
answers to a job that ended without a result, and a route over a stand-in engine."""
import asyncio
from types import SimpleNamespace

import pytest

from ryzanstein.errors import RyzansteinError
from ryzanstein.server.config import ServerConfig
from ryzanstein.server.openai_api import (APIError, chunk, event_error, generation_config_from_request,
                                          parse_messages, parse_prompt, result_body, summary)
from ryzanstein.spec.stats import GenerationStats

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
    ({"speculative": {"draft": "llama"}}, "speculative.draft"), ({"logprobs": 2}, "logprobs"),
    ({"presence_penalty": 0.5}, "presence_penalty"), ({"stream": "yes"}, "stream"),
    ({"response_format": {"type": "json_object"}}, "response_format"), ({"response_format": "json"}, "response_format"),
])
def test_an_invalid_request_names_its_parameter(body, param):
    assert refused(config, body).param == param


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
                            num_accepted=3, k_per_round=[0, 4, 0, 0])
    result = SimpleNamespace(text="hi", finish_reason="stop", prompt_tokens=5, num_tokens=7, seed=9, stats=stats)
    head = {"id": "x", "created": 0, "model": "m"}
    chat = result_body(head, True, result)
    assert chat["object"] == "chat.completion" and chat["choices"][0]["message"] == {"role": "assistant", "content": "hi"}
    assert chat["usage"] == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    assert result_body(head, False, result)["choices"][0]["text"] == "hi"
    s = summary(result)
    assert s["draft"] == "ngram" and s["seed"] == 9 and s["mean_acceptance_length"] == pytest.approx(7 / 4)
    assert s["k_per_round"] == {"min": 0, "max": 4, "mean": 1.0, "counts": {"0": 3, "4": 1}}
    assert chunk(head, True, role=True)["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunk(head, False, text="a", finish="length")["choices"][0] == {"index": 0, "text": "a", "logprobs": None,
                                                                          "finish_reason": "length"}


def test_a_route_alone():
    pytest.importorskip("fastapi")
    pytest.importorskip("prometheus_client")
    from ryzanstein.server.app import Served, get_model, health

    worker = SimpleNamespace(waiting=2, running=None)
    served = Served(engine=None, config=SERVER, worker=worker, metrics=None, model_id="m", loaded_draft="ngram")
    request = SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(served=served)))
    assert asyncio.run(health(request)) == {"status": "ok", "model": "m", "draft": "ngram", "waiting": 2,
                                            "running": False}
    assert asyncio.run(get_model("m", request))["id"] == "m"
    with pytest.raises(APIError) as e:
        asyncio.run(get_model("other", request))
    assert e.value.status == 404 and e.value.code == "model_not_found"
