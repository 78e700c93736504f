#!/usr/bin/env bash
# One call on the GPU machine: build the CLI, then profile the kernels of the roofline shapes with
# Nsight Compute (ncu, full section set, clocks left alone) and pack the text reports.
#   bench/gpu_profile.sh [case...]      (default: every case below)
# A case is NAME: a kernel-name regex and the `shortconv bench` arguments that launch it.
# Writes $OUT/profile.tar.gz (details and per-instruction SASS pages per case) and prints a
# summary (duration, DRAM throughput, issue activity, occupancy, top stall reasons).
set -uo pipefail
out=${OUT:-$PWD/gpu_out}
mkdir -p "$out"
work=$(mktemp -d)
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader | tee "$work/gpu.txt"

if [ ! -x build-gpu/tools/shortconv ] || [ -z "${SKIP_BUILD:-}" ]; then
  cmake -S . -B build-gpu -G Ninja -DSHORTCONV_CUDA=ON -DSHORTCONV_BUILD_TESTS=OFF -DSHORTCONV_BUILD_TOOLS=ON \
    -DCMAKE_BUILD_TYPE=Release >"$work/configure.log" 2>&1 || { tail -30 "$work/configure.log"; exit 1; }
  cmake --build build-gpu -j 16 --target shortconv_cli >"$work/build.log" 2>&1 || { grep -E "error" -A3 "$work/build.log" | head -40; exit 1; }
fi
cli=build-gpu/tools/shortconv

declare -A kernel args
kernel[fwd_k4]=forward_tiled;       args[fwd_k4]="-K 4"
kernel[fwd_k16]=forward_tiled;      args[fwd_k16]="-K 16"
kernel[fwd_k8]=forward_tiled;       args[fwd_k8]="-K 8"
kernel[mma_k32]=forward_mma;        args[mma_k32]="-K 32"
kernel[bwd_k4]=backward_tiled;      args[bwd_k4]="-K 4"
kernel[bwd_k16]=backward_tiled;     args[bwd_k16]="-K 16 --no-tensor-cores"
kernel[bwd_k32]=backward_tiled;     args[bwd_k32]="-K 32 --no-tensor-cores"
kernel[bwdmma_k17]=backward_mma;    args[bwdmma_k17]="-K 17"
kernel[bwdmma_k32]=backward_mma;    args[bwdmma_k32]="-K 32"
kernel[bwdmma_k64]=backward_mma;    args[bwdmma_k64]="-K 64"
kernel[bwdmma_k32_varlen]=backward_mma; args[bwdmma_k32_varlen]="-K 32 --varlen 64 --state"
kernel[bwd_k4_silu]=backward_tiled; args[bwd_k4_silu]="-K 4 --silu"
kernel[fwd_k4_silu]=forward_tiled;  args[fwd_k4_silu]="-K 4 --silu --bias"
kernel[bwd_k8]=backward_tiled;      args[bwd_k8]="-K 8"
kernel[decode]=update_kernel;       args[decode]="--decode"
cases=${*:-fwd_k4 fwd_k16 mma_k32 bwd_k4 bwd_k16 bwd_k32 bwdmma_k32 bwd_k4_silu decode}

metrics="gpu__time_duration.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed,sm__inst_executed.avg.per_cycle_active,\
smsp__issue_active.avg.pct_of_peak_sustained_active,sm__warps_active.avg.pct_of_peak_sustained_active,\
smsp__warps_eligible.avg.per_cycle_active,launch__registers_per_thread,launch__occupancy_limit_registers,\
launch__occupancy_limit_shared_mem,smsp__inst_executed.sum"
for c in $cases; do
  [[ -v "kernel[$c]" ]] || { echo "== $c: unknown case (known: ${!kernel[*]})"; continue; }
  echo "== $c: ${kernel[$c]}  shortconv bench --dtype bf16 ${args[$c]}"
  # -s skips the warm-up launches; one profiled launch of the fast kernel.
  # shellcheck disable=SC2086  # args is a word list
  timeout 100 ncu --clock-control none --set full --import-source no -k "regex:${kernel[$c]}" -s 3 -c 1 -f -o "$work/$c" \
    "$cli" bench --dtype bf16 ${args[$c]} --iters 5 --no-graph >"$work/$c.run.log" 2>&1 || { echo "ncu failed:"; tail -5 "$work/$c.run.log"; continue; }
  ncu -i "$work/$c.ncu-rep" --page details >"$work/$c.details.txt" 2>&1
  ncu -i "$work/$c.ncu-rep" --page raw --csv --metrics "$metrics" >"$work/$c.metrics.csv" 2>&1
  ncu -i "$work/$c.ncu-rep" --page source --csv --print-source sass >"$work/$c.sass.csv" 2>&1 || true
  grep -E "^    (Duration|DRAM Throughput|Memory Throughput|Issue Slots Busy|Issued Warp Per Scheduler|Eligible Warps Per Scheduler|Achieved Occupancy|Registers Per Thread|Block Limit Registers|Block Limit Shared Mem|Executed Instructions  )" "$work/$c.details.txt"
  grep -E "Stall|stall" "$work/$c.details.txt" | head -6
  grep -E "pipeline is the|pipe is the|utilized pipeline" "$work/$c.details.txt" | head -2
done
tar -C "$work" -czf "$out/profile.tar.gz" --exclude='*.ncu-rep' .
rm -rf "$work"
ls -la "$out"
