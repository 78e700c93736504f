#!/usr/bin/env bash
# session-9 final verification (not committed)
cd "$(dirname "$0")/.." || exit 1
case $1 in
A)
(bash bench/gpu_ab.sh build bench/ab_base.patch > $OUT/abbuild.log 2>&1 &)
bash bench/gpu_run.sh build test bench
grep -E "FAILED|Failure" -m 20 $OUT/test_cuda.log
bash bench/gpu_features.sh > $OUT/features.log 2>&1; grep -E "fast|decode|\\$" $OUT/features.log
while ! grep -q "base built\|error\|does not" $OUT/abbuild.log; do sleep 5; done; cat $OUT/abbuild.log
AB_CASES="--dtype bf16 -K 16 --bias
--dtype bf16 -K 16
--dtype bf16 -K 8 --bias
--dtype bf16 -K 4 --bias
--dtype bf16 -K 4 --silu --bias
--dtype bf16 -B 1 -T 65536 -C 2048 -K 4 --bias
--dtype f32 -K 4 --bias" bash bench/gpu_ab.sh run 2>&1 | grep -E "^==|fast" | tee $OUT/ab.log
;;
C)
(bash bench/gpu_ab.sh build bench/ab_base.patch > $OUT/abbuild.log 2>&1 &)
bash bench/gpu_run.sh build test
grep -E "FAILED|Failure" -m 20 $OUT/test_cuda.log
while ! grep -q "base built\|error\|does not" $OUT/abbuild.log; do sleep 5; done; cat $OUT/abbuild.log
AB_CASES="--dtype bf16 -K 32 --bias
--dtype bf16 -K 32
--dtype bf16 -K 24 --bias
--dtype bf16 -K 64 --bias
--dtype bf16 -K 128 --bias
--dtype bf16 -B 1 -T 65536 -C 2048 -K 32 --bias" bash bench/gpu_ab.sh run 2>&1 | grep -E "^==|forward" | tee $OUT/ab.log
bash bench/gpu_run.sh bench > /dev/null 2>&1; grep -E "^\| \(4,4096,4096,(16|32|64)\)|^targets" $OUT/results.md
;;
B)
for r in 1 2; do for b in "" "--bias"; do echo "K16 fwd $b: $(build-gpu/tools/shortconv bench --device cuda --dtype bf16 -K 16 $b | grep -E '^forward +fast' | awk '{print $4, $6}')"; done; done
bash bench/gpu_run.sh sanitize 2>&1 | tail -12
bash bench/gpu_python.sh install test 2>&1 | tail -8
;;
esac
cd $OUT && tar czf /tmp/all.tgz . ; find . -type f -delete; mv /tmp/all.tgz .
