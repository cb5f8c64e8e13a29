#!/usr/bin/env bash
# Build and run every test suite (GPU suites skip, loudly, with no device).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export LD_LIBRARY_PATH="${CUDA_ROOT:-/usr/local/cuda}/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ! ./build/sale info 2>/dev/null | grep -q '^device 0'; then
  echo "test.sh: no CUDA device on this machine: the GPU suite (test_gpu) skips every test, loudly:"
  ./build/test_gpu --jobs 1 2>&1 | grep SKIPPED || true
fi
ctest --test-dir build --output-on-failure -j1 "$@"
# The Python package (python/tests), where torch is importable (scripts/setup-python.sh)
PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python
if "$PY" -c "import torch, pytest" 2>/dev/null; then
  "$PY" -m pytest -q -rs -p no:cacheprovider python/tests
else
  echo "test.sh: no torch/pytest for $PY: the Python tests did not run (scripts/setup-python.sh installs them)"
fi
