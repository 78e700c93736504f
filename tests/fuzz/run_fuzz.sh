#!/usr/bin/env bash
# Builds the libFuzzer target with clang++ and runs it.
#   tests/fuzz/run_fuzz.sh [SECONDS] [libFuzzer args...]    fuzz for SECONDS (default 60)
#   tests/fuzz/run_fuzz.sh 0 CRASH_FILE...                  replay inputs once (a crash reproducer)
# Build folder: $FUZZ_BUILD_DIR (default build-fuzz). New corpus entries go to $FUZZ_BUILD_DIR/corpus,
# crashes to $FUZZ_BUILD_DIR/artifacts; the checked-in seeds in tests/fuzz/corpus are only read.
# Exits non-zero on a crash, a sanitizer report, a leak or a timeout.
# SHORTCONV_FUZZ_VERBOSE=1 prints each input's call and verdict; SHORTCONV_FUZZ_STATS=1 a tally at exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-60}
[ $# -gt 0 ] && shift
build=${FUZZ_BUILD_DIR:-build-fuzz}

command -v clang++ >/dev/null || { echo "run_fuzz: clang++ not found (scripts/install_deps.sh --fuzz)"; exit 1; }
mkdir -p "$build"
cmake -S . -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DSHORTCONV_BUILD_FUZZ=ON -DSHORTCONV_CUDA=OFF -DSHORTCONV_BUILD_TESTS=OFF -DSHORTCONV_BUILD_TOOLS=OFF \
  >"$build/configure.log" 2>&1 || { tail -20 "$build/configure.log"; exit 1; }
cmake --build "$build" --target fuzz_conv1d

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
fuzzer=$build/tests/fuzz/fuzz_conv1d
if [ "$seconds" = 0 ]; then
  exec "$fuzzer" "$@"
fi
mkdir -p "$build/corpus" "$build/artifacts"
# -timeout: an input running 10 s is a hang, reported as a failure. Inputs use under 100 bytes.
exec "$fuzzer" -max_total_time="$seconds" -max_len=512 -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
  -artifact_prefix="$build/artifacts/" "$@" "$build/corpus" tests/fuzz/corpus
