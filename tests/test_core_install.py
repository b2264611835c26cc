"""The core install (`pip install ryzanstein`, no extras) needs neither llama.cpp nor torch nor transformers.

Each test runs the CLI in a fresh interpreter where importing llama_cpp, torch, transformers, safetensors or
accelerate fails as it does when they are not installed (a finder at the front of sys.meta_path), and which
records every attempt: the native backend generates without trying any of them, and asking for a backend
(or a fallback) whose extra is missing is one error line naming the extra, exit 2.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BLOCKED = ("llama_cpp", "torch", "transformers", "safetensors", "accelerate")

# Runs `ryzanstein ARGS...` with BLOCKED missing; prints the modules it tried to import as the last stdout line.
CORE_ONLY = f"""
import sys
tried = []

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            tried.append(name)
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled())
PATCH
from ryzanstein.cli.main import main
rc = main(sys.argv[1:])
print("tried:", ",".join(sorted(set(tried))))
sys.exit(rc)
"""


def core_only(*args: str, patch: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", CORE_ONLY.replace("PATCH", patch), *args], capture_output=True,
                          text=True, env=env, timeout=300)


def one_error_line(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    return lines[0]


GEN = ("generate", "Say hi", "--max-new-tokens", "8", "--temperature", "0", "--threads", "2")


def test_native_generate_imports_no_optional_backend(smol_gguf):
    p = core_only(*GEN, "--model", "smollm2-135m")
    assert p.returncode == 0, p.stderr
    *text, tried = p.stdout.splitlines()
    assert "".join(text).strip(), p.stdout
    assert tried == "tried: ", f"the core path tried to import {tried}"


def test_llamacpp_backend_without_its_extra_is_one_line(smol_gguf):
    line = one_error_line(core_only(*GEN, "--backend", "llama.cpp"))
    assert line == "error: the llama.cpp backend needs the llamacpp extra: pip install 'ryzanstein[llamacpp]'"


def test_llamacpp_draft_without_its_extra_is_one_line(smol_gguf):
    line = one_error_line(core_only(*GEN, "--draft", "smollm2-135m", "--draft-backend", "llama.cpp"))
    assert "pip install 'ryzanstein[llamacpp]'" in line


def test_torch_backend_without_its_extra_is_one_line(smol_gguf):
    line = one_error_line(core_only(*GEN, "--backend", "torch"))
    assert line == "error: the torch backend needs the torch extra: pip install 'ryzanstein[torch]'"


def test_fallback_to_llamacpp_without_its_extra_is_one_line(smol_gguf):
    """A file the native backend cannot run falls back to llama.cpp; without the extra, one line says both."""
    patch = ("import ryzanstein.models.native as native\n"
             "def refuse(g):\n"
             "    raise native.NativeUnsupported('architecture \\'x\\' is not supported by the native backend')\n"
             "native.read_arch = refuse\n")
    line = one_error_line(core_only(*GEN, patch=patch))
    assert line == ("error: architecture 'x' is not supported by the native backend; the llama.cpp backend needs "
                    "the llamacpp extra: pip install 'ryzanstein[llamacpp]'")


def test_core_dependencies_leave_the_heavy_backends_to_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"])
    for heavy in ("llama-cpp-python", "torch", "transformers", "safetensors"):
        assert heavy not in core
    extras = project["optional-dependencies"]
    assert extras["llamacpp"] == ["llama-cpp-python==0.3.36"]
    assert "torch==2.13.0" in extras["torch"]  # unpinned, pip pulls a multi-GB CUDA build
    for needed in ("numpy", "gguf", "tokenizers", "jinja2", "psutil", "tqdm", "fastapi", "uvicorn",
                   "prometheus-client"):
        assert needed in core, needed
