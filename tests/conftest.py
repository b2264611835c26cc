"""Shared fixtures: real SmolLM2-135M weights on both backends, loaded once per test session."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))


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

    m = load_model("smollm2-135m", backend="llama.cpp", threads=2, n_ctx=1024)
    yield m
    m.close()


@pytest.fixture(scope="session")
def torch_smol(smol_gguf):
    from ryzanstein.models import load_model

    return load_model("smollm2-135m", backend="torch", threads=2, n_ctx=1024, dtype="float32")
