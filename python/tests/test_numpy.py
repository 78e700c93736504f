"""shortconv on numpy arrays (CPU) against the float64 reference in _reference.py.

Covers the forward, the backward (through the low-level shortconv.ops.conv1d_backward), states,
packed sequences, the decode step, strided (non-contiguous) inputs and outputs, and the mapping
of library errors to Python exceptions.
"""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import _reference as ref
import shortconv
from shortconv import ops

# |a - r| <= ATOL + RTOL * |r|, per dtype of x (the reference runs on the rounded inputs).
TOL = {np.float32: (2e-5, 2e-5), np.float16: (4e-3, 4e-3)}


def assert_close(actual, expected, dtype, scale=1.0, what=""):
    atol, rtol = TOL[dtype]
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    err = np.abs(actual - expected) - (atol * scale + rtol * np.abs(expected))
    if err.size and err.max() > 0:
        idx = np.unravel_index(np.argmax(err), err.shape)
        pytest.fail(f"{what}: worst element {idx}: {actual[idx]} vs {expected[idx]} (dtype {dtype.__name__})")


def rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


SHAPES = [  # B, T, C, K
    (1, 1, 1, 1),
    (2, 7, 5, 3),
    (3, 5, 17, 4),
    (2, 3, 8, 6),   # T < K - 1
    (1, 33, 64, 4),
    (2, 16, 3, 1),  # K = 1: empty states
    (1, 40, 9, 33),
]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("with_bias", [False, True])
def test_forward(shape, dtype, activation, with_bias):
    B, T, C, K = shape
    rng = np.random.default_rng(hash(shape) % 2**32)
    x = rand(rng, (B, T, C), dtype)
    w = rand(rng, (C, K), np.float32)
    b = rand(rng, (C,), dtype) if with_bias else None
    y = shortconv.causal_conv1d(x, w, b, activation=activation)
    assert y.dtype == dtype and y.shape == x.shape
    expected, _ = ref.forward(x, w, b, activation)
    assert_close(y, expected, dtype, scale=np.sqrt(K), what="y")


@pytest.mark.parametrize("activation", [None, "silu", "swish", True, False])
def test_activation_spellings(activation):
    rng = np.random.default_rng(1)
    x, w = rand(rng, (2, 6, 4), np.float32), rand(rng, (4, 3), np.float32)
    name = "silu" if activation in ("silu", "swish", True) else None
    assert_close(shortconv.causal_conv1d(x, w, activation=activation), ref.forward(x, w, None, name)[0], np.float32)


def test_weight_in_x_dtype():
    rng = np.random.default_rng(2)
    x, w, b = rand(rng, (2, 9, 6), np.float16), rand(rng, (6, 4), np.float16), rand(rng, (6,), np.float16)
    assert_close(shortconv.causal_conv1d(x, w, b), ref.forward(x, w, b)[0], np.float16, scale=2)


@pytest.mark.parametrize("K", [1, 2, 4, 7])
def test_states_and_chunked_prefill(K):
    rng = np.random.default_rng(K)
    B, T, C = 3, 13, 10
    x, w, b = rand(rng, (B, T, C), np.float32), rand(rng, (C, K), np.float32), rand(rng, (C,), np.float32)
    h0 = rand(rng, (B, K - 1, C), np.float32)
    y, final = shortconv.causal_conv1d(x, w, b, "silu", initial_state=h0, output_final_state=True)
    y_ref, final_ref = ref.forward(x, w, b, "silu", h0)
    assert_close(y, y_ref, np.float32, what="y")
    assert final.shape == (B, K - 1, C)
    assert_close(final, final_ref, np.float32, what="final_state")

    # Chunks of 5, 1 and 7 tokens, the state handed over in place (final_state is initial_state).
    state = h0.copy()
    chunks = []
    for lo, hi in [(0, 5), (5, 6), (6, 13)]:
        chunks.append(ops.conv1d_forward(x[:, lo:hi], w, b, activation="silu", initial_state=state,
                                         final_state=state)[0])
    assert_close(np.concatenate(chunks, axis=1), y_ref, np.float32, what="chunked y")
    assert_close(state, final_ref, np.float32, what="handed-over state")


