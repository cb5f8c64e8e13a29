#!/usr/bin/env bash
# Runs ON the GPU host from the bundle folder (.gpu): compute-sanitizer
# (memcheck, racecheck, synccheck) over every mode on a small odd shape, and
# the SASS of the cached sm_90a kernels (wgmma: HGMMA/IGMMA, no local memory).
# memcheck checks the kernels' ordinary loads and stores, not their TMA copies
# (twenty-seventh session, bench/RESULTS.md): a TMA box past a buffer is what
# the GPU tests' guard bands catch (test_gpu.c, compare()).
# usage: ./gpu-check.sh [N] (default 1000)
set -uo pipefail
cd "$(dirname "$0")"
export LD_LIBRARY_PATH="$PWD/lib:${LD_LIBRARY_PATH:-}"
export SALE_CACHE_DIR="${SALE_CACHE_DIR:-$PWD/cache}"
N="${1:-1000}"
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
rc=0
for mt in fused two-pass dense plain "two-pass fixed" "fused fixed"; do
  read -r m thr <<<"$mt"; thr="${thr:-run}"
  timeout -k 5 120 ./example_attention "$N" "$m" "$thr" >/dev/null 2>&1 || true # compile / load outside the tools
  for tool in memcheck racecheck synccheck; do
    extra=""; [ "$tool" = synccheck ] && extra="--num-cuda-barriers 65536" # fused: an mbarrier ring per CTA
    # a hang is a failure (rc 124/137), not a lost device call
    out=$(timeout -k 5 "${SALE_GPU_CHECK_LIMIT:-300}" "$CS" --tool "$tool" $extra --error-exitcode 9 ./example_attention "$N" "$m" "$thr" 2>&1); r=$?
    echo "$tool $m thr=$thr N=$N: rc=$r $(echo "$out" | grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|hazard' | tail -1)"
    [ $r = 0 ] || { rc=1; echo "$out" | tail -20; }
  done
done
# SASS of every cached sm_90a cubin
python3 - "$SALE_CACHE_DIR/kernels.db" <<'PY'
import sqlite3, subprocess, sys, tempfile, os
db = sqlite3.connect(sys.argv[1])
for key, blob in db.execute("SELECT key, cubin FROM kernels WHERE arch = 'sm_90a'"):
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(blob)
    sass = subprocess.run(["cuobjdump", "--dump-sass", f.name], capture_output=True, text=True).stdout
    os.unlink(f.name)
    n = lambda s: sum(1 for l in sass.splitlines() if s in l)
    print(f"sass {key}: HGMMA {n('HGMMA')}, IGMMA {n('IGMMA')}, HMMA {n('HMMA')}, LDL {n('LDL')}, STL {n('STL')}")
PY
exit $rc
