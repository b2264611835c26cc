"""`ryzanstein chat` as a person uses it: a real terminal (a pseudo-terminal driven by pexpect) and a pipe.
SmolLM2-135M on the native backend, 1 thread, greedy, prompt lookup: a two-turn conversation whose second turn
prefills only what is new, /set and /show, Ctrl-C stopping an answer without leaving, /bye and Ctrl-D, the
speculation's colours on a terminal and plain text in a pipe."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

pexpect = pytest.importorskip("pexpect")

from server_process import SRC  # noqa: E402  (tests/server_process.py: the worktree's package for the child)

ARGS = ["-m", "ryzanstein.cli", "chat", "--model", "smollm2-135m", "--threads", "1", "--ctx-size", "2048",
        "--draft", "ngram", "--temperature", "0", "--history", ""]
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
STATS = re.compile(r"last answer( \(stopped\))?: (\d+) tokens.*\r?\nprompt: (\d+) tokens, (\d+) cached, (\d+) new")
LIST = "alpha beta gamma delta epsilon zeta eta theta"


def spawn(*flags: str, sigint_ignored: bool = False):
    """The chat on a pseudo-terminal; with sigint_ignored, started as a shell starts a background job (SIGINT
    ignored, inherited through exec), where Ctrl-C must still stop an answer."""
    pre = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    child = pexpect.spawn(sys.executable, [*ARGS, *flags], env=ENV, encoding="utf-8", timeout=90,
                          dimensions=(50, 220), preexec_fn=pre)
    child.expect_exact(">>> ")
    return child


def ask(child, line: str) -> str:
    """Send a line, wait for the next prompt; what was printed in between (the echoed line cut off)."""
    child.sendline(line)
    child.expect_exact(">>> ")
    return child.before.split("\n", 1)[-1]


def stats(child) -> dict:
    child.sendline("/stats")
    child.expect(STATS)
    stopped, tokens, prompt, cached, new = child.match.groups()
    child.expect_exact(">>> ")
    return {"stopped": bool(stopped), "tokens": int(tokens), "prompt": int(prompt), "cached": int(cached),
            "new": int(new)}


def test_a_conversation_in_a_terminal():
    child = spawn("--max-new-tokens", "24", sigint_ignored=True)
    try:
        first = ask(child, "What is the capital of France? Answer in one sentence.")
        assert "Paris" in first
        s1 = stats(child)
        assert s1["tokens"] >= 1 and s1["prompt"] == s1["cached"] + s1["new"]
        second = ask(child, "And of Italy?")
        assert second.strip()
        s2 = stats(child)
        # the first turn's prompt and its answer (all but the last token, which no forward has read yet) came
        # from the cache: only the new turn's tokens were prefilled
        assert s2["cached"] >= s1["prompt"] + s1["tokens"] - 1, (s1, s2)
        assert s2["new"] == s2["prompt"] - s2["cached"] < 20, (s1, s2)

        assert "Set temperature to 0.2." in ask(child, "/set temperature 0.2")
        assert "/set top_p 7: invalid top_p=7.0: must be a number in (0, 1] (1 = off)" in ask(child, "/set top_p 7")
        assert "/set top_k many: top_k takes an integer, 0 = off" in ask(child, "/set top_k many")
        shown = ask(child, "/show")
        assert "temperature 0.2, top_p 0.95" in shown and "turns      2" in shown
        assert "Unknown command /nope: /help lists the commands." in ask(child, "/nope")
        assert "/stats" in ask(child, "/help")

        # Ctrl-C stops a long answer and comes back to the prompt, the chat still there
        ask(child, "/set ignore_eos true")
        ask(child, "/set max_tokens 1500")
        child.sendline("Count from 1 to 1000, one number per line.")
        child.expect_exact("one number per line.\r\n")  # the echo
        child.expect(r"\S")  # the answer is streaming
        time.sleep(1)
        child.sendintr()
        child.expect_exact("(stopped)", timeout=15)
        child.expect_exact(">>> ", timeout=15)
        s3 = stats(child)
        assert s3["stopped"] and 1 <= s3["tokens"] < 1500
        assert "Cleared" in ask(child, "/clear")
        assert "turns      0" in ask(child, "/show")

        child.sendline("/bye")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before


def test_speculation_colours_on_a_terminal_plain_text_in_a_pipe():
    child = spawn("--max-new-tokens", "40", "--k", "4", "--show-speculation")
    try:
        assert "\x1b[32maccepted" in child.before  # the legend
        out = ask(child, f'"""Repeat this list exactly, twice:\n{LIST}\n"""')  # a block of two lines
        out = out.rsplit('"""', 1)[-1]  # after the echoed block: the answer
        assert "\x1b[32m" in out  # accepted drafts, green
        assert "alpha beta gamma" in re.sub(r"\x1b\[\d+m", "", out)
        child.sendeof()  # Ctrl-D leaves
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0

    # the same message, its lines joined by a trailing backslash
    piped = subprocess.run([sys.executable, *ARGS, "--max-new-tokens", "40", "--k", "4", "--show-speculation"],
                           input=f"Repeat this list exactly, twice:\\\n{LIST}\n/stats\n", capture_output=True,
                           text=True, env=ENV, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert "\x1b[" not in piped.stdout and "alpha beta gamma" in piped.stdout
    assert re.search(r"speculation: draft ngram, policy fixed:4: .* [1-9]\d* accepted", piped.stdout), piped.stdout


def test_control_characters_in_an_answer_do_not_reach_the_terminal():
    """A model's text is shown, not obeyed: an escape sequence, XOFF (which stops a terminal's output until
    XON) or a C1 control in an answer appear in caret notation; tabs and newlines stay."""
    from ryzanstein.cli.chat import visible

    assert visible("a\x13b\x1b[31mc\td\ne\x9bf\x7f") == "a^Sb^[[31mc\td\ne\\x9bf^?"
