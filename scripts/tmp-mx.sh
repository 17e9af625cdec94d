#!/usr/bin/env bash
# temporary: mxfp4 MMV check on the device (not committed)
set -u
B=build-mx; O=${OUT:-/tmp/out}; mkdir -p $O
rm -rf /tmp/mut && mkdir -p /tmp/mut && tar --exclude='./build*' -cf - . | (cd /tmp/mut && tar xf -)
sed -i 's/H1 = 0x40404040u/H1 = 0x40404041u/' /tmp/mut/src/cuda/qmm_impl.cuh
grep -c 0x40404041u /tmp/mut/src/cuda/qmm_impl.cuh
t0=$(date +%s)
(cmake -S . -B $B -G Ninja -DCMAKE_BUILD_TYPE=Release -DZMLX_CUDA=ON >/dev/null && cmake --build $B -j 11 >$O/build.log 2>&1; echo "build rc=$? $(( $(date +%s) - t0 )) s") &
(cd /tmp/mut && cmake -S . -B bm -G Ninja -DCMAKE_BUILD_TYPE=Release -DZMLX_CUDA=ON >/dev/null && cmake --build bm -j 5 --target test_cuda_qmm >$O/build-mut.log 2>&1; echo "mut build rc=$? $(( $(date +%s) - t0 )) s") &
wait
grep -E "error" $O/build.log | head
for t in test_cuda_qmm test_cuda_ops test_cuda_model test_model_forward; do
  timeout 300 $B/$t > $O/$t.log 2>&1; echo "$t rc=$? $(tail -1 $O/$t.log)"
done
grep -m5 "FAIL" $O/test_cuda_qmm.log
timeout 200 /tmp/mut/bm/test_cuda_qmm > $O/mut.log 2>&1; echo "MUTANT test_cuda_qmm rc=$? $(tail -1 $O/mut.log) fails=$(grep -c FAIL $O/mut.log)"
grep -m3 FAIL $O/mut.log | cut -c1-200
for s in gpt-oss-20b qwen3-30b-a3b; do
  tk=1,2,4,8,16,32,64; [ $s = qwen3-30b-a3b ] && tk=1,4,16
  timeout 200 $B/zmlx bench moe-layer --backend cuda --shape $s --tokens $tk --layers 48 --json $O/moe-$s.json > $O/bench-$s.txt 2>&1
  echo "bench $s rc=$?"; cat $O/bench-$s.txt | grep -v "^#" | tail -12
done
ZMLX_TEST_QUICK=1 timeout 200 compute-sanitizer --tool memcheck --error-exitcode 9 $B/test_cuda_qmm > $O/memcheck.log 2>&1
echo "memcheck rc=$? $(grep 'ERROR SUMMARY' $O/memcheck.log)"
