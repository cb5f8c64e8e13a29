#!/usr/bin/env bash
# Runs ON the GPU host from the bundle folder (.gpu): one device call's worth
# of checking and measuring a kernel change, every step under a time limit
# (a hung kernel fails its step; it does not hold the call), at most 8 files
# under $OUT:
#   1. the GPU tests, one process per test (a hang costs one test's limit,
#      SALE_GPU_TEST_LIMIT; the slow ones, SALE_GPU_SLOW_TESTS, run last under
#      three times it);
#   2. compute-sanitizer memcheck, racecheck, synccheck on a small shape
#      (each under SALE_GPU_CHECK_LIMIT, default 300 s; a mode whose run
#      times out skips its other tools; memcheck does not see TMA copies:
#      the tests' guard bands do);
#   3. (unless --skip-bench) the SDPA anchors and bench_attention, this build and, when
#      gpu-bundle.sh --base REV put one in base/ (base2/, base3/ for more
#      --base), each REV's build in the same call (--bench-args adds
#      arguments, e.g. '--fixed-only'); --rounds R runs them R times,
#      alternating, and writes the medians to ab.md (bench/ab_median.py);
#   4. optionally ncu --set full of one kernel, with its SASS stall samples
#      (the first launch whose name matches KERNEL_REGEX: above 64K both
#      persistent attend kernels launch and the one the pick does not want
#      exits at once, so name it exactly, e.g. '^sale_attend_kernel$' for
#      the two-row kernel; 'sale_attend' caught the rows kernel's 3 us exit
#      at 128K d 0.2 in the twenty-second session)
#      (of the first length, at --ncu-tau; thr=fixed with --bench-args --fixed-only)
#      (--ncu-base: of the first base's build too: ncu_base.txt, ncu_base_sass.csv);
#   5. with bases, the raw runs packed into raw.tgz, so that what comes back
#      is ab.md, log.txt, raw.tgz, tests.txt and check.txt (5 of the 8 files).
# usage: ./gpu-ab.sh [--lens 65536,131072] [--tau 0.004,0.0015,7e-4 | --density 0.05,0.2 (the base build must have it: 7d3b400 on)]
#                    [--tests 'glob ...' (default: all)] [--check-modes 'two-pass:run two-pass:fixed two-pass:fixed:5' (mode:thr[:tile warps])]
#                    [--ncu KERNEL_REGEX --ncu-tau T [--ncu-base]] [--skip-tests] [--skip-check] [--skip-bench] [--bench-args 'ARGS']
#                    [--rounds R (default 1)] [--anchors 'cudnn 65536 57.7,cudnn 131072 251.5' (skip
#                    the SDPA run, ~30 s: its lines, comma-separated, as an earlier call measured them)]
set -uo pipefail
cd "$(dirname "$0")"
export LD_LIBRARY_PATH="$PWD/lib:${LD_LIBRARY_PATH:-}"
export SALE_CACHE_DIR="${SALE_CACHE_DIR:-$PWD/cache}"
O="${OUT:-$PWD/out}"; mkdir -p "$O"; L="$O/log.txt"
lens=65536,131072; taus=0.004,0.0015,7e-4; tests=""; modes="two-pass:run two-pass:fixed"
ncu_k=""; ncu_tau=0.0015; ncu_base=0; skip_t=0; skip_c=0; skip_b=0; sel="--tau"; bargs=""; rounds=1; anchors=""
while [ $# -gt 0 ]; do
  case "$1" in
    --lens) lens="$2"; shift 2 ;;
    --tau) taus="$2"; sel="--tau"; shift 2 ;;
    --density) taus="$2"; sel="--density"; shift 2 ;;
    --tests) tests="$2"; shift 2 ;;
    --check-modes) modes="$2"; shift 2 ;;
    --ncu) ncu_k="$2"; shift 2 ;;
    --ncu-tau) ncu_tau="$2"; shift 2 ;;
    --ncu-base) ncu_base=1; shift ;;
    --skip-tests) skip_t=1; shift ;;
    --skip-check) skip_c=1; shift ;;
    --skip-bench) skip_b=1; shift ;;
    --bench-args) bargs="$2"; shift 2 ;;
    --anchors) anchors="$2"; shift 2
      echo "$anchors" | tr ',' '\n' | grep -qvE '^(flash|cudnn) [0-9]+ [0-9.]+$' &&
        { echo "gpu-ab.sh: --anchors takes 'flash|cudnn N ms' lines, comma-separated; got '$anchors'" >&2; exit 2; } ;;
    --rounds) rounds="$2"; shift 2
      case "$rounds" in ''|*[!0-9]*|0) echo "gpu-ab.sh: --rounds needs a whole number >= 1" >&2; exit 2 ;; esac ;;
    -h|--help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$(basename "$0")"; exit 0 ;;
    *) echo "gpu-ab.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
