#!/usr/bin/env bash
# Runs the CUDA test binary under compute-sanitizer's four tools, on a machine with a GPU:
#   scripts/compute_sanitizer.sh [BUILD_DIR]          (default build-gpu, as bench/gpu_run.sh builds it)
#   TOOLS="memcheck racecheck" SANITIZE_FILTER=<gtest filter> scripts/compute_sanitizer.sh
# memcheck (out-of-bounds and misaligned accesses, device-memory leaks), racecheck (shared-memory
# hazards), initcheck (reads of uninitialised device memory) and synccheck (invalid barrier use)
# each run the same gtest subset: every kernel variant (widths <= 4, <= 8, <= 16 and > 16 through
# the generic path; forward, backward, naive, decode; SiLU, states, packed sequences; strided and
# unaligned views; bf16/f16/f32), kept short because the tools slow kernels down 10-100x.
# Each tool's full output goes to $OUT (or ./gpu_out)/compute_sanitizer_<tool>.log and its
# "ERROR SUMMARY" line is printed. Exit status: 0 when every tool reports 0 errors and the tests
# pass, 1 otherwise, 2 when nothing was checked (no compute-sanitizer, no binary, no GPU: all skipped).
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build-gpu}
bin=$build/tests/shortconv_tests_cuda
out=${OUT:-$PWD/gpu_out}
mkdir -p "$out"

# The sweep's T = 37 / C = 33 rows hold every width of the CPU sweep (1, 2, 3, 4, 5, 7, 8, 16, 33) in
# all four dtype pairs, batch 1 and 3 (strided); its T = 257 / C = 264 rows hold every width bucket
# and the generic path (1..9, 16, 31, 32, 64, 100) in three dtypes. The bf16 third of the feature
# tests holds SiLU, states and packed sequences at every width (1..64); then the decode step, the
# naive kernels, the determinism runs (multi-chunk reductions), chunked/decode invariants, owned
# streams, and the CPU comparison; and the tensor-core forward's 4-warp blocks (T = 2053 / C = 264
# at K = 24: enough pieces for them, padded weight pairs). Left out: CudaBig.* (minutes under the
# tools) and AutogradCuda.* (mostly cuBLAS; add it with SANITIZE_FILTER).
default_filter='Cuda/CudaSweep.*_T37_C33_*:Cuda/CudaSweep.*_T257_C264_*:Cuda/CudaFeatures.*_bf16_*:CudaDecode.*'
default_filter+=':Cuda/CudaSweep.*_T2053_C264_K24_*:CudaNaive.*:CudaDeterminism.*:CudaInvariants.*:CudaStream.*:CudaVsCpu.*'
filter=${SANITIZE_FILTER:-$default_filter}
tools=${TOOLS:-memcheck racecheck initcheck synccheck}

sanitizer=$(command -v compute-sanitizer || true)
for candidate in "${CUDA_HOME:-/usr/local/cuda}/bin/compute-sanitizer" /usr/local/cuda/compute-sanitizer/compute-sanitizer \
                 /opt/nvidia/compute-sanitizer/compute-sanitizer; do
  [ -z "$sanitizer" ] && [ -x "$candidate" ] && sanitizer=$candidate
done
if [ -z "$sanitizer" ]; then
  echo "compute_sanitizer: compute-sanitizer not found (PATH, \$CUDA_HOME/bin, /usr/local/cuda/bin)"
  exit 2
fi
if [ ! -x "$bin" ]; then
  echo "compute_sanitizer: $bin not found; build first (bench/gpu_run.sh build)"
  exit 2
fi
echo "compute_sanitizer: $("$sanitizer" --version | tail -1)"
echo "compute_sanitizer: filter $filter"

declare -A extra=(
  [memcheck]="--leak-check full"
  [racecheck]=""
  [initcheck]=""
  [synccheck]=""
)
rc=0
for tool in $tools; do
  log=$out/compute_sanitizer_$tool.log
  start=$SECONDS
  # shellcheck disable=SC2086  # the extra options are a word list
  "$sanitizer" --tool "$tool" ${extra[$tool]:-} --error-exitcode 3 --print-limit 50 \
    "$bin" --gtest_brief=1 --gtest_filter="$filter" >"$log" 2>&1
  status=$?
  # racecheck prints "RACECHECK SUMMARY: N hazards displayed (E errors, W warnings)" instead.
  summary=$(grep -E "ERROR SUMMARY: [0-9]+ error|RACECHECK SUMMARY: [0-9]+ hazard" "$log" | tail -1 | sed 's/^=* *//')
  tests=$(grep -E "^\[  (PASSED|FAILED|SKIPPED) +\]" "$log" | tr -s ' \n' ' ')
  passed=$(sed -nE 's/^\[  PASSED  \] ([0-9]+) tests?.*/\1/p' "$log" | tail -1)
  if [ -z "$summary" ]; then
    echo "$tool: no ERROR SUMMARY (exit $status): compute-sanitizer did not run; see $log"
    grep -m3 -E "Device not supported|error|Error" "$log"
    [ $rc -eq 0 ] && rc=2
    continue
  fi
  echo "$tool: $summary; exit $status; $((SECONDS - start)) s; $tests"
  if [ "${passed:-0}" = 0 ]; then
    echo "$tool: no test passed (no GPU visible, or a filter that matches nothing): nothing was checked"
    [ $rc -eq 0 ] && rc=2
    continue
  fi
  if [[ $summary == RACECHECK* ]]; then
    errors=$(sed -E 's/.*\(([0-9]+) errors?, ([0-9]+) warnings?\).*/\1\2/' <<<"$summary")
    [ "$errors" = 00 ] && errors=0
  else
    errors=$(sed -E 's/.*ERROR SUMMARY: ([0-9]+) error.*/\1/' <<<"$summary")
  fi
  if [ "$errors" != 0 ] || [ $status -ne 0 ]; then
    rc=1
    grep -m10 -E "^========= (Invalid|Race|Uninitialized|Barrier|Leaked|Program hit|Error)" "$log"
  fi
done
exit $rc
