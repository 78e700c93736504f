#!/usr/bin/env bash
# Timings of several trial variants in one call on the GPU machine (gpu_ab.sh compares two).
#   bench/gpu_variants.sh build FULL NAME=PATCH...
#       base = the working tree with FULL reverse-applied (FULL = `git diff HEAD -- src` taken
#       before the call, carried in the tree); variant NAME = base with PATCH applied (each patch
#       against HEAD too). Builds every CLI in parallel under $VAR_ROOT/NAME/build.
#   bench/gpu_variants.sh run NAME...
#       times each case of $VAR_CASES (one `shortconv bench --device cuda` argument list a line,
#       after any NAME=VALUE environment settings for it)
#       with `new` (build-gpu, the working tree, built by gpu_run.sh), `base` and each NAME, in
#       turn, two rounds. Prints the "fast" rows, prefixed with the variant and the round.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=${VAR_ROOT:-/tmp/shortconv-variants}

build_one() {  # NAME PATCH-or-empty FULL
  local dir=$root/$1
  rm -rf "$dir" && mkdir -p "$dir"
  tar --exclude=./build-gpu --exclude=./gpu_out --exclude=./.git -cf - . | tar -xf - -C "$dir"
  (cd "$dir" && patch -R -p1 --quiet <"$3") || { echo "gpu_variants: $1: FULL does not reverse-apply"; return 1; }
  if [ -n "$2" ]; then (cd "$dir" && patch -p1 --quiet <"$2") || { echo "gpu_variants: $1: patch does not apply"; return 1; }; fi
  cmake -S "$dir" -B "$dir/build" -G Ninja -DSHORTCONV_CUDA=ON -DSHORTCONV_BUILD_TESTS=OFF -DSHORTCONV_BUILD_TOOLS=ON \
    -DCMAKE_BUILD_TYPE=Release >"$dir/configure.log" 2>&1 || { tail -20 "$dir/configure.log"; return 1; }
  cmake --build "$dir/build" --target shortconv_cli -j 16 >"$dir/build.log" 2>&1 || { grep -E "error" -A3 "$dir/build.log" | head -40; return 1; }
  echo "gpu_variants: $1 built"
}

case ${1:-} in
  build)
    full=$(realpath "${2:?usage: gpu_variants.sh build FULL NAME=PATCH...}")
    shift 2
    pids=()
    build_one base "" "$full" &
    pids+=($!)
    for spec in "$@"; do
      build_one "${spec%%=*}" "$(realpath "${spec#*=}")" "$full" &
      pids+=($!)
    done
    rc=0
    for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
    exit $rc
    ;;
  run)
    shift
    names=(new base "$@")
    cases=${VAR_CASES:-"--dtype bf16 -K 4
--dtype bf16 -K 16"}
    while IFS= read -r args; do
      [ -z "$args" ] && continue
      echo "== $args"
      args_env="" args_cli=""
      for word in $args; do
        if [ -z "$args_cli" ] && [[ $word == *=* ]]; then args_env+="$word "; else args_cli+="$word "; fi
      done
      for round in 1 2; do
        for name in "${names[@]}"; do
          cli=$root/$name/build/tools/shortconv
          [ "$name" = new ] && cli=build-gpu/tools/shortconv
          [ -x "$cli" ] || { echo "$name: no CLI"; continue; }
          # Leading NAME=VALUE words of a case are environment settings for that run.
          # shellcheck disable=SC2086  # args is a word list
          env $args_env "$cli" bench --device cuda $args_cli 2>&1 | grep -E "^(forward|backward|decode) +fast" | sed "s/^/$name$round /"
        done
      done
    done <<<"$cases"
    ;;
  *)
    echo "usage: gpu_variants.sh build FULL NAME=PATCH... | run NAME..."
    exit 2
    ;;
esac
