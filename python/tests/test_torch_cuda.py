"""CUDA-only behaviour of the torch layer: work is queued on torch's current stream, no call
synchronises the host, calls can be captured in a CUDA graph, and tensors on a device other than
the current one work. Skipped without torch, a GPU or a CUDA build of shortconv."""
from __future__ import annotations

import time

import pytest

torch = pytest.importorskip("torch")
import _torch_reference as tref  # noqa: E402
import shortconv  # noqa: E402

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not (torch.cuda.is_available() and shortconv.built_with_cuda()),
                       reason="needs a GPU and a CUDA build of shortconv"),
]

SLEEP_CYCLES = 2_000_000_000  # torch.cuda._sleep: about a second of GPU time at ~2 GHz


def inputs(B=4, T=2048, C=1024, K=4, dtype=torch.bfloat16, seed=0):
    torch.manual_seed(seed)
    x = torch.randn(B, T, C, device="cuda", dtype=dtype)
    w = torch.randn(C, K, device="cuda", dtype=torch.float32)
    b = torch.randn(C, device="cuda", dtype=torch.float32)
    return x, w, b


def test_side_stream_is_used_for_forward_backward_and_update():
    x_src, w, b = inputs()
    K = w.shape[1]
    dy = torch.randn_like(x_src)
    xr = x_src.clone().requires_grad_()
    y_ref = shortconv.causal_conv1d(xr, w, b, "silu")
    (dx_ref,) = torch.autograd.grad(y_ref, xr, dy)
    state_ref = torch.zeros(x_src.shape[0], K - 1, x_src.shape[2], device="cuda", dtype=x_src.dtype)
    u_ref = shortconv.causal_conv1d_update(x_src[:, 0], state_ref, w, b, "silu")
    torch.cuda.synchronize()

    x = torch.zeros_like(x_src)
    state = torch.zeros_like(state_ref)
    side = torch.cuda.Stream()  # non-blocking: no implicit ordering with the default stream
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(SLEEP_CYCLES // 4)
        x.copy_(x_src)  # x is only ready in the side stream's order
        xg = x.requires_grad_()
        y = shortconv.causal_conv1d(xg, w, b, "silu")
        (dx,) = torch.autograd.grad(y, xg, dy)
        u = shortconv.causal_conv1d_update(x.detach()[:, 0], state, w, b, "silu")
    torch.cuda.current_stream().wait_stream(side)
    # Had any op run on another stream, it would have read x before the copy (zeros).
    assert torch.equal(y, y_ref)
    assert torch.equal(dx, dx_ref)
    assert torch.equal(u, u_ref) and torch.equal(state, state_ref)


def test_calls_do_not_synchronize_the_host():
    x, w, b = inputs()
    w.requires_grad_()
    b.requires_grad_()
    B, T, C = x.shape
    K = w.shape[1]
    h0 = torch.randn(B, K - 1, C, device="cuda", dtype=x.dtype, requires_grad=True)
    xg = x.clone().requires_grad_()
    pool = torch.zeros(8, K - 1, C, device="cuda", dtype=x.dtype)
    idx = torch.tensor([3, -1, 0, 7], dtype=torch.int32, device="cuda")

    def work():
        y, fin = shortconv.causal_conv1d(xg, w, b, "silu", h0, output_final_state=True)
        grads = torch.autograd.grad((y.float().sum() + fin.float().sum()), (xg, w, b, h0))
        u = shortconv.causal_conv1d_update(x[:, :1], pool, w, b, "silu", idx)
        return grads, u

    work()  # warm-up: module loading, allocator pools
    torch.cuda.synchronize()
    torch.cuda._sleep(SLEEP_CYCLES)  # the GPU is busy for about a second
    start = time.perf_counter()
    work()
    host = time.perf_counter() - start
    torch.cuda.synchronize()
    assert host < 0.25, f"the calls took {host:.3f} s on the host: something waited for the GPU"


def test_cuda_graph_capture_and_replay():
    x, w, b = inputs(B=2, T=512, C=256)
    K, C = w.shape[1], x.shape[2]
    state = torch.randn(4, K - 1, C, device="cuda", dtype=x.dtype)
    idx = torch.tensor([2, 0], dtype=torch.int64, device="cuda")
    dy = torch.randn_like(x)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, as torch recommends
        for _ in range(2):
            shortconv.causal_conv1d(x, w, b, "silu")
            torch.ops.shortconv.causal_conv1d_bwd(x, w, b, dy, None, None, None, "silu", True, True, True, False)
            shortconv.causal_conv1d_update(x[:, 0], state.clone(), w, b, "silu", idx)
    torch.cuda.current_stream().wait_stream(side)

    graph = torch.cuda.CUDAGraph()
    state_g = state.clone()
    with torch.cuda.graph(graph):
        y = shortconv.causal_conv1d(x, w, b, "silu")
        dx, dw, db, _ = torch.ops.shortconv.causal_conv1d_bwd(x, w, b, dy, None, None, None, "silu", True, True,
                                                              True, False)
        u = shortconv.causal_conv1d_update(x[:, 0], state_g, w, b, "silu", idx)
    new_x = torch.randn_like(x)
    x.copy_(new_x)
    state_g.copy_(state)
    graph.replay()
    torch.cuda.synchronize()
    state_e = state.clone()
    assert torch.equal(y, shortconv.causal_conv1d(new_x, w, b, "silu"))
    e = torch.ops.shortconv.causal_conv1d_bwd(new_x, w, b, dy, None, None, None, "silu", True, True, True, False)
    assert torch.equal(dx, e[0]) and torch.equal(dw, e[1]) and torch.equal(db, e[2])
    assert torch.equal(u, shortconv.causal_conv1d_update(new_x[:, 0], state_e, w, b, "silu", idx))
    assert torch.equal(state_g, state_e)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_tensors_on_a_non_current_device():
    with torch.cuda.device(0):
        x = torch.randn(2, 64, 32, device="cuda:1")
        w = torch.randn(32, 4, device="cuda:1")
        y = shortconv.causal_conv1d(x, w, activation="silu")
        assert y.device == x.device
        ref = tref.forward(x.double().cpu(), w.double().cpu(), None, "silu")[0]
        assert tref.rel_err(y.cpu(), ref) < 2e-6


def test_large_shapes_bf16_against_float64():
    # A prefill shape in bf16 with f32 weights, forward and backward, against F.conv1d in float64.
    x, w, b = inputs(B=2, T=4096, C=2048)
    xg = x.clone().requires_grad_()
    wg, bg = w.clone().requires_grad_(), b.clone().requires_grad_()
    y = shortconv.causal_conv1d(xg, wg, bg, "silu")
    gy = torch.randn_like(y)
    g = torch.autograd.grad(y, (xg, wg, bg), gy)
    x64, w64, b64 = (t.detach().double().requires_grad_() for t in (x, w, b))
    y64 = tref.forward(x64, w64, b64, "silu")[0]
    g64 = torch.autograd.grad(y64, (x64, w64, b64), gy.double())
    assert tref.rel_err(y, y64) < 1e-2
    for a, r in zip(g, g64):
        assert tref.rel_err(a, r) < 1e-2
