"""Shared fixtures: real SmolLM2-135M weights on both backends, loaded once per test session.

The torch fixtures run on RYZANSTEIN_TEST_DEVICE (default cpu); benchmarks/gpu_check.py sets it to cuda on a
GPU machine, where it has put SmolLM2 into a store of its own (RYZANSTEIN_HOME) and where llama.cpp is not
installed: the llama.cpp fixtures skip there, and only there.
"""
import importlib.util
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

TEST_DEVICE = os.environ.get("RYZANSTEIN_TEST_DEVICE", "cpu")


@pytest.fixture(scope="session")
def smol_gguf():
    from ryzanstein.models import store

    path = store.path_of("smollm2-135m")
    if path is None:
        pytest.fail("smollm2-135m is not installed: run ./install.sh")
    return path


@pytest.fixture(scope="session")
def llama_smol(smol_gguf):
    from ryzanstein.models import load_model

    if TEST_DEVICE != "cpu" and importlib.util.find_spec("llama_cpp") is None:
        pytest.skip(f"llama.cpp is not installed on this {TEST_DEVICE} machine: its tests run on CPU")
    m = load_model("smollm2-135m", backend="llama.cpp", threads=2, n_ctx=1024)
    yield m
    m.close()


@pytest.fixture(scope="session")
def torch_smol(smol_gguf):
    from ryzanstein.models import load_model

    return load_model("smollm2-135m", backend="torch", threads=2, n_ctx=1024, dtype="float32", device=TEST_DEVICE)