@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("rank", [2, 3])
def test_varlen(index_dtype, rank):
    rng = np.random.default_rng(7)
    C, K = 12, 4
    lengths = [5, 1, 2, 9, 3]  # two sequences shorter than K - 1
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(index_dtype)
    total = int(cu[-1])
    x = rand(rng, (total, C) if rank == 2 else (1, total, C), np.float32)
    w, b = rand(rng, (C, K), np.float32), rand(rng, (C,), np.float32)
    h0 = rand(rng, (len(lengths), K - 1, C), np.float32)
    y, final = shortconv.causal_conv1d(x, w, b, "silu", initial_state=h0, output_final_state=True, cu_seqlens=cu)
    y_ref, final_ref = ref.forward(x, w, b, "silu", h0, cu)
    assert_close(y, y_ref, np.float32, what="y")
    assert_close(final, final_ref, np.float32, what="final_state")
    # Packing equals running each sequence alone.
    for s, (lo, hi) in enumerate(zip(cu[:-1], cu[1:])):
        alone = shortconv.causal_conv1d(x.reshape(total, C)[None, lo:hi], w, b, "silu", initial_state=h0[s:s + 1])
        assert_close(y.reshape(total, C)[lo:hi], alone[0], np.float32, what=f"sequence {s}")


def test_varlen_bad_offsets_raise():
    x, w = np.ones((6, 4), np.float32), np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="cu_seqlens ends at 5"):
        shortconv.causal_conv1d(x, w, cu_seqlens=np.array([0, 2, 5], np.int32))
    with pytest.raises(ValueError, match="non-decreasing"):
        shortconv.causal_conv1d(x, w, cu_seqlens=np.array([0, 4, 2, 6], np.int64))


@pytest.mark.parametrize("shape", [(2, 7, 5, 3), (1, 1, 4, 4), (3, 20, 33, 4), (2, 9, 6, 1)])
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("states", [False, True])
def test_backward(shape, activation, states):
    B, T, C, K = shape
    rng = np.random.default_rng(11)
    x, w, b = rand(rng, (B, T, C), np.float32), rand(rng, (C, K), np.float32), rand(rng, (C,), np.float32)
    dy = rand(rng, (B, T, C), np.float32)
    h0 = rand(rng, (B, K - 1, C), np.float32) if states else None
    dfinal = rand(rng, (B, K - 1, C), np.float32) if states else None
    dx, dw, db, dh0 = ops.conv1d_backward(x, w, dy, b, activation=activation, initial_state=h0, d_final_state=dfinal)
    dx_r, dw_r, db_r, dh0_r = ref.backward(x, w, dy, b, activation, h0, dfinal)
    scale = np.sqrt(B * T)  # dw and db sum over B * T terms
    assert_close(dx, dx_r, np.float32, scale=np.sqrt(K), what="dx")
    assert_close(dw, dw_r, np.float32, scale=scale, what="dweight")
    assert_close(db, db_r, np.float32, scale=scale, what="dbias")
    if states:
        assert_close(dh0, dh0_r, np.float32, what="d_initial_state")
    else:
        assert dh0 is None


def test_backward_varlen_and_subsets():
    rng = np.random.default_rng(12)
    C, K = 7, 3
    cu = np.array([0, 4, 5, 11], np.int64)
    x, w = rand(rng, (11, C), np.float32), rand(rng, (C, K), np.float32)
    dy, h0 = rand(rng, (11, C), np.float32), rand(rng, (3, K - 1, C), np.float32)
    dx_r, dw_r, _, dh0_r = ref.backward(x, w, dy, None, "silu", h0, None, cu)
    dx, dw, db, dh0 = ops.conv1d_backward(x, w, dy, activation="silu", initial_state=h0, cu_seqlens=cu)
    assert db is None
    assert_close(dx, dx_r, np.float32, what="dx")
    assert_close(dw, dw_r, np.float32, scale=4, what="dweight")
    assert_close(dh0, dh0_r, np.float32, what="d_initial_state")
    # Only dweight, into a caller-provided array.
    out = np.full((C, K), 123.0, np.float32)
    dx2, dw2, _, _ = ops.conv1d_backward(x, w, dy, activation="silu", initial_state=h0, cu_seqlens=cu, dx=False,
                                         dweight=out, d_initial_state=False)
    assert dx2 is None and dw2 is out
    assert_close(out, dw_r, np.float32, scale=4, what="dweight (given)")


def test_backward_is_deterministic():
    rng = np.random.default_rng(13)
    x, w, dy = rand(rng, (4, 257, 40), np.float32), rand(rng, (40, 4), np.float32), rand(rng, (4, 257, 40), np.float32)
    first = ops.conv1d_backward(x, w, dy, dbias=True)
    second = ops.conv1d_backward(x, w, dy, dbias=True)
    for a, b in zip(first[:3], second[:3]):
        assert np.array_equal(a, b)


