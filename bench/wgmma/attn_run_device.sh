#!/bin/bash
# run on the GPU machine from .attn: SASS facts, verify, time (with an SM clock / power log),
# SDPA anchor, optional ncu. Everything to $OUT.
#   NS: sizes timed with TKMASK; NS2/TKMASK2: a second timing pass (e.g. 128K, fewer kernels)
OUT=${OUT:-.}
NS=${NS:-16384 65536}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw,power.limit --format=csv > $OUT/smi.txt 2>&1
cuobjdump --dump-sass attn_floor > sass.txt 2>&1
awk '/Function :/{f=$3} /HGMMA/{n[f]++} /MUFU.EX2/{x[f]++} /LDL|STL/{l[f]++} /BAR.SYNC|BAR.ARV/{b[f]++} END{for(k in n) print "HGMMA", k, n[k]; for(k in x) print "MUFU.EX2", k, x[k]; for(k in l) print "LDL/STL", k, l[k]; for(k in b) print "BAR", k, b[k]}' sass.txt | sort > $OUT/sass_counts.txt
grep -o "HGMMA[^ ;]*" sass.txt | sort | uniq -c > $OUT/sass_hgmma_forms.txt
gzip -c sass.txt > $OUT/sass.txt.gz
cat $OUT/smi.txt $OUT/sass_counts.txt $OUT/sass_hgmma_forms.txt
# verification: all kernels in one process; if it crashed, one process per kernel
timeout ${VT:-60} ./attn_floor v > $OUT/verify.txt 2>&1; rc=$?; echo "verify rc=$rc" >> $OUT/verify.txt
if [ $rc -gt 1 ]; then for m in 1 2 4 8 16 32 64 128 512 1024 2048 4096; do AT_KMASK=$m timeout 20 ./attn_floor v >> $OUT/verify.txt 2>&1; echo "verify kmask=$m rc=$?" >> $OUT/verify.txt; done; fi
grep -E "verify|FAIL|ALL" $OUT/verify.txt
nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu --format=csv,noheader -lms 250 > $OUT/smi_log.csv 2>&1 &
SMI=$!
AT_KMASK=${TKMASK:-0xffffffff} timeout ${TT:-100} ./attn_floor t $NS > $OUT/time.txt 2>&1; rc=$?; echo "time rc=$rc" >> $OUT/time.txt
if [ -n "$NS2" ]; then AT_KMASK=${TKMASK2:-0xffffffff} timeout ${TT2:-100} ./attn_floor t $NS2 >> $OUT/time.txt 2>&1; echo "time2 rc=$?" >> $OUT/time.txt; fi
kill $SMI
grep -E "^timed|rc=|sampled" $OUT/time.txt
awk -F', ' '{c=$2+0; p=$3+0; if (p > 300) {n++; sc+=c; sp+=p; if (c<mn||mn==0) mn=c}} END{if(n) printf "under load (power > 300 W): %d samples, mean SM clock %.0f MHz (min %d), mean power %.0f W\n", n, sc/n, mn, sp/n}' $OUT/smi_log.csv
if [ -z "$NOSDPA" ]; then PYTHONUNBUFFERED=1 timeout ${ST:-60} python3 attn_sdpa.py $NS $NS2 > $OUT/sdpa.txt 2>&1; echo "sdpa rc=$?" >> $OUT/sdpa.txt; grep -v "^|" $OUT/sdpa.txt; fi
if [ -n "$NCU" ]; then
  for kk in $NCU; do
    set -- ${kk//:/ }
    AT_KMASK=$2 timeout ${NCUT:-40} ncu --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis -k regex:"$1\$" -c 1 ./attn_floor t 65536 > $OUT/ncu_$1.txt 2>&1
    echo "== ncu $1 rc=$?"; grep -E "Duration|SM Frequency|Compute \(SM\) Throughput|Memory Throughput|L2 Hit Rate|DRAM Throughput|L1/TEX Hit|Max Bandwidth|ERR|rror" $OUT/ncu_$1.txt | sed 's/  */ /g' | head -14
  done
fi
grep -h "^| " $OUT/time.txt | sort -u -t'|' -k2,3; sed -n '/^| N/,$p' $OUT/sdpa.txt 2>/dev/null
