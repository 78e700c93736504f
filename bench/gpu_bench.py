#!/usr/bin/env python3
"""shortconv against PyTorch's conv1d (cuDNN) on one GPU, side by side, against the copy floor.

For every shape it
  1. runs `shortconv bench` (the CLI) on CUDA, which times shortconv's fast and naive kernels by
     CUDA-graph replays and measures the copy bandwidth, appending rows to OUT/shortconv.csv;
  2. times the peer in this process: F.conv1d(x, w, b, padding=K-1, groups=C)[..., :T] with x in
     its preferred layout [B, C, T], forward alone, and backward alone as
     torch.autograd.grad(y, (x, w, b), dy) on a y made outside the timed region;
  3. (once) measures the copy bandwidth in torch, y.copy_(x) of 2 GiB, to cross-check the CLI.

Floor bytes ignore the weights: forward reads x and writes y (2 BTC elements), backward reads x
and dy and writes dx (3 BTC). Floor time = floor bytes / the copy bandwidth the CLI measured in
that shape's run; "% of floor" = floor time / measured time.

Peer timing mirrors the CLI: R calls captured into one CUDA graph (whole rotations over the same
number of input sets the CLI uses, so small shapes do not run from a warm L2), 2 untimed replays,
then the median over timed replays of replay time / R. Where capture fails the row falls back to
triton.testing.do_bench (median) or, without triton, to CUDA events around N calls; such rows are
marked in the table. Without torch the CLI part still runs and the cuDNN columns read n/a.

Output: a markdown table on stdout and in OUT/results.md, raw numbers in OUT/results.csv.
Exit status: 0, or 1 when any CLI run failed.

  python3 bench/gpu_bench.py --cli build-gpu/tools/shortconv --out gpu_out [--quick]
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    import torch
    import torch.nn.functional as F
except Exception as exc:  # noqa: BLE001 - any import failure means "no peer"
    torch = None
    F = None
    TORCH_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
else:
    TORCH_IMPORT_ERROR = ""

try:
    import triton.testing as triton_testing
except Exception:  # noqa: BLE001
    triton_testing = None

REPO = Path(__file__).resolve().parent.parent

SMALL_SHAPE = (1, 512, 1024, 4, "bf16")
SHAPES = [
    (4, 4096, 4096, 4, "bf16"),
    (4, 4096, 4096, 4, "f32"),
    (2, 4096, 8192, 4, "bf16"),
    (1, 65536, 2048, 4, "bf16"),
    (1, 16384, 4096, 4, "f32"),
    *[(4, 4096, 4096, k, "bf16") for k in (2, 3, 8, 16, 32, 64)],
    SMALL_SHAPE,
]
QUICK_SHAPES = [SHAPES[0], SMALL_SHAPE]
SMOKE_SHAPES = [(1, 256, 64, 4, "f32"), (2, 100, 48, 3, "bf16")]  # CPU smoke test of this script

ELEM_SIZE = {"f32": 4, "bf16": 2, "f16": 2}

# Same rule as tools/bench.cpp: a buffer set (x, y, dy, dx) under 50 MB is rotated over enough
# sets to span 100 MB, so neither side is timed from a warm L2.
ROTATE_BELOW_BYTES = 50e6
ROTATE_SPAN_BYTES = 100e6
MAX_SETS = 1024

GRAPH_CALLS = 20          # calls per captured graph, before rounding to whole rotations
GRAPH_BUDGET_MS = 20.0    # slow calls get fewer per graph, at least 1
GRAPH_MAX_REPLAY_MS = 200.0
GRAPH_WARMUP = 2          # untimed replays
REPLAYS = 20              # timed replays (median reported)
EAGER_WARMUP = 3
CLI_TIMEOUT_S = 300


def log(msg: str = "") -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------------------------------------
# Timing helpers for the peer.
# ---------------------------------------------------------------------------------------------


def num_sets(act_bytes: int) -> int:
    set_bytes = 4.0 * act_bytes
    if set_bytes >= ROTATE_BELOW_BYTES:
        return 1
    return int(min(max(math.ceil(ROTATE_SPAN_BYTES / set_bytes), 2), MAX_SETS))


@dataclass
class PeerTime:
    us: float
    method: str  # "graph", "do_bench", "events", "cpu"


def time_cuda_graph(call, sets: int, stream) -> PeerTime:
    """CUDA-graph timing, as the CLI does it: R calls per graph, median replay / R."""
    stream.wait_stream(torch.cuda.current_stream())  # inputs were made on the current stream
    with torch.cuda.stream(stream):
        for i in range(EAGER_WARMUP):
            call(i % sets)
        stream.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        est = []
        for i in range(3):
            start.record()
            call((EAGER_WARMUP + i) % sets)
            end.record()
            end.synchronize()
            est.append(start.elapsed_time(end))
    est_ms = statistics.median(est)
    calls = int(min(max(math.floor(GRAPH_BUDGET_MS / max(est_ms, 1e-4)), 1), GRAPH_CALLS))
    rotated = -(-calls // sets) * sets  # whole rotations, unless that makes a replay very long
    if sets > 1 and rotated * est_ms <= GRAPH_MAX_REPLAY_MS:
        calls = rotated
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        for j in range(calls):
            call(j % sets)
    times = []
    with torch.cuda.stream(stream):
        for _ in range(GRAPH_WARMUP):
            graph.replay()
        stream.synchronize()
        for _ in range(REPLAYS):
            start.record()
            graph.replay()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / calls)
    del graph
    return PeerTime(1e3 * statistics.median(times), "graph")


def time_cuda_eager(call, sets: int) -> PeerTime:
    """No graph: triton's do_bench (median) when importable, else events around N calls."""
    counter = [0]

    def step():
        call(counter[0] % sets)
        counter[0] += 1

    if triton_testing is not None:
        try:
            ms = triton_testing.do_bench(step, return_mode="median")
            return PeerTime(1e3 * float(ms), "do_bench")
        except TypeError:  # an old triton without return_mode
            pass
    for _ in range(EAGER_WARMUP):
        step()
    torch.cuda.synchronize()
    n = 10
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(10):
        start.record()
        for _ in range(n):
            step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / n)
    return PeerTime(1e3 * statistics.median(times), "events")


