#!/usr/bin/env bash
# A quick look on the GPU machine while a kernel changes: build and run the CUDA suite, time the
# fast kernels on the roofline shapes (`shortconv bench`, no peers), then profile a few kernels
# with bench/gpu_profile.sh (PROFILE_CASES, default fwd_k4 bwd_k4; "none" skips it).
# The full comparison with cuDNN and the RESULTS.md table come from bench/gpu_run.sh.
set -uo pipefail
out=${OUT:-$PWD/gpu_out}
bash bench/gpu_run.sh build test 2>&1 | tail -5
status=${PIPESTATUS[0]}
# A failed build would leave the previous binary in build-gpu: time nothing then.
[ "$status" -ne 0 ] && { echo "gpu_quick: build or CUDA tests failed (exit $status): no timings"; exit "$status"; }
cli=build-gpu/tools/shortconv
for args in "-K 4" "-K 8" "-K 16" "-K 24" "-K 32" "-K 64" "-K 4 --silu --bias" "-B 1 -T 512 -C 1024 -K 4 --bias"; do
  echo "== bf16 $args"
  # shellcheck disable=SC2086  # args is a word list
  $cli bench --dtype bf16 $args 2>&1 | grep -E "^(forward|backward|decode) +fast"
done
echo "== f32 -K 4"
$cli bench --dtype f32 -K 4 2>&1 | grep -E "^(forward|backward) +fast"
echo "== decode"
$cli bench --dtype bf16 --decode 2>&1 | grep -E "^decode +fast"
cases=${PROFILE_CASES:-fwd_k4 bwd_k4}
# shellcheck disable=SC2086
[ "$cases" != none ] && SKIP_BUILD=1 bash bench/gpu_profile.sh $cases 2>&1 | grep -v "^    INF\|^          "
rm -f "$out/configure.log"