def test_reference_backward_matches_finite_differences():
    # The reference's own gradient formulas against central differences of its forward.
    rng = np.random.default_rng(14)
    B, T, C, K = 2, 5, 3, 3
    x, w, b = rng.standard_normal((B, T, C)), rng.standard_normal((C, K)), rng.standard_normal(C)
    h0, dy, dfin = rng.standard_normal((B, K - 1, C)), rng.standard_normal((B, T, C)), rng.standard_normal((B, K - 1, C))

    def loss(x_, w_, b_, h_):
        y, fin = ref.forward(x_, w_, b_, "silu", h_)
        return (y * dy).sum() + (fin * dfin).sum()

    grads = ref.backward(x, w, dy, b, "silu", h0, dfin)
    eps = 1e-6
    for arg, grad in zip(range(4), (grads[0], grads[1], grads[2], grads[3])):
        args = [x, w, b, h0]
        fd = np.zeros_like(args[arg])
        for i in np.ndindex(fd.shape):
            plus = [a.copy() for a in args]
            minus = [a.copy() for a in args]
            plus[arg][i] += eps
            minus[arg][i] -= eps
            fd[i] = (loss(*plus) - loss(*minus)) / (2 * eps)
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("index_dtype", [None, np.int32, np.int64])
@pytest.mark.parametrize("t_new", [1, 3])
def test_update(index_dtype, t_new):
    rng = np.random.default_rng(21)
    B, C, K, S = 4, 9, 4, 6
    x, w, b = rand(rng, (B, t_new, C), np.float32), rand(rng, (C, K), np.float32), rand(rng, (C,), np.float32)
    state = rand(rng, (S, K - 1, C), np.float32)
    idx = None if index_dtype is None else np.array([3, -1, 0, 5], index_dtype)
    y_ref, state_ref = ref.update(x, state, w, b, "silu", idx)
    y = shortconv.causal_conv1d_update(x, state, w, b, "silu", state_indices=idx)
    assert_close(y, y_ref, np.float32, what="y")
    assert_close(state, state_ref, np.float32, what="conv_state")
    if idx is not None:
        assert np.all(y[1] == 0)  # padding row


def test_update_one_token_rows_and_decode_equals_prefill():
    rng = np.random.default_rng(22)
    B, T, C, K = 2, 8, 6, 4
    x, w, b = rand(rng, (B, T, C), np.float32), rand(rng, (C, K), np.float32), rand(rng, (C,), np.float32)
    y_full, final_full = shortconv.causal_conv1d(x, w, b, "silu", output_final_state=True)
    state = np.zeros((B, K - 1, C), np.float32)
    steps = [shortconv.causal_conv1d_update(x[:, t], state, w, b, "silu") for t in range(T)]
    assert steps[0].shape == (B, C)
    assert_close(np.stack(steps, axis=1), y_full, np.float32, what="token-by-token y")
    assert_close(state, final_full, np.float32, what="state after decode")


def test_update_bad_index_raises_and_writes_nothing():
    rng = np.random.default_rng(23)
    x, w = rand(rng, (2, 1, 4), np.float32), rand(rng, (4, 3), np.float32)
    state = rand(rng, (3, 2, 4), np.float32)
    before = state.copy()
    y = np.full_like(x, 7.0)
    with pytest.raises(ValueError, match="state_indices"):
        ops.conv1d_update(x, state, w, y=y, state_indices=np.array([0, 3], np.int32))
    with pytest.raises(ValueError, match="twice"):
        ops.conv1d_update(x, state, w, y=y, state_indices=np.array([1, 1], np.int64))
    assert np.array_equal(state, before) and np.all(y == 7.0)


# ---- strided inputs and outputs: passed through, never copied ----