def time_cpu(call, sets: int) -> PeerTime:
    for i in range(2):
        call(i % sets)
    times = []
    for i in range(5):
        t0 = time.perf_counter()
        call(i % sets)
        times.append(time.perf_counter() - t0)
    return PeerTime(1e6 * statistics.median(times), "cpu")


def time_peer(call, sets: int, device: str, stream) -> PeerTime:
    if device == "cpu":
        return time_cpu(call, sets)
    try:
        return time_cuda_graph(call, sets, stream)
    except Exception as exc:  # noqa: BLE001 - capture is best effort; fall back to eager timing
        log(f"  peer: graph capture failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''});"
            " timing eagerly")
        torch.cuda.synchronize()
        return time_cuda_eager(call, sets)


# ---------------------------------------------------------------------------------------------
# The peer: PyTorch conv1d.
# ---------------------------------------------------------------------------------------------


def torch_dtype(name: str):
    return {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[name]


def bench_peer(shape, device: str) -> dict[str, PeerTime]:
    """Times forward and backward of PyTorch's depthwise causal conv1d; keys 'forward', 'backward'."""
    B, T, C, K, dt = shape
    dtype = torch_dtype(dt)
    sets = num_sets(B * T * C * ELEM_SIZE[dt])
    gen = torch.Generator(device=device).manual_seed(1234)
    xs = [torch.randn(B, C, T, device=device, dtype=dtype, generator=gen) for _ in range(sets)]  # [B, C, T]
    dys = [torch.randn(B, C, T, device=device, dtype=dtype, generator=gen) for _ in range(sets)]
    w = torch.randn(C, 1, K, device=device, dtype=dtype, generator=gen)  # [C, 1, K]
    b = torch.randn(C, device=device, dtype=dtype, generator=gen)        # [C]
    stream = None
    if device != "cpu":
        stream = torch.cuda.Stream()
        torch.cuda.synchronize()  # the inputs are used on `stream` below

    def fwd(i):
        return F.conv1d(xs[i], w, b, padding=K - 1, groups=C)[..., :T]

    out: dict[str, PeerTime] = {}
    with torch.no_grad():
        out["forward"] = time_peer(fwd, sets, device, stream)

    # Backward alone: forward (with grad) outside the timed region, on the stream the backward
    # will be captured on (autograd runs a backward op on its forward op's stream).
    xg = [x.detach().requires_grad_(True) for x in xs]
    wg = w.detach().requires_grad_(True)
    bg = b.detach().requires_grad_(True)
    ctx = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
    with ctx:
        ys = [F.conv1d(x, wg, bg, padding=K - 1, groups=C)[..., :T] for x in xg]
    if stream is not None:
        stream.synchronize()

    def bwd(i):
        return torch.autograd.grad(ys[i], (xg[i], wg, bg), dys[i], retain_graph=True)

    out["backward"] = time_peer(bwd, sets, device, stream)
    del ys, xg, xs, dys
    return out


def torch_copy_bandwidth(device: str) -> tuple[float, str]:
    """Decimal GB/s of y.copy_(x) counting bytes read + written; median of 7 after one warm-up."""
    if device == "cpu":
        nbytes = 256 << 20
        x = torch.randn(nbytes // 4)
        y = torch.empty_like(x)
        times = []
        for i in range(8):
            t0 = time.perf_counter()
            y.copy_(x)
            if i:
                times.append(time.perf_counter() - t0)
        return 2 * nbytes / statistics.median(times) / 1e9, "torch y.copy_(x), 256 MiB f32 on CPU, read+write"
    nbytes = 2 << 30
    x = torch.randn(nbytes // 4, device=device)
    y = torch.empty_like(x)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for i in range(8):
        start.record()
        y.copy_(x)
        end.record()
        end.synchronize()
        if i:
            times.append(start.elapsed_time(end))
    del x, y
    torch.cuda.empty_cache()
    return 2 * nbytes / (statistics.median(times) * 1e6), "torch y.copy_(x), 2 GiB f32, read+write"


# ---------------------------------------------------------------------------------------------
# The CLI.
# ---------------------------------------------------------------------------------------------


def run_cli(cli: str, device: str, shape, csv_path: Path, iters: int | None) -> dict | None:
    """Runs `shortconv bench` for one shape; returns {(op, variant): csv row} or None on failure."""
    B, T, C, K, dt = shape
    before = 0
    if csv_path.exists():
        with csv_path.open(newline="") as f:
            before = sum(1 for _ in csv.DictReader(f))
    cmd = [cli, "bench", "--device", device, "--dtype", dt, "--batch", str(B), "--seqlen", str(T),
           "--channels", str(C), "--width", str(K), "--bias", "--csv", str(csv_path)]  # cuDNN side has a bias too
    if iters is not None:
        cmd += ["--iters", str(iters)]
    log("$ " + " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log(f"  CLI failed to run: {exc}")
        return None
    if proc.stdout:
        log(proc.stdout.rstrip())
    if proc.stderr:
        print(proc.stderr.rstrip(), file=sys.stderr, flush=True)
    if proc.returncode != 0:
        log(f"  CLI exited with status {proc.returncode}")
        return None
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))[before:]
    result = {(r["op"], r["variant"]): r for r in rows}
    if ("forward", "fast") not in result or ("backward", "fast") not in result:
        log(f"  CLI wrote no fast rows to {csv_path}")
        return None
    return result


# ---------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------


def target_for(shape, op: str):
    """(description, predicate(us, pct)) of the performance target of a row, or None."""
    if tuple(shape) == SMALL_SHAPE:
        return "≤ 10 µs", lambda us, pct: us <= 10.0
    K = shape[3]
    if K <= 16:
        need = 90.0 if op == "forward" else 80.0
    elif K <= 32:
        need = 70.0 if op == "forward" else 50.0
    elif K <= 64:
        need = 45.0 if op == "forward" else 30.0
    else:
        return None
    return f"≥ {need:.0f}% floor", lambda us, pct: pct >= need


@dataclass
class Row:
    shape: tuple
    op: str
    floor_us: float | None = None
    copy_gbps: float | None = None
    fast_us: float | None = None
    naive_us: float | None = None
    peer: PeerTime | None = None
    target: str = ""
    met: bool | None = None
    notes: list = field(default_factory=list)


def fmt(v: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if v is None or not math.isfinite(v) else format(v, spec) + suffix


def git_commit() -> str:
    try:
        rev = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=20)
        if rev.returncode != 0 or not rev.stdout.strip():
            return "unknown"
        commit = rev.stdout.strip()
        st = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, timeout=20)
        if st.returncode == 0 and st.stdout.strip():
            commit += " (+ uncommitted changes)"
        return commit
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def render(rows: list[Row], header: list[str]) -> str:
    cols = ["shape (B,T,C,K)", "dtype", "op", "shortconv µs", "% of floor", "cuDNN µs", "cuDNN % of floor",
            "speed-up vs cuDNN", "naive µs", "speed-up vs naive", "target"]
    lines = list(header) + ["", "| " + " | ".join(cols) + " |", "|" + "|".join(["---"] * len(cols)) + "|"]
    marked = False
    for r in rows:
        B, T, C, K, dt = r.shape
        pct = 100.0 * r.floor_us / r.fast_us if r.floor_us and r.fast_us else None
        peer_us = r.peer.us if r.peer else None
        peer_pct = 100.0 * r.floor_us / peer_us if r.floor_us and peer_us else None
        peer_str = fmt(peer_us, ".1f")
        if r.peer and r.peer.method not in ("graph", "cpu"):
            peer_str += f" ({r.peer.method})"
            marked = True
        vs_peer = peer_us / r.fast_us if peer_us and r.fast_us else None
        vs_naive = r.naive_us / r.fast_us if r.naive_us and r.fast_us else None
        tgt = "" if r.met is None else f"{r.target} {'MET' if r.met else 'MISSED'}"
        cells = [f"({B},{T},{C},{K})", dt, r.op, fmt(r.fast_us, ".1f"), fmt(pct, ".1f", "%"), peer_str,
                 fmt(peer_pct, ".1f", "%"), fmt(vs_peer, ".2f", "x"), fmt(r.naive_us, ".1f"),
                 fmt(vs_naive, ".2f", "x"), tgt or "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    if marked:
        lines += ["", "cuDNN times marked (do_bench) or (events) could not be captured in a CUDA graph and include "
                      "host launch overhead."]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cli", required=True, help="path to the built `shortconv` binary")
    ap.add_argument("--out", required=True, help="directory for shortconv.csv, results.md and results.csv")
    ap.add_argument("--quick", action="store_true", help="only 2 shapes (a large bf16 one and the small one)")
    ap.add_argument("--iters", type=int, default=None, help="passed to the CLI (timed replays; default: its own)")
    ap.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # CPU, tiny shapes: tests this script
    args = ap.parse_args()

    device = "cpu" if args.smoke else "cuda"
    shapes = SMOKE_SHAPES if args.smoke else QUICK_SHAPES if args.quick else SHAPES
    iters = args.iters if args.iters is not None else (3 if args.smoke else None)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "shortconv.csv"
    if csv_path.exists():
        csv_path.unlink()  # a fresh file: rows of this run only, under the CLI's current header
    cli = str(Path(args.cli).resolve()) if Path(args.cli).exists() else args.cli
    t_start = time.monotonic()

    peer_ok = torch is not None and (device == "cpu" or torch.cuda.is_available())
    peer_why = ("torch not importable: " + TORCH_IMPORT_ERROR) if torch is None else (
        "" if peer_ok else "torch has no CUDA device")
    if not peer_ok:
        log(f"peer disabled ({peer_why}); cuDNN columns will read n/a")

    torch_copy, torch_copy_how = None, ""
    if peer_ok:
        if device == "cuda":
            torch.backends.cudnn.benchmark = True  # let cuDNN pick its fastest algorithm (during warm-up)
        try:
            torch_copy, torch_copy_how = torch_copy_bandwidth(device)
            log(f"torch copy bandwidth: {torch_copy:.1f} GB/s ({torch_copy_how})")
        except Exception as exc:  # noqa: BLE001
            log(f"torch copy bandwidth failed: {type(exc).__name__}: {exc}")

    rows: list[Row] = []
    cli_failures = 0
    gpu_from_cli = ""
    for shape in shapes:
        B, T, C, K, dt = shape
        log(f"\n=== B={B} T={T} C={C} K={K} {dt} ===")
        res = run_cli(cli, device, shape, csv_path, iters)
        if res is None:
            cli_failures += 1
        peer: dict[str, PeerTime] = {}
        if peer_ok:
            try:
                peer = bench_peer(shape, device)
                log("  peer: " + ", ".join(f"{op} {t.us:.1f} µs ({t.method})" for op, t in peer.items()))
            except Exception as exc:  # noqa: BLE001 - e.g. out of memory: this shape's peer reads n/a
                log(f"  peer failed: {type(exc).__name__}: {exc}")
            finally:
                if device == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.empty_cache()
        act_bytes = B * T * C * ELEM_SIZE[dt]
        for op, nbytes in (("forward", 2 * act_bytes), ("backward", 3 * act_bytes)):
            row = Row(shape=shape, op=op, peer=peer.get(op))
            if res is not None:
                fast, naive = res.get((op, "fast")), res.get((op, "naive"))
                gpu_from_cli = gpu_from_cli or fast["device"]
                row.copy_gbps = float(fast["copy_GBps"])
                row.floor_us = 1e3 * nbytes / (row.copy_gbps * 1e6)  # bytes / (GB/s) in µs
                row.fast_us = 1e3 * float(fast["ms"])
                row.naive_us = 1e3 * float(naive["ms"]) if naive else None
            tgt = target_for(shape, op)
            if tgt is not None and row.fast_us is not None:
                row.target = tgt[0]
                row.met = bool(tgt[1](row.fast_us, 100.0 * row.floor_us / row.fast_us))
            rows.append(row)

    # Header.
    if peer_ok and device == "cuda":
        gpu = torch.cuda.get_device_name()
    elif device == "cpu":
        gpu = "none (smoke test on the CPU)"
    else:
        gpu = gpu_from_cli or "unknown"
    cli_copies = sorted({r.copy_gbps for r in rows if r.copy_gbps})
    if cli_copies:
        cli_copy = (f"CLI {statistics.median(cli_copies):.1f} GB/s (median of {len(cli_copies)} runs, "
                    f"{cli_copies[0]:.1f}–{cli_copies[-1]:.1f})")
    else:
        cli_copy = "CLI n/a"
    peer_copy = f"torch {torch_copy:.1f} GB/s ({torch_copy_how})" if torch_copy else "torch n/a"
    versions = "n/a"
    if torch is not None:
        versions = f"torch {torch.__version__}"
        if device == "cuda" and peer_ok:
            versions += f", CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, cudnn.benchmark on"
    header = [
        "# shortconv vs PyTorch conv1d (cuDNN)" + (" — CPU smoke test" if args.smoke else ""),
        "",
        f"- GPU: {gpu}",
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- git commit: {git_commit()}",
        f"- copy bandwidth: {cli_copy} vs {peer_copy}",
        f"- peer: F.conv1d(x [B,C,T], w [C,1,K], b [C], padding=K-1, groups=C)[..., :T]; {versions}"
        + ("" if peer_ok else f"; disabled: {peer_why}"),
        "- timing: " + ("wall clock per call on the CPU (smoke test: numbers mean nothing)" if args.smoke else
                        "median per call of CUDA-graph replays (R calls per graph) on both sides")
        + "; backward excludes the forward; floor = (forward 2, backward 3)·B·T·C·elem bytes at the CLI's copy "
        "bandwidth",
    ]
    table = render(rows, header)

    judged = [r for r in rows if r.met is not None]
    missed = [r for r in judged if not r.met]
    summary = f"targets: {len(judged) - len(missed)}/{len(judged)} MET"
    if len(judged) < len(rows):
        summary += f" ({len(rows) - len(judged)} rows without a shortconv time or target)"
    if missed:
        summary += "; MISSED: " + ", ".join(
            f"({','.join(map(str, r.shape[:4]))}) {r.shape[4]} {r.op} [{r.target}]" for r in missed)
    table += "\n" + summary + "\n"

    log("\n" + table)
    (out_dir / "results.md").write_text(table, encoding="utf-8")
    with (out_dir / "results.csv").open("w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["B", "T", "C", "K", "dtype", "op", "floor_us", "copy_GBps", "shortconv_us", "naive_us",
                     "peer_us", "peer_method", "target", "met"])
        for r in rows:
            wr.writerow([*r.shape, r.op, fmt(r.floor_us, ".4g"), fmt(r.copy_gbps, ".5g"), fmt(r.fast_us, ".5g"),
                         fmt(r.naive_us, ".5g"), fmt(r.peer.us if r.peer else None, ".5g"),
                         r.peer.method if r.peer else "n/a", r.target or "n/a",
                         "n/a" if r.met is None else ("MET" if r.met else "MISSED")])
    log(f"wrote {out_dir / 'results.md'} and {out_dir / 'results.csv'} in {time.monotonic() - t_start:.0f} s")
    if cli_failures:
        log(f"{cli_failures} CLI run(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
