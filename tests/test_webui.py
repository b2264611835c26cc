"""The chat page at `/` in a real browser: Debian's headless chromium driven by Playwright, against a real
`ryzanstein serve` on loopback (SmolLM2-135M, native backend, 1 thread, prompt lookup, an API key, 2 batch
slots). Also the streamed chunks' "ryzanstein" field the page reads, through raw HTTP.

Set RYZANSTEIN_CHAT_SCREENSHOT=docs/images/chat.png to keep the page's screenshot for the docs."""
import json
import os
import re
import shutil
import time

import pytest

httpx = pytest.importorskip("httpx")
playwright_api = pytest.importorskip("playwright.sync_api")

from ryzanstein.errors import RyzansteinError  # noqa: E402
from ryzanstein.speculative.round import TOKEN_KINDS  # noqa: E402
from server_process import serve_subprocess  # noqa: E402  (tests/server_process.py)

KEY = "sk-page-key"
MODEL = "smollm2-135m"
CODE = "Add a docstring to this Python function:\ndef add(a, b):\n    return a + b"
COPY = ("Repeat this list exactly, twice: alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu "
        "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu")


@pytest.fixture(scope="module")
def server():
    args = ["--model", MODEL, "--threads", "1", "--ctx-size", "1024", "--draft", "ngram", "--api-key", KEY,
            "--parallel", "2"]
    try:
        with serve_subprocess(args) as srv:
            yield srv.url
    except RyzansteinError as e:
        pytest.fail(str(e))
    assert "Traceback" not in srv.output, srv.output


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: ./install.sh installs Debian's package (apt-get install chromium)")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"], headless=True)
        yield b
        b.close()


def open_page(browser, url: str, key: str | None = KEY):
    """A fresh page (its own storage) at `/`, with `key` saved as the page saves it."""
    context = browser.new_context(viewport={"width": 1000, "height": 640})
    page = context.new_page()
    if key is not None:
        page.add_init_script(f"localStorage.setItem('ryzanstein.apiKey', {json.dumps(key)})")
    page.goto(url + "/")
    return page


def settings(page, **values) -> None:
    page.click("#settings-box summary")
    for name, value in values.items():
        page.fill(f"#{name}", str(value))
    page.click("#settings-box summary")


def send(page, text: str) -> None:
    page.fill("#input", text)
    page.press("#input", "Enter")


def expect(locator):
    return playwright_api.expect(locator)


DONE, STOPPED = re.compile(r"\bdone\b"), re.compile(r"\bstopped\b")