def test_strided_inputs_and_outputs():
    rng = np.random.default_rng(31)
    B, T, C, K = 4, 11, 8, 4
    proj = rand(rng, (B, T, 3 * C), np.float32)
    x = proj[::2, :, C:2 * C]                  # column slice of a wider projection, every other batch row
    w = np.asfortranarray(rand(rng, (C, K), np.float32))  # weight strides (1, C)
    b = rand(rng, (2 * C,), np.float32)[::2]   # bias stride 2
    h0_buf = rand(rng, (B // 2, K + 3, C), np.float32)
    h0 = h0_buf[:, 2:2 + K - 1]                # state slice: token stride C, batch stride (K+3) C
    out = np.zeros((B // 2, T, 2 * C), np.float32)
    y = out[:, :, C:]                          # output into a column slice
    fin_buf = np.zeros((B // 2, K - 1, 2 * C), np.float32)
    fin = fin_buf[:, :, :C]
    res = ops.conv1d_forward(x, w, b, y=y, activation="silu", initial_state=h0, final_state=fin)
    assert res[0] is y and res[1] is fin
    y_ref, fin_ref = ref.forward(x, w, b, "silu", h0)
    assert_close(y, y_ref, np.float32, what="strided y")
    assert_close(fin, fin_ref, np.float32, what="strided final_state")
    assert np.all(out[:, :, :C] == 0) and np.all(fin_buf[:, :, C:] == 0)  # nothing outside the views

    dy_buf = rand(rng, (B // 2, T, 2 * C), np.float32)
    dy = dy_buf[:, :, C:]
    dx_buf = np.zeros((B // 2, 2 * T, C), np.float32)
    dx = dx_buf[:, ::2]                         # token stride 2C
    _, dw, db, dh0 = ops.conv1d_backward(x, w, dy, b, activation="silu", initial_state=h0, dx=dx)
    dx_r, dw_r, db_r, dh0_r = ref.backward(x, w, dy, b, "silu", h0)
    assert_close(dx, dx_r, np.float32, what="strided dx")
    assert_close(dw, dw_r, np.float32, scale=5, what="dweight")
    assert np.all(dx_buf[:, 1::2] == 0)


def test_broadcast_input_is_fine_but_overlapping_output_raises():
    rng = np.random.default_rng(32)
    w = rand(rng, (5, 3), np.float32)
    row = rand(rng, (1, 1, 5), np.float32)
    x = np.broadcast_to(row, (2, 6, 5))         # batch and token strides 0
    assert_close(shortconv.causal_conv1d(x, w), ref.forward(x, w)[0], np.float32)
    y = np.lib.stride_tricks.as_strided(np.zeros(5, np.float32), (2, 6, 5), (0, 0, 4), writeable=True)
    with pytest.raises(ValueError, match="elements overlap"):
        ops.conv1d_forward(np.ascontiguousarray(x), w, y=y)


def test_channel_stride_not_one_raises_value_error():
    rng = np.random.default_rng(33)
    x = rand(rng, (2, 5, 6), np.float32)
    w = rand(rng, (6, 3), np.float32)
    with pytest.raises(ValueError, match="channel stride 1"):
        shortconv.causal_conv1d(np.asfortranarray(x), w)
    with pytest.raises(ValueError, match="channel stride 1"):
        shortconv.causal_conv1d(x[:, :, ::2], w[::2])
    state = np.zeros((2, 6, 2), np.float32).transpose(0, 2, 1)  # [2, 2, 6], channel stride 2
    with pytest.raises(ValueError, match="conv_state must have channel stride 1"):
        shortconv.causal_conv1d_update(x[:, 0], state, w)


# ---- error mapping ----


def test_errors_map_to_python_exceptions_and_write_nothing():
    rng = np.random.default_rng(41)
    x = rand(rng, (2, 5, 6), np.float32)
    w = rand(rng, (6, 3), np.float32)
    y = np.full_like(x, 3.0)
    cases = [
        (ValueError, "weight is \\[5, 3\\] but x has 6 channels", dict(x=x, weight=w[:5])),
        (ValueError, "y is \\[2, 5, 7\\]", dict(x=x, weight=w, y=np.zeros((2, 5, 7), np.float32))),
        (ValueError, "weight has dtype f16 but must be f32", dict(x=x, weight=w.astype(np.float16))),
        (ValueError, "must have 3 dimensions", dict(x=x[0, 0], weight=w)),
        (ValueError, "overlaps", dict(x=x, weight=w, y=x)),
        (ValueError, "int8", dict(x=x.astype(np.int8), weight=w)),
        (ValueError, "initial_state is", dict(x=x, weight=w, initial_state=np.zeros((2, 3, 6), np.float32))),
        (NotImplementedError, "float64", dict(x=x.astype(np.float64), weight=w)),
        (NotImplementedError, "float64", dict(x=x, weight=w.astype(np.float64))),
    ]
    for exc, match, kwargs in cases:
        kwargs.setdefault("y", y)
        with pytest.raises(exc, match=match):
            ops.conv1d_forward(kwargs.pop("x"), kwargs.pop("weight"), **kwargs)
        assert np.all(y == 3.0), match
    with pytest.raises(ValueError, match="activation"):
        shortconv.causal_conv1d(x, w, activation="gelu")
    with pytest.raises(TypeError):
        shortconv.causal_conv1d(x.tolist(), w)
    with pytest.raises(ValueError, match="read-only"):
        ro = np.zeros_like(x)
        ro.flags.writeable = False
        ops.conv1d_forward(x, w, y=ro)


def test_read_only_inputs_are_accepted():
    rng = np.random.default_rng(42)
    x, w = rand(rng, (2, 5, 6), np.float32), rand(rng, (6, 3), np.float32)
    x.flags.writeable = False
    w.flags.writeable = False
    assert_close(shortconv.causal_conv1d(x, w), ref.forward(x, w)[0], np.float32)


def test_import_does_not_import_torch():
    code = "import sys, shortconv, shortconv.ops; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_build_info():
    assert isinstance(shortconv.__version__, str) and shortconv.__version__.count(".") == 2
    assert isinstance(shortconv.built_with_cuda(), bool)
    assert shortconv.cuda_device_count() >= 0
