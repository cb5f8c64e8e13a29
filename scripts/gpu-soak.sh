#!/usr/bin/env bash
# gpu-soak.sh — on the GPU machine, in .gpu/ (scripts/gpu-bundle.sh copies it
# there): the random GPU configurations (gpu/random_configurations_match_reference)
# with fresh seeds, plain and under compute-sanitizer, each run under a time limit.
#
#   ./gpu-soak.sh [--seeds "11 12"] [--cases 80] [--tools "none memcheck racecheck synccheck initcheck"]
#                 [--limit 170] [--mode two-pass] [--head-dim 128] [--canary]
#
# --tools: "none" runs the cases without a sanitizer. Under a sanitizer each
#   case costs 2-3x (memcheck, synccheck) to 5x (racecheck): use fewer cases.
# --mode / --head-dim: hold that draw fixed (SALE_GPU_SOAK_MODE / _D).
# --canary: the sanitizer's positive control (SALE_GPU_SOAK_CANARY=4096: k's
#   allocation 4 KB short, no guard bands): memcheck must report errors, in
#   the quantize or mma.sync kernels that read k with LDG / cp.async. It
#   reports none for the sm_90a wgmma kernels (--mode dense --head-dim 128):
#   memcheck does not check TMA loads or stores; compare()'s guard bands are
#   what checks those (README, "Inputs nobody designed a test for").
# Logs: $OUT/soak_<tool>_<seed>.log (the device call brings $OUT back).
set -uo pipefail
self="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
cd "$(dirname "$self")" || exit 1
seeds="$(date +%s)"; cases=80; tools="none"; limit=170; canary=0
while [ $# -gt 0 ]; do
  case "$1" in
    --seeds) seeds="$2"; shift 2 ;;
    --cases) cases="$2"; shift 2 ;;
    --tools) tools="$2"; shift 2 ;;
    --limit) limit="$2"; shift 2 ;;
    --mode) export SALE_GPU_SOAK_MODE="$2"; shift 2 ;;
    --head-dim) export SALE_GPU_SOAK_D="$2"; shift 2 ;;
    --canary) canary=1; shift ;;
    -h|--help) sed -n '2,18p' "$self"; exit 0 ;;
    *) echo "gpu-soak.sh: unknown argument $1 (--help)" >&2; exit 2 ;;
  esac
done
[ -x ./test_gpu ] || { echo "gpu-soak.sh: run it in .gpu/ (scripts/gpu-bundle.sh)" >&2; exit 2; }
export LD_LIBRARY_PATH="$PWD/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" SALE_CACHE_DIR="${SALE_CACHE_DIR:-$PWD/cache}"
[ $canary = 1 ] && export SALE_GPU_SOAK_CANARY=4096
O="${OUT:-$PWD/out}"; mkdir -p "$O"
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
rc=0; t0=$(date +%s)
for tool in $tools; do
  for seed in $seeds; do
    log="$O/soak_${tool}_$seed.log"
    if [ "$tool" = none ]; then
      SALE_TEST_SEED=$seed SALE_GPU_SOAK_CASES=$cases timeout -k 5 "$limit" ./test_gpu --jobs 1 \
        --filter 'gpu/random_configurations_match_reference' > "$log" 2>&1; r=$?
    else
      extra=""; [ "$tool" = synccheck ] && extra="--num-cuda-barriers 65536"
      SALE_TEST_SEED=$seed SALE_GPU_SOAK_CASES=$cases timeout -k 5 "$limit" "$CS" --tool "$tool" $extra \
        --target-processes all --print-limit 100 --error-exitcode 9 ./test_gpu --jobs 1 \
        --filter 'gpu/random_configurations_match_reference' > "$log" 2>&1; r=$?
    fi
    echo "== $tool seed $seed: rc=$r, $(( $(date +%s) - t0 )) s $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$log" | tail -1)"
    grep -E 'random configurations:|^FAILED|Synthesis' "$log" | cut -c1-260 | head -12
    grep -A1 -E '^========= (Invalid|Error|Race|Barrier)' "$log" | grep -oE 'at [A-Za-z_][A-Za-z0-9_]*' | sort | uniq -c | head
    [ $r = 0 ] || rc=1
    [ $r -ge 124 ] && echo "== $tool seed $seed timed out (--limit $limit)"
  done
done
exit $rc
