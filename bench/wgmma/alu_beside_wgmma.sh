#!/bin/sh
# build alu_beside_wgmma for sm_90a (no GPU needed) into DST (default .gpu/, which
# .git/info/exclude ignores; carry it to the device and run ./alu_beside_wgmma there)
set -e
cd "$(dirname "$0")"
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
DST=${DST:-../../.gpu}
mkdir -p "$DST"
$NVCC -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -I../../templates -Xptxas -v -cudart static \
    -o "$DST/alu_beside_wgmma" alu_beside_wgmma.cu 2>&1 | tee "$DST/alu_beside_wgmma.log" | grep -E "C75|spill|Used|error" || true
