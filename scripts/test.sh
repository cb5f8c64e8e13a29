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
# The same library under ASan + UBSan (./build-asan): the suites that do not
# spend their time in NVRTC, plus the bounded fuzz run. NVRTC and the driver
# are not built with ASan: leak reports from them are noise, so leaks are off.
if [ "${SALE_SKIP_ASAN:-0}" != 1 ]; then
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSALE_SANITIZE=ON -DCUDA_ROOT="${CUDA_ROOT:-/usr/local/cuda}" >/dev/null
  asan_suites=(test_harden test_fuzz test_db test_key test_lua test_reference test_selection)
  cmake --build build-asan -j"$(nproc)" --target "${asan_suites[@]}"
  export ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  export SALE_FUZZ_SECONDS="${SALE_FUZZ_SECONDS:-20}"
  for t in "${asan_suites[@]}"; do
    echo "test.sh: $t under ASan + UBSan"
    ./build-asan/"$t" --jobs 2
  done
fi

# The Python package (python/tests), where torch is importable (scripts/setup-python.sh)
PY=python3; [ -x .venv/bin/python ] && PY=.venv/bin/python
if "$PY" -c "import torch, pytest" 2>/dev/null; then
  "$PY" -m pytest -q -rs -p no:cacheprovider python/tests
else
  echo "test.sh: no torch/pytest for $PY: the Python tests did not run (scripts/setup-python.sh installs them)"
fi
