#!/bin/sh
# build est_floor for sm_90a (no GPU needed); ptxas resource report in build.log
set -e
cd "$(dirname "$0")"
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
$NVCC -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -lineinfo -Xptxas -v -Xcompiler -ffp-contract=off \
    -cudart static -o est_floor est_floor.cu 2>&1 | tee build.log