def test_streamed_chunks_say_how_each_token_came(server):
    body = {"model": MODEL, "messages": [{"role": "user", "content": COPY}], "max_tokens": 48, "temperature": 0,
            "stream": True, "speculative": {"k": 4}}
    chunks = []
    with httpx.stream("POST", server + "/v1/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    content = [c for c in chunks[1:] if not c["choices"][0]["finish_reason"]]
    summary = chunks[-1]["ryzanstein"]
    for c in content:
        tokens = c["ryzanstein"]["tokens"]
        assert "".join(t for t, _ in tokens) == c["choices"][0]["delta"].get("content", "")
        assert all(kind in TOKEN_KINDS for _, kind in tokens)
    rounds = [r for c in content for r in c["ryzanstein"]["rounds"]]
    assert len(rounds) == summary["rounds"]
    assert sum(r["drafted"] for r in rounds) == summary["num_draft_tokens"]
    assert sum(r["accepted"] for r in rounds) == summary["num_accepted"] > 0
    kinds = [kind for c in content for _, kind in c["ryzanstein"]["tokens"]]
    assert kinds.count("accepted") == summary["num_accepted"] and kinds[0] == "step"


def test_a_conversation_with_speculation_shown(server, browser):
    page = open_page(browser, server)
    try:
        expect(page.locator("#model")).to_contain_text(f"{MODEL} · draft ngram")
        settings(page, temperature=0, k=4, max_tokens=64)
        requests = []
        page.on("request", lambda r: requests.append(r.post_data_json) if r.url.endswith("/completions") else None)
        send(page, CODE)
        answer = page.locator(".msg.assistant").first
        expect(answer).to_have_class(DONE, timeout=60_000)
        assert "def add(a, b):" in answer.locator(".body").text_content()  # the code, copied from the prompt
        assert answer.locator(".t.accepted").count() > 0  # drafts accepted, coloured as such
        assert answer.locator(".t.recovered, .t.bonus").count() > 0
        expect(page.locator("#fig-acceptance")).to_contain_text("%")
        assert page.locator("#kstrip .k").count() > 0
        expect(answer.locator(".note")).to_contain_text("tok/s")
        if os.environ.get("RYZANSTEIN_CHAT_SCREENSHOT"):
            page.screenshot(path=os.environ["RYZANSTEIN_CHAT_SCREENSHOT"])

        send(page, "Thank you. Now add type hints.")  # the conversation is kept in the page
        expect(page.locator(".msg.assistant").last).to_have_class(DONE, timeout=60_000)
        assert [m["role"] for m in requests[-1]["messages"]] == ["user", "assistant", "user"]
        assert requests[-1]["messages"][0]["content"] == CODE
        assert requests[-1]["messages"][1]["content"] == answer.locator(".body").text_content()
        assert requests[-1]["speculative"] == {"k": 4} and requests[-1]["stream"] is True
    finally:
        page.context.close()


def test_the_stop_button_ends_the_generation(server, browser):
    page = open_page(browser, server)
    try:
        settings(page, temperature=0, max_tokens=900)
        send(page, "Count from 1 to 1000, one number per line.")
        answer = page.locator(".msg.assistant").last
        expect(answer.locator(".body")).to_contain_text("3", timeout=60_000)  # streaming
        page.click("#stop")
        expect(answer).to_have_class(STOPPED)
        expect(answer.locator(".note")).to_have_text("stopped")
        expect(page.locator("#send")).to_be_enabled()
        shown = answer.locator(".body").text_content()
        deadline = time.monotonic() + 10  # the server cancelled the generation: its slot is free again
        while httpx.get(server + "/health").json()["running"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert httpx.get(server + "/health").json()["running"] == 0
        assert answer.locator(".body").text_content() == shown and len(shown.split()) < 900
    finally:
        page.context.close()


def test_a_wrong_api_key_is_one_clear_message(server, browser):
    assert httpx.get(server + "/").status_code == 200  # the page itself needs no key, nor do its files
    assert httpx.get(server + "/webui/chat.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(server + "/webui/secret.txt").status_code == 404
    assert httpx.get(server + "/v1/models").status_code == 401
    page = open_page(browser, server, key="sk-wrong")
    try:
        error = page.locator("#error")
        expect(error).to_be_visible()
        expect(error).to_contain_text("refused the API key (401)")
        expect(page.locator("#model")).to_have_text("not connected")
        send(page, "Hello")
        expect(error).to_contain_text("--api-key")
        expect(page.locator(".msg")).to_have_count(0)
        expect(page.locator("#input")).to_have_value("Hello")  # the message comes back to be sent again
        page.click("#settings-box summary")
        page.fill("#api-key", KEY)
        page.press("#api-key", "Tab")  # the key's change event: the page connects
        expect(page.locator("#model")).to_contain_text(MODEL)
        expect(error).to_be_hidden()
    finally:
        page.context.close()


def test_two_people_at_once_get_the_answers_they_get_alone(server, browser):
    pages = [open_page(browser, server) for _ in range(2)]
    try:
        for page in pages:
            settings(page, temperature=0, max_tokens=24)
        for page in pages:
            send(page, "Name three colours.")
        answers = []
        for page in pages:
            answer = page.locator(".msg.assistant").last
            expect(answer).to_have_class(DONE, timeout=60_000)
            answers.append(answer.locator(".body").text_content())
        alone = httpx.post(server + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                           json={"model": MODEL, "messages": [{"role": "user", "content": "Name three colours."}],
                                 "max_tokens": 24, "temperature": 0}).json()
        assert answers == [alone["choices"][0]["message"]["content"]] * 2
    finally:
        for page in pages:
            page.context.close()


def test_the_page_is_off_with_no_webui():
    with serve_subprocess(["--model", MODEL, "--threads", "1", "--ctx-size", "256", "--draft", "none",
                           "--no-webui"]) as srv:
        assert httpx.get(srv.url + "/").status_code == 404
        assert httpx.get(srv.url + "/health").status_code == 200
