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
