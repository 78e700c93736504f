#!/usr/bin/env bash
# Speed of the sequence-model features on the GPU machine (after bench/gpu_run.sh build):
# decode step, varlen prefill against an equal-length batch, and the fused bias + SiLU epilogue
# against the plain op. Prints the CLI tables; CSV rows go to $OUT/features.csv.
set -uo pipefail
cd "$(dirname "$0")/.."
cli=build-gpu/tools/shortconv
out=${OUT:-$PWD/gpu_out}
mkdir -p "$out"
csv="$out/features.csv"
rm -f "$csv"
run() { echo "\$ shortconv bench $*"; "$cli" bench --device cuda --csv "$csv" "$@" 2>&1 | grep -vE "^\s*$"; }
# Decode: B = 256 rows, C = 8192, K = 4, one token, bf16, with state indices.
run --decode --dtype bf16 -B 256 -T 1 -C 8192 -K 4
# Varlen prefill: 64 sequences of random lengths, 256K tokens in all, against 64 x 4096.
run --varlen 64 --dtype bf16 -B 64 -T 4096 -C 4096 -K 4
run --dtype bf16 -B 64 -T 4096 -C 4096 -K 4
# Fused bias + SiLU against the plain op.
run --dtype bf16 -B 4 -T 4096 -C 4096 -K 4
run --silu --bias --dtype bf16 -B 4 -T 4096 -C 4096 -K 4
