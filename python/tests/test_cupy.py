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
