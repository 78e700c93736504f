#!/usr/bin/env bash
# One call on the GPU machine: build with CUDA, run the CUDA test suite, then benchmark.
#   bench/gpu_run.sh [build|test|bench|sanitize|all]...   (default: all; sanitize runs only when named)
# Logs and CSVs go to $OUT (the device tool's result folder) or ./gpu_out.
# BENCH_ARGS is passed to bench/gpu_bench.py, e.g. BENCH_ARGS=--quick (2 shapes).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-$PWD/gpu_out}
mkdir -p "$out"
stages=${*:-all}
has() { [[ " $stages " == *" $1 "* || " $stages " == *" all "* ]]; }
rc=0

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv | tee "$out/gpu.txt"

if has build || has test || has bench || has sanitize; then
  cmake -S . -B build-gpu -G Ninja -DSHORTCONV_CUDA=ON -DSHORTCONV_BUILD_TESTS=ON -DSHORTCONV_BUILD_TOOLS=ON \
    -DCMAKE_BUILD_TYPE=Release >"$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
  cmake --build build-gpu -j 16 >"$out/build.log" 2>&1 || { grep -E "error|Error" -A3 "$out/build.log" | head -60; exit 1; }
  echo "build: ok"
fi

if has test; then
  # One process per binary: ctest would start a CUDA context per test case.
  ./build-gpu/tests/shortconv_tests_cuda --gtest_brief=1 ${GTEST_FILTER:+--gtest_filter=$GTEST_FILTER} >"$out/test_cuda.log" 2>&1
  t=$?; [ $t -ne 0 ] && rc=$t
  grep -E "^\[  (PASSED|FAILED|SKIPPED) |tests ran|FAILED" "$out/test_cuda.log" | head -40
fi

if has bench && [ -x build-gpu/tools/shortconv ]; then
  # shellcheck disable=SC2086  # BENCH_ARGS is a word list
  python3 bench/gpu_bench.py --cli build-gpu/tools/shortconv --out "$out" ${BENCH_ARGS:-} 2>&1 | tee "$out/bench.log"
  t=${PIPESTATUS[0]}; [ $t -ne 0 ] && rc=$t
fi

if [[ " $stages " == *" sanitize "* ]]; then
  # compute-sanitizer memcheck, racecheck, initcheck and synccheck over a subset of the CUDA suite.
  scripts/compute_sanitizer.sh build-gpu
  t=$?; [ $t -ne 0 ] && rc=$t
fi
exit $rc
