#!/usr/bin/env bash
# Runs ON the GPU host from the bundle folder (.gpu): the GPU test suite, then
# a short benchmark with the torch SDPA anchors; prints a compact table last.
# usage: ./gpu-run.sh [tests|bench|host|all] [bench lens, e.g. 16384,65536]
#   host: the host-path benchmark (bench_host: get_kernel, eager vs graph,
#   beside torch SDPA from Python) and where SALE stops paying (dense_below)
set -uo pipefail
cd "$(dirname "$0")"
export LD_LIBRARY_PATH="$PWD/lib:${LD_LIBRARY_PATH:-}"
export SALE_CACHE_DIR="${SALE_CACHE_DIR:-$PWD/cache}"
what="${1:-all}"; lens="${2:-16384,32768,65536,131072}"
out="${OUT:-$PWD/out}"; mkdir -p "$out"
rc=0
./sale info
if [ "$what" = tests ] || [ "$what" = all ]; then
  # a hung kernel must not hold the device call: SIGKILL after the limit
  SALE_TEST_THREAD_CALLS="${SALE_TEST_THREAD_CALLS:-1000}" timeout -k 5 "${SALE_GPU_TEST_LIMIT:-900}" ./test_gpu --jobs 1 --verbose 2>&1 | tee "$out/test_gpu.log" | grep -E "^gpu |quantize|Synthesis|FAIL|fail|Assert|SKIP" ; rc=${PIPESTATUS[0]}
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
  mkdir -p dump
  python3 sdpa.py --lens "$lens" --out anchors.txt 2>&1 | tail -n 8
  ./bench_attention --lens "$lens" --anchors anchors.txt --dump dump | tee "$out/bench.md"
  python3 sdpa.py --lens 1024 --reps 1 --out /dev/null --check dump 2>&1 | grep check
fi
if [ "$what" = host ] || [ "$what" = all ]; then
  python3 sdpa_host.py --lens 2048,16384 --out sdpa_host.txt 2>&1 | tail -n 4
  ./bench_host --lens 2048,16384 --anchors sdpa_host.txt | tee "$out/bench_host.md"; [ "${PIPESTATUS[0]}" = 0 ] || rc=1
  ./bench_host --dense-below | tee "$out/dense_below.md"; [ "${PIPESTATUS[0]}" = 0 ] || rc=1
fi
exit $rc
