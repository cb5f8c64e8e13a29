#!/usr/bin/env bash
# Build and run every test suite (GPU suites skip, loudly, with no device).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export LD_LIBRARY_PATH="${CUDA_ROOT:-/usr/local/cuda}/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ctest --test-dir build --output-on-failure -j1 "$@"
