#!/usr/bin/env bash
# Build here and bundle what the GPU host needs into .gpu/ (git-ignored):
# the binaries, the bench scripts, and every shared library they load that the
# GPU host lacks (all ldd dependencies except glibc's own and NVRTC/CUDA).
# Then, on the GPU host:   cd .gpu && ./run.sh   (see README "Running on a GPU")
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
rm -rf .gpu && mkdir -p .gpu/lib
bins="sale test_gpu bench_attention bench_invariance bench_host bench_calibrated example_attention"
for b in $bins; do
  if [ -f "build/$b" ]; then cp "build/$b" .gpu/; fi
done
cp bench/sdpa.py bench/sdpa_host.py scripts/gpu-run.sh scripts/gpu-check.sh .gpu/ 2>/dev/null || true
for b in $bins; do
  [ -f ".gpu/$b" ] || continue
  ldd ".gpu/$b" | awk '/=> \// {print $3}' | while read -r lib; do
    case "$(basename "$lib")" in
      libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|libresolv.so*|ld-linux*|libnvrtc*|libcuda.so*) ;;
      *) cp -nL "$lib" .gpu/lib/ ;;
    esac
  done
done
# examples and scripts the device run uses
mkdir -p .gpu/examples && cp examples/*.lua .gpu/examples/ 2>/dev/null || true
du -sh .gpu | awk '{print "bundle: .gpu is " $1}'