rc=0
say() { echo "$*" | tee -a "$L"; }
if [ $skip_t = 0 ]; then
  # the suite's tests: the last word of each list line but the header
  # (the slow tests, SALE_GPU_SLOW_TESTS, last and under three times the
  # limit: thr_fixed_two_pass_matches_reference checks 37 cases against the
  # CPU reference and takes ~90 s; cut at 60 s it stopped the suite with
  # four tests not run, fifteenth session)
  slow="${SALE_GPU_SLOW_TESTS-thr_fixed_two_pass_matches_reference}"
  if [ -z "$tests" ]; then
    tests=$(./test_gpu --list 2>/dev/null | grep -v ': [0-9]* tests' | awk '{print $NF}')
    tests="$(for t in $tests; do case " $slow " in *" $t "*) ;; *) echo "$t" ;; esac; done)
$(for t in $tests; do case " $slow " in *" $t "*) echo "$t" ;; esac; done)"
  fi
  for t in $tests; do
    lim="${SALE_GPU_TEST_LIMIT:-180}"
    case " $slow " in *" $t "*) lim=$((lim * 3)) ;; esac
    SALE_TEST_THREAD_CALLS="${SALE_TEST_THREAD_CALLS:-1000}" timeout -k 5 "$lim" \
      ./test_gpu --jobs 1 --verbose --filter "gpu/$t" > "$O/t.log" 2>&1; r=$?
    grep -E "^gpu |FAIL|Assert" "$O/t.log" | grep -v '^\[----\]  *$' >> "$O/tests.txt"
    say "test $t rc=$r"; [ $r = 0 ] || rc=1
    [ $r -ge 124 ] && { say "test $t timed out: stopping the tests"; break; }
  done
  rm -f "$O/t.log"
fi
if [ $skip_c = 0 ]; then
  CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  for mt in $modes; do m="${mt%%:*}"; rest="${mt#*:}"; thr="${rest%%:*}"; w=""  # mode:thr[:tile warps]
    [ "$rest" = "$thr" ] || w="${rest#*:}"
    timeout -k 5 120 ./example_attention 1000 "$m" "$thr" $w >/dev/null 2>&1
    for tool in memcheck racecheck synccheck; do
      extra=""; [ "$tool" = synccheck ] && extra="--num-cuda-barriers 65536"
      out=$(timeout -k 5 "${SALE_GPU_CHECK_LIMIT:-300}" "$CS" --tool "$tool" $extra --print-limit 4 --error-exitcode 9 \
            ./example_attention 1000 "$m" "$thr" $w 2>&1); r=$?
      say "$tool $m thr=$thr${w:+ warps=$w} rc=$r $(echo "$out" | grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' | tail -1)"
      [ $r = 0 ] || { rc=1; echo "$out" | grep -v '^=========     #' | head -40 >> "$O/check.txt"; }
      # a hang under one tool hangs under the others: the mode's other tools are skipped
      # (a cluster kernel hung under memcheck, thirteenth session: one limit, not three)
      [ $r -ge 124 ] && { say "$tool $m thr=$thr${w:+ warps=$w} timed out (SALE_GPU_CHECK_LIMIT): its other tools skipped"; break; }
    done
  done
