#!/bin/bash
# run on the GPU machine from a folder holding est_floor: verify, time, SASS. Results to $OUT.
OUT=${OUT:-.}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv > $OUT/smi.txt 2>&1
cuobjdump --dump-sass est_floor > $OUT/sass.txt 2>&1
awk '/Function :/{f=$3} /IGMMA/{n[f]++} /IMMA/{m[f]++} /LDL|STL/{l[f]++} END{for(k in n) print "IGMMA", k, n[k]; for(k in m) print "IMMA", k, m[k]; for(k in l) print "LDL/STL", k, l[k]}' $OUT/sass.txt | sort > $OUT/sass_counts.txt
cat $OUT/smi.txt $OUT/sass_counts.txt
timeout ${VT:-90} ./est_floor v > $OUT/verify.txt 2>&1; echo "verify rc=$?" >> $OUT/verify.txt
tail -n 40 $OUT/verify.txt
timeout ${TT:-120} ./est_floor t ${NS:-65536 131072} > $OUT/time.txt 2>&1; echo "time rc=$?" >> $OUT/time.txt
cat $OUT/time.txt
