#!/bin/sh
# build attn_floor for sm_90a (no GPU needed) into /work/main/.attn (git-ignored) with the run files
set -e
cd "$(dirname "$0")"
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
DST=${DST:-../../.attn}
mkdir -p $DST
$NVCC -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -lineinfo -Xptxas -v -cudart static \
    -o $DST/attn_floor attn_floor.cu -lpthread 2>&1 | tee $DST/attn_build.log
cp attn_run_device.sh attn_sdpa.py $DST/
grep -E "C75|spill|Used|error" $DST/attn_build.log
