#!/bin/bash
# run on the GPU machine from a folder holding est_floor: verify, time, SASS, ncu. Results to $OUT.
OUT=${OUT:-.}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > $OUT/smi.txt 2>&1
cuobjdump --dump-sass est_floor > $OUT/sass.txt 2>&1
awk '/Function :/{f=$3} /IGMMA/{n[f]++} /IMMA/{m[f]++} /LDL|STL/{l[f]++} END{for(k in n) print "IGMMA", k, n[k]; for(k in m) print "IMMA", k, m[k]; for(k in l) print "LDL/STL", k, l[k]}' $OUT/sass.txt | sort > $OUT/sass_counts.txt
cat $OUT/smi.txt $OUT/sass_counts.txt
timeout ${VT:-90} ./est_floor v > $OUT/verify.txt 2>&1; echo "verify rc=$?" >> $OUT/verify.txt
grep -v "^    " $OUT/verify.txt | tail -n 12; grep -c "differing: 0 of" $OUT/verify.txt
timeout ${TT:-120} ./est_floor t ${NS:-65536 131072} > $OUT/time.txt 2>&1; echo "time rc=$?" >> $OUT/time.txt
if [ -n "$NCU" ]; then
  for kk in "est_wgmma_kernel 0x11" "est_wgmma_b_kernel 0x50" "est_wgmma_only_kernel 0x110" "est_mma_kernel 0x10"; do
    set -- $kk
    EST_KMASK=$2 timeout 60 ncu --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
      -k $1 -c 1 ./est_floor t ${NCU} > $OUT/ncu_$1.txt 2>&1
    echo "== ncu $1"; grep -E "Duration|SM Frequency|Compute \(SM\) Throughput|Memory Throughput|L2 Hit Rate|DRAM Throughput|L1/TEX Hit|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|Active Warps Per" $OUT/ncu_$1.txt | sed 's/  */ /g'
  done
fi
cat $OUT/time.txt | sed -n '/^| N/,$p'
