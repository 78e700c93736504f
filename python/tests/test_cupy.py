"""cupy arrays on the GPU: zero-copy DLPack import, outputs allocated with cupy, work queued on
cupy's current stream. Skipped without cupy, a GPU or a CUDA build of shortconv."""
from __future__ import annotations

import numpy as np
import pytest

cp = pytest.importorskip("cupy")
import _reference as ref  # noqa: E402
import shortconv  # noqa: E402
from shortconv import ops  # noqa: E402


def _gpu_count():
    try:
        return cp.cuda.runtime.getDeviceCount()
    except Exception:  # noqa: BLE001 - no driver
        return 0


pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not shortconv.built_with_cuda() or _gpu_count() == 0, reason="needs a GPU and a CUDA build"),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_cupy_forward_backward_update_on_a_side_stream(dtype):
    rng = np.random.default_rng(0)
    B, T, C, K = 2, 300, 96, 4
    x_h = rng.standard_normal((B, T, C)).astype(dtype)
    w_h = rng.standard_normal((C, K)).astype(np.float32)
    b_h = rng.standard_normal(C).astype(np.float32)
    dy_h = rng.standard_normal((B, T, C)).astype(dtype)
    tol = 2e-5 if dtype == np.float32 else 3e-3
    with cp.cuda.Stream(non_blocking=True) as stream:
        x, w, b, dy = (cp.asarray(a) for a in (x_h, w_h, b_h, dy_h))
        y, fin = shortconv.causal_conv1d(x, w, b, "silu", output_final_state=True)
        dx, dw, db, _ = ops.conv1d_backward(x, w, dy, b, activation="silu")
        state = cp.zeros((B, K - 1, C), dtype)
        u = shortconv.causal_conv1d_update(x[:, 0], state, w, b, "silu")
        stream.synchronize()
    assert isinstance(y, cp.ndarray) and y.dtype == dtype
    y_r, fin_r = ref.forward(x_h, w_h, b_h, "silu")
    dx_r, dw_r, db_r, _ = ref.backward(x_h, w_h, dy_h, b_h, "silu")
    scale = np.sqrt(B * T)
    np.testing.assert_allclose(cp.asnumpy(y), y_r, rtol=tol, atol=tol * 2)
    np.testing.assert_allclose(cp.asnumpy(fin), fin_r, rtol=0, atol=0)
    np.testing.assert_allclose(cp.asnumpy(dx), dx_r, rtol=tol, atol=tol * 2)
    np.testing.assert_allclose(cp.asnumpy(dw), dw_r, rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(cp.asnumpy(db), db_r, rtol=tol, atol=tol * scale)
    np.testing.assert_allclose(cp.asnumpy(u), y_r[:, 0], rtol=tol, atol=tol * 2)


def test_cupy_and_numpy_mixed_devices_raise():
    x = cp.zeros((1, 4, 8), cp.float32)
    w = np.zeros((8, 3), np.float32)
    with pytest.raises(ValueError, match="is on"):
        ops.conv1d_forward(x, w)


def _mixed_call(case):
    """Moves one argument of `case` ("op:name") to the host; returns the call and a check that
    the host array is unchanged."""
    B, T, C, K = 2, 6, 8, 3
    g = {  # every argument on the GPU ...
        "x": cp.ones((B, T, C), cp.float32), "w": cp.ones((C, K), cp.float32), "b": cp.ones(C, cp.float32),
        "h0": cp.ones((B, K - 1, C), cp.float32), "y": cp.zeros((B, T, C), cp.float32),
        "dy": cp.ones((B, T, C), cp.float32), "dw": cp.zeros((C, K), cp.float32),
        "state": cp.ones((3, K - 1, C), cp.float32), "xu": cp.ones((B, 1, C), cp.float32),
        "yu": cp.zeros((B, 1, C), cp.float32), "idx": cp.asarray([2, 0], cp.int32),
        "xv": cp.ones((1, T, C), cp.float32), "yv": cp.zeros((1, T, C), cp.float32),
        "cu": cp.asarray([0, 2, T], cp.int32),
    }
    name = case.split(":")[1]
    g[name] = cp.asnumpy(g[name])  # ... but this one, with values a write would change
    if g[name].dtype == np.float32:
        g[name] += 0.5
    kept = g[name].copy()
    op = case.split(":")[0]
    calls = {
        "forward": lambda: ops.conv1d_forward(g["x"], g["w"], g["b"], y=g["y"], initial_state=g["h0"]),
        "varlen": lambda: ops.conv1d_forward(g["xv"], g["w"], y=g["yv"], cu_seqlens=g["cu"]),
        "backward": lambda: ops.conv1d_backward(g["x"], g["w"], g["dy"], dx=False, dweight=g["dw"]),
        "update": lambda: ops.conv1d_update(g["xu"], g["state"], g["w"], g["b"], y=g["yu"], state_indices=g["idx"]),
    }
    return calls[op], lambda: np.array_equal(g[name], kept)


@pytest.mark.parametrize("case", [
    "forward:x", "forward:w", "forward:b", "forward:h0", "forward:y", "varlen:cu", "varlen:xv",
    "backward:dy", "backward:dw", "update:state", "update:w", "update:idx", "update:xu", "update:yu",
])
def test_each_argument_on_the_cpu_alone_raises(case):
    call, untouched = _mixed_call(case)
    with pytest.raises(ValueError, match="is on cpu but x is on cuda|is on cuda:0 but x is on cpu"):
        call()
    assert untouched()
