#!/usr/bin/env bash
# The Python side's test dependencies in ./.venv (ignored by git): torch (PyPI's
# build; CPU tests only need its CPU part), transformers, safetensors, pytest,
# numpy; and NVIDIA's cuobjdump + nvdisasm wheels (6 MB), with which test_jit
# reads the sm_90a kernels' SASS and scripts/sass.py counts opcodes, no GPU
# needed. A second run installs nothing. Used by CI before scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch, transformers, safetensors, pytest, numpy" 2>/dev/null; then
  echo "setup-python: installing torch transformers safetensors pytest numpy into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check torch transformers safetensors pytest numpy
fi
if ! compgen -G ".venv/lib/python3*/site-packages/nvidia/cu*/bin/nvdisasm" >/dev/null; then
  echo "setup-python: installing nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm into .venv"
  .venv/bin/python -m pip install -q --disable-pip-version-check nvidia-cuda-cuobjdump nvidia-cuda-nvdisasm
fi
