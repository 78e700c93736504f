#!/usr/bin/env bash
# A/B timings on the GPU machine, in the same call: the working tree (build-gpu, built by
# bench/gpu_run.sh) against a base tree = the working tree with PATCH reverse-applied
# (`git diff BASE_COMMIT -- src > gpu_out/base.patch` before the call, with the patch carried:
# the device copy's git metadata can be stale, so the base is rebuilt from the patch).
#   bench/gpu_ab.sh build PATCH   copy the tree to $AB_BASE, reverse-apply PATCH, build its CLI
#                                 (can run in the background while gpu_run.sh builds and tests)
#   bench/gpu_ab.sh run           time each case with both CLIs, interleaved (new, base, new, base)
#   bench/gpu_ab.sh ncu REGEX     one ncu launch of the kernels matching REGEX for each case and
#                                 CLI: duration, instructions, DRAM bytes, launch geometry
# Cases are `shortconv bench --device cuda` argument lists, one per line of $AB_CASES (default
# below). Prints the "fast" rows of each run, prefixed new1/base1/new2/base2.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
base=${AB_BASE:-/tmp/shortconv-ab-base}
new_cli=build-gpu/tools/shortconv
base_cli=$base/build/tools/shortconv

case ${1:-} in
  build)
    patch_file=$(realpath "${2:?usage: gpu_ab.sh build PATCH}")
    rm -rf "$base" && mkdir -p "$base"
    tar --exclude=./build-gpu --exclude=./gpu_out --exclude=./.git -cf - . | tar -xf - -C "$base"
    (cd "$base" && patch -R -p1 --quiet <"$patch_file") || { echo "gpu_ab: PATCH does not reverse-apply"; exit 1; }
    cmake -S "$base" -B "$base/build" -G Ninja -DSHORTCONV_CUDA=ON -DSHORTCONV_BUILD_TESTS=OFF -DSHORTCONV_BUILD_TOOLS=ON \
      -DCMAKE_BUILD_TYPE=Release >"$base/configure.log" 2>&1 || { tail -20 "$base/configure.log"; exit 1; }
    cmake --build "$base/build" --target shortconv_cli -j 16 >"$base/build.log" 2>&1 || { grep -E "error" -A3 "$base/build.log" | head -40; exit 1; }
    echo "gpu_ab: base built"
    ;;
  run)
    if [ ! -x "$new_cli" ] || [ ! -x "$base_cli" ]; then
      echo "gpu_ab: build both first"
      exit 1
    fi
    cases=${AB_CASES:-"--dtype bf16 -K 4
--dtype bf16 -K 4 --silu --bias
--dtype bf16 -B 1 -T 65536 -C 2048 -K 4
--dtype f32 -K 4
--dtype bf16 -K 32
--dtype bf16 --decode"}
    while IFS= read -r args; do
      [ -z "$args" ] && continue
      echo "== $args"
      for round in 1 2; do
        for which in new base; do
          cli=$new_cli; [ $which = base ] && cli=$base_cli
          # shellcheck disable=SC2086  # args is a word list
          "$cli" bench --device cuda $args 2>&1 | grep -E "^(forward|backward|decode) +fast" | sed "s/^/$which$round /"
        done
      done
    done <<<"$cases"
    ;;
  ncu)
    regex=${2:?usage: gpu_ab.sh ncu KERNEL_REGEX}
    metrics=gpu__time_duration.sum,smsp__inst_executed.sum,dram__bytes_read.sum,dram__bytes_write.sum,\
dram__throughput.avg.pct_of_peak_sustained_elapsed,smsp__issue_active.avg.pct_of_peak_sustained_active,\
launch__grid_size,launch__block_size,launch__registers_per_thread,sm__warps_active.avg.pct_of_peak_sustained_active
    while IFS= read -r args; do
      [ -z "$args" ] && continue
      for which in new base; do
        cli=$new_cli; [ $which = base ] && cli=$base_cli
        echo "== $which: $args"
        # shellcheck disable=SC2086  # args is a word list
        timeout 120 ncu --clock-control none --metrics "$metrics" -k "regex:$regex" -s 3 -c 1 \
          "$cli" bench --device cuda $args --iters 5 --no-graph 2>&1 | grep -E "^ +(gpu__|smsp__|dram__|launch__|sm__)"
      done
    done <<<"${AB_CASES:---dtype bf16 -K 4}"
    ;;
  *)
    echo "usage: gpu_ab.sh build PATCH | run | ncu REGEX"
    exit 2
    ;;
esac
