#!/usr/bin/env python3
"""shortconv from PyTorch against F.conv1d(groups=C), and the cost of the Python layer.

1. Kernel time, for each shape (B, T, C, K, dtype): forward and backward through autograd of
     shortconv.causal_conv1d(x, w, b)                x [B, T, C] (channel-last)
     F.conv1d(x, w[:, None], b, padding=K-1, groups=C)[..., :T]   x [B, C, T] (its own layout)
   Backward is torch.autograd.grad(y, (x, w, b), dy) on a y made outside the timed region.
   Weights are in x's dtype (F.conv1d needs that). On CUDA each call is timed with CUDA events
   after warm-up and the median is reported; on the CPU (--device cpu, a smoke test) the median
   of perf_counter intervals. GB/s counts the activation bytes only: forward reads x and writes
   y (2 BTC elements), backward reads x and dy and writes dx (3 BTC).

2. Python-layer overhead: host time per call (time.perf_counter over many calls, no sync
   inside the loop) of a tiny shape (B=1, T=16, C=64, K=4, f32) through
     - the torch op (shortconv.causal_conv1d), with and without autograd recording,
     - shortconv.ops.conv1d_forward (framework-agnostic layer, allocates y),
     - the binding shortconv._C.forward directly (y preallocated, stream precomputed),
     - F.conv1d for comparison.

Output: markdown tables on stdout (and in --out FILE when given).

  python3 bench/python_bench.py                 # on the GPU machine, after `pip install .`
  python3 bench/python_bench.py --device cpu --quick   # smoke test anywhere
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import shortconv
from shortconv import _C
from shortconv import ops as shortconv_ops

SHAPES = [
    (4, 4096, 4096, 4, "bf16"),
    (2, 4096, 8192, 4, "bf16"),
    (1, 65536, 2048, 4, "bf16"),
    (4, 4096, 4096, 4, "f32"),
]
QUICK_CPU_SHAPES = [(2, 512, 256, 4, "bf16"), (2, 512, 256, 4, "f32")]
TINY = (1, 16, 64, 4)
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def median_time_ms(fn, device, warmup, iters):
    """Median milliseconds of fn(): CUDA events on a GPU, perf_counter on the CPU."""
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        for s, e in zip(starts, ends):
            s.record()
            fn()
            e.record()
        torch.cuda.synchronize()
        return statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def bench_shape(shape, device, warmup, iters):
    B, T, C, K, dt = shape
    dtype = DTYPES[dt]
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(B, T, C, device=device, dtype=dtype, generator=gen).requires_grad_()
    w = torch.randn(C, K, device=device, dtype=dtype, generator=gen).requires_grad_()
    b = torch.randn(C, device=device, dtype=dtype, generator=gen).requires_grad_()
    dy = torch.randn(B, T, C, device=device, dtype=dtype, generator=gen)
    x_peer = x.detach().transpose(1, 2).contiguous().requires_grad_()  # [B, C, T]
    w_peer = w.detach().unsqueeze(1).requires_grad_()                  # [C, 1, K]
    b_peer = b.detach().clone().requires_grad_()
    dy_peer = dy.transpose(1, 2).contiguous()

    def ours_fwd():
        with torch.no_grad():
            return shortconv.causal_conv1d(x, w, b)

    def peer_fwd():
        with torch.no_grad():
            return F.conv1d(x_peer, w_peer, b_peer, padding=K - 1, groups=C)[..., :T]

    y = shortconv.causal_conv1d(x, w, b)
    y_peer = F.conv1d(x_peer, w_peer, b_peer, padding=K - 1, groups=C)[..., :T]

    def ours_bwd():
        return torch.autograd.grad(y, (x, w, b), dy, retain_graph=True)

    def peer_bwd():
        return torch.autograd.grad(y_peer, (x_peer, w_peer, b_peer), dy_peer, retain_graph=True)

    # The two agree (a sanity check, not a test): relative error of y.
    err = ((y.float() - y_peer.transpose(1, 2).float()).norm() / y_peer.float().norm()).item()
    row = {"shape": shape, "rel_err": err}
    for name, fn in (("ours_fwd", ours_fwd), ("peer_fwd", peer_fwd), ("ours_bwd", ours_bwd), ("peer_bwd", peer_bwd)):
        row[name] = median_time_ms(fn, device, warmup, iters)
    return row


def host_overhead_us(device, calls):
    B, T, C, K = TINY
    x = torch.randn(B, T, C, device=device)
    w = torch.randn(C, K, device=device)
    b = torch.randn(C, device=device)
    xg, wg, bg = (t.clone().requires_grad_() for t in (x, w, b))
    y = torch.empty_like(x)
    x_peer, w_peer = x.transpose(1, 2).contiguous(), w.unsqueeze(1).contiguous()
    stream = torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else 0

    def binding():
        _C.forward(x, w, b, y, "none", None, None, None, stream)

    def torch_op():
        shortconv.causal_conv1d(x, w, b)

    def torch_op_autograd():
        shortconv.causal_conv1d(xg, wg, bg)

    def agnostic():
        shortconv_ops.conv1d_forward(x, w, b)

    def peer():
        F.conv1d(x_peer, w_peer, b, padding=K - 1, groups=C)[..., :T]

    paths = [
        ("shortconv._C.forward (binding, y preallocated)", binding),
        ("shortconv.ops.conv1d_forward (allocates y)", agnostic),
        ("shortconv.causal_conv1d (torch op, no grad)", torch_op),
        ("shortconv.causal_conv1d (torch op, inputs require grad)", torch_op_autograd),
        ("F.conv1d(groups=C) (peer)", peer),
    ]
    results = []
    for name, fn in paths:
        for _ in range(200):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = float("inf")
        for _ in range(5):  # best of 5 runs of `calls` calls: the least disturbed host time
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            best = min(best, (time.perf_counter() - t0) / calls * 1e6)
            if device.type == "cuda":
                torch.cuda.synchronize()
        results.append((name, best))
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="fewer iterations (and small shapes on the CPU)")
    parser.add_argument("--out", help="also write the tables to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not shortconv.built_with_cuda():
        sys.exit("this shortconv was built without CUDA")
    warmup, iters = (3, 10) if args.quick else (10, 50)
    shapes = QUICK_CPU_SHAPES if device.type == "cpu" else SHAPES

    lines = []
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    lines.append(f"shortconv {shortconv.__version__} vs F.conv1d(groups=C), torch {torch.__version__}, {name}, "
                 f"{datetime.datetime.now().isoformat(timespec='seconds')}")
    lines.append("")
    lines.append("| B, T, C, K | dtype | fwd shortconv ms | fwd F.conv1d ms | fwd speed-up | fwd GB/s "
                 "| bwd shortconv ms | bwd F.conv1d ms | bwd speed-up | bwd GB/s | rel. err. y |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        r = bench_shape(shape, device, warmup, iters)
        B, T, C, K, dt = shape
        nbytes = B * T * C * torch.finfo(DTYPES[dt]).bits // 8  # one activation tensor
        lines.append(
            f"| {B}, {T}, {C}, {K} | {dt} | {r['ours_fwd']:.3f} | {r['peer_fwd']:.3f} | "
            f"{r['peer_fwd'] / r['ours_fwd']:.2f}x | {2 * nbytes / r['ours_fwd'] / 1e6:.0f} | "
            f"{r['ours_bwd']:.3f} | {r['peer_bwd']:.3f} | {r['peer_bwd'] / r['ours_bwd']:.2f}x | "
            f"{3 * nbytes / r['ours_bwd'] / 1e6:.0f} | {r['rel_err']:.1e} |")
        print(lines[-1], file=sys.stderr, flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    lines.append("")
    calls = 2000 if args.quick else 10000
    lines.append(f"Host time per call, tiny shape B, T, C, K = {', '.join(map(str, TINY))} f32 on {device.type} "
                 f"(best of 5 runs of {calls} calls):")
    lines.append("")
    lines.append("| path | µs per call |")
    lines.append("|---|---|")
    for path, us in host_overhead_us(device, calls):
        lines.append(f"| {path} | {us:.1f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
