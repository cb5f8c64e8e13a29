#!/usr/bin/env bash
# The Python side's test dependencies in ./.venv (ignored by git): torch (PyPI's
# build; CPU tests only need its CPU part), transformers, safetensors, pytest,
# numpy. A second run installs nothing. Used by CI before scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch, transformers, safetensors, pytest, numpy" 2>/dev/null; then
  echo "setup-python: installing torch transformers safetensors pytest numpy into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check torch transformers safetensors pytest numpy
fi
