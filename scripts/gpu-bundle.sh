#!/usr/bin/env bash
# Build here and bundle what the GPU host needs into .gpu/ (git-ignored):
# the binaries, the bench scripts, and every shared library they load that the
# GPU host lacks (all ldd dependencies except glibc's own and NVRTC/CUDA).
# Then, on the GPU host:   cd .gpu && ./run.sh   (see README "Running on a GPU")
# --base REV (repeatable): also build commit REV (a git worktree under /tmp)
# and put its bench_attention and example_attention in .gpu/base/ (the second
# --base in .gpu/base2/, ...), for gpu-ab.sh: the change against each REV
# measured in the same device call.
set -euo pipefail
cd "$(dirname "$0")/.."
bases=()
while [ "${1:-}" = "--base" ]; do bases+=("${2:?--base needs a commit}"); shift 2; done
./scripts/setup.sh >/dev/null
rm -rf .gpu && mkdir -p .gpu/lib
bins="sale test_gpu bench_attention bench_invariance bench_host bench_calibrated example_attention"
for b in $bins; do
  if [ -f "build/$b" ]; then cp "build/$b" .gpu/; fi
done
cp bench/sdpa.py bench/sdpa_host.py bench/ab_median.py scripts/gpu-run.sh scripts/gpu-check.sh scripts/gpu-ab.sh .gpu/ 2>/dev/null || true
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
i=1
for base in "${bases[@]}"; do
  dir=base; [ $i = 1 ] || dir="base$i"
  wt="/tmp/sale-base-$(git rev-parse --short "$base")"
  [ -d "$wt" ] || git worktree add --detach "$wt" "$base" >/dev/null
  cmake -S "$wt" -B "$wt/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$wt/build" -j"$(nproc)" --target bench_attention example_attention >/dev/null
  mkdir -p ".gpu/$dir" && cp "$wt/build/bench_attention" "$wt/build/example_attention" ".gpu/$dir/"
  echo "$base $(git rev-parse --short "$base")" > ".gpu/$dir/REV"
  echo "bundle: .gpu/$dir is $base ($(git rev-parse --short "$base"))"
  i=$((i + 1))
done
du -sh .gpu | awk '{print "bundle: .gpu is " $1}'
