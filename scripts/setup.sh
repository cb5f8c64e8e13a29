#!/usr/bin/env bash
# Install what the build needs (Debian/Ubuntu packages) and configure + build
# into ./build. The CUDA toolkit (NVRTC, cuda.h) is expected at /usr/local/cuda.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for p in liblua5.4-dev libsqlite3-dev libcriterion-dev pkg-config cmake gcc g++ make; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
CUDA_ROOT="${CUDA_ROOT:-/usr/local/cuda}"
if [ ! -f "$CUDA_ROOT/include/nvrtc.h" ]; then
  echo "setup: no CUDA toolkit at $CUDA_ROOT (need nvrtc.h, libnvrtc, cuda.h); set CUDA_ROOT" >&2
  exit 1
fi
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCUDA_ROOT="$CUDA_ROOT" >/dev/null
cmake --build build -j"$(nproc)"
