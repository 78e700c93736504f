#!/usr/bin/env bash
# Everything the issues ask to verify on the GPU machine, in one call (about 8 minutes on an H100):
# the CUDA build and test suite, the peer comparison (bench/gpu_bench.py, writes results.md), the
# feature timings, the Python package's tests, and the training step of the C++ demo at the
# issue's size. Logs go to $OUT (or ./gpu_out). Sanitizers: bench/gpu_run.sh sanitize (separately:
# the tools take minutes).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-$PWD/gpu_out}
mkdir -p "$out"
rc=0
step() { local t=$SECONDS; "$@"; local r=$?; [ $r -ne 0 ] && rc=$r; echo "   ($* : rc $r, $((SECONDS - t)) s)"; }
step bash bench/gpu_run.sh build test
[ -x build-gpu/tools/shortconv ] || { echo "build failed: nothing else to run"; exit 1; }
step bash -c "timeout 300 python3 bench/gpu_bench.py --cli build-gpu/tools/shortconv --out '$out' > '$out/bench.log' 2>&1; grep -E '^\| \(|^- ' '$out/bench.log'"
step bash -c "bash bench/gpu_features.sh 2>&1 | grep -E '^\\\$|^(forward|backward|decode)'"
step bash -c "bash bench/gpu_python.sh install test > '$out/python.log' 2>&1; grep -E 'passed|failed|error' '$out/python.log' | tail -3"
train="build-gpu/tools/shortconv train --device cuda --d-model 2048 --channels 4096 --seqlen 2048 --batch 8"
step bash -c "$train --steps 40 2>&1 | tail -3; $train --steps 40 --tf32 2>&1 | tail -2; $train --steps 15 --profile 2>&1 | tail -14"
exit $rc
