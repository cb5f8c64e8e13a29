#!/usr/bin/env bash
# One command: install what is missing, build, prewarm the kernel cache for
# the default fleet (sm_80, sm_86, sm_89, sm_90) and list it; with a GPU, also
# run SALE attention once and check it against the CPU reference.
set -euo pipefail
cd "$(dirname "$0")"
./scripts/setup.sh
export LD_LIBRARY_PATH="${CUDA_ROOT:-/usr/local/cuda}/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
./build/sale prewarm "$@"
./build/sale ls
./build/sale info
if ./build/sale info 2>/dev/null | grep -q '^device 0'; then
  ./build/example_attention
fi
