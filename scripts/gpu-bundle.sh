#!/usr/bin/env bash
# Build here and bundle what the GPU host needs into .gpu/ (git-ignored):
# the binaries, the bench scripts, and every shared library they load that the
# GPU host lacks (all ldd dependencies except glibc's own and NVRTC/CUDA).
# Then, on the GPU host:   cd .gpu && ./run.sh   (see README "Running on a GPU")
# --base REV (repeatable): also build commit REV (a git worktree under /tmp)
# and put its bench_attention and example_attention in .gpu/base/ (the second
# --base in .gpu/base2/, ...), for gpu-ab.sh: the change against each REV
# measured in the same device call.
# --prewarm ARCH (e.g. sm_90): compile this build's and every base's kernels
# for ARCH (thr run and fixed) into .gpu/cache, so that the device call spends
# no time in NVRTC and every build finds its own cubins (a template change
# changes the keys' source hash).
set -euo pipefail
cd "$(dirname "$0")/.."
bases=(); prewarm=""
while [ $# -gt 0 ]; do
  case "$1" in
    --base) bases+=("${2:?--base needs a commit}"); shift 2 ;;
    --prewarm) prewarm="${2:?--prewarm needs an arch, e.g. sm_90}"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "gpu-bundle.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
./scripts/setup.sh >/dev/null
rm -rf .gpu && mkdir -p .gpu/lib
bins="sale test_gpu bench_attention bench_invariance bench_host bench_calibrated rows_timeline example_attention"
for b in $bins; do
  if [ -f "build/$b" ]; then cp "build/$b" .gpu/; fi
done
cp bench/sdpa.py bench/sdpa_host.py bench/ab_median.py scripts/gpu-run.sh scripts/gpu-check.sh scripts/gpu-ab.sh scripts/gpu-soak.sh .gpu/ 2>/dev/null || true
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
# prewarm_with SALE_BINARY LABEL: that build's kernels for $prewarm into .gpu/cache
prewarm_with() {
  SALE_CACHE_DIR="$PWD/.gpu/cache" "$1" prewarm --arch "$prewarm" --thr run,fixed -q | tail -n 1 | sed "s/^/bundle: $2: /"
}
if [ -n "$prewarm" ]; then prewarm_with ./build/sale "this build"; fi
i=1
for base in "${bases[@]}"; do
  dir=base; [ $i = 1 ] || dir="base$i"
  wt="/tmp/sale-base-$(git rev-parse --short "$base")"
  [ -d "$wt" ] || git worktree add --detach "$wt" "$base" >/dev/null
  cmake -S "$wt" -B "$wt/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$wt/build" -j"$(nproc)" --target bench_attention example_attention ${prewarm:+sale_cli} >/dev/null
  mkdir -p ".gpu/$dir" && cp "$wt/build/bench_attention" "$wt/build/example_attention" ".gpu/$dir/"
  echo "$base $(git rev-parse --short "$base")" > ".gpu/$dir/REV"
  echo "bundle: .gpu/$dir is $base ($(git rev-parse --short "$base"))"
  if [ -n "$prewarm" ]; then prewarm_with "$wt/build/sale" "$dir"; fi
  i=$((i + 1))
done
du -sh .gpu | awk '{print "bundle: .gpu is " $1}'