fi
if [ $skip_b = 0 ]; then
  if [ -n "$anchors" ]; then
    echo "$anchors" | tr ',' '\n' > anchors.txt; say "anchors given (no SDPA run): $anchors"
  else
    timeout -k 5 120 python3 sdpa.py --lens "$lens" --out anchors.txt 2>&1 | tail -n 4 | tee -a "$L"
  fi
  [ -f anchors.txt ] || { : > anchors.txt; say "no SDPA anchors (sdpa.py wrote none): the tables go without them"; }
  # --rounds R: every build's bench R times, the builds alternating within a
  # round (drift over the call then falls on all of them alike); each run is
  # appended to the build's file, and ab_median.py writes the medians (ab.md)
  : > "$O/bench.md"; : > "$O/bench.err"
  for round in $(seq 1 "$rounds"); do
    timeout -k 5 "${SALE_GPU_BENCH_LIMIT:-300}" ./bench_attention --lens "$lens" $sel "$taus" --reps 3 --anchors anchors.txt \
      $bargs >> "$O/bench.md" 2>> "$O/bench.err"; r=$?; say "bench round $round rc=$r"; [ $r = 0 ] || rc=1
    for bd in base base2 base3; do
      [ -x "$bd/bench_attention" ] || continue
      [ "$round" = 1 ] && : > "$O/$bd.md"
      (cd "$bd" && timeout -k 5 "${SALE_GPU_BENCH_LIMIT:-300}" ./bench_attention --lens "$lens" $sel "$taus" --reps 3 \
         --anchors ../anchors.txt $bargs >> "$O/$bd.md" 2>&1); r=$?
      say "$bd bench round $round rc=$r ($(cat "$bd/REV" 2>/dev/null))"; [ $r = 0 ] || rc=1
    done
  done
  if [ "$rounds" -gt 1 ]; then
    files=""  # the first base is the reference: the change column reads "this build against it"
    for bd in base base2 base3; do [ -s "$O/$bd.md" ] && files="$files $(awk '{print $1}' "$bd/REV" 2>/dev/null || echo "$bd")=$O/$bd.md"; done
    python3 ab_median.py $files "this=$O/bench.md" > "$O/ab.md" 2>&1 || rc=1
    cat "$O/ab.md" >> "$L"
  fi
fi
if [ -n "$ncu_k" ]; then
  NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
  for bd in . base; do
    sfx=""
    if [ "$bd" = base ]; then
      [ "$ncu_base" = 1 ] || continue
      [ -x base/bench_attention ] || { say "--ncu-base: no base build (gpu-bundle.sh --base REV)"; rc=1; continue; }
      sfx=_base
    fi
    # with --bench-args --fixed-only the profiled launch is the thr=fixed
    # two-pass of the table (the tau of a --density row gives that density);
    # without it, the first launch is thr=run's, whose density at the same
    # tau is lower (sixteenth session: call 1's ncu was of a d ~ 0.035 launch)
    fo=""; case " $bargs " in *" --fixed-only "*) fo=--fixed-only ;; esac
    (cd "$bd" && timeout -k 5 180 "$NCU" --kernel-name "regex:$ncu_k" --launch-count 1 --set full -o prof -f \
      ./bench_attention --lens "${lens%%,*}" --tau "$ncu_tau" --reps 1 --plain-max 0 $fo >/dev/null 2>&1); say "ncu$sfx rc=$?"
    "$NCU" -i "$bd/prof.ncu-rep" --page details > "$O/ncu$sfx.txt" 2>&1
    "$NCU" -i "$bd/prof.ncu-rep" --page source --csv --print-source sass > "$O/ncu${sfx}_sass.csv" 2>&1
  done
fi
# the device tool brings back at most 8 files from $OUT: with bases, the raw
# runs (bench.md, bench.err, base*.md, the ncu pages) go into one archive,
# raw.tgz, beside ab.md, log.txt, tests.txt and check.txt
if ls "$O"/base*.md >/dev/null 2>&1; then
  raw=$(cd "$O" && ls bench.md bench.err base*.md ncu*.txt ncu*_sass.csv 2>/dev/null)
  if (cd "$O" && tar czf raw.tgz $raw && rm -f $raw); then
    say "the raw runs are in $O/raw.tgz: $(echo $raw)"
  else
    say "could not pack the raw runs into raw.tgz"; rc=1
  fi
fi
exit $rc
