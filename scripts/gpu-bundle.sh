#!/usr/bin/env bash
# Build here and bundle what the GPU host needs into .gpu/ (git-ignored):
# the binaries, the bench scripts, and every shared library they load that the
# GPU host lacks (all ldd dependencies except glibc's own and NVRTC/CUDA).
# Then, on the GPU host:   cd .gpu && ./run.sh   (see README "Running on a GPU")
# --base REV: also build commit REV (a git worktree under /tmp) and put its
# bench_attention and example_attention in .gpu/base/, for gpu-ab.sh: the
# change against REV measured in the same device call.
set -euo pipefail
cd "$(dirname "$0")/.."
base=""
if [ "${1:-}" = "--base" ]; then base="${2:?--base needs a commit}"; fi
./scripts/setup.sh >/dev/null
rm -rf .gpu && mkdir -p .gpu/lib
bins="sale test_gpu bench_attention bench_invariance bench_host bench_calibrated example_attention"
for b in $bins; do
  if [ -f "build/$b" ]; then cp "build/$b" .gpu/; fi
done
cp bench/sdpa.py bench/sdpa_host.py scripts/gpu-run.sh scripts/gpu-check.sh scripts/gpu-ab.sh .gpu/ 2>/dev/null || true
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
if [ -n "$base" ]; then
  wt="/tmp/sale-base-$(git rev-parse --short "$base")"
  [ -d "$wt" ] || git worktree add --detach "$wt" "$base" >/dev/null
  cmake -S "$wt" -B "$wt/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$wt/build" -j"$(nproc)" --target bench_attention example_attention >/dev/null
  mkdir -p .gpu/base && cp "$wt/build/bench_attention" "$wt/build/example_attention" .gpu/base/
  echo "bundle: .gpu/base is $base ($(git rev-parse --short "$base"))"
fi
du -sh .gpu | awk '{print "bundle: .gpu is " $1}'
