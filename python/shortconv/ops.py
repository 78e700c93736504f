"""Framework-agnostic low-level functions: any DLPack or buffer-protocol array, no autograd.

Every array is passed to the C++ library zero-copy, strides included: x may be a column slice
of a wider projection or have any batch and token strides, but its channel stride must be 1
(ValueError otherwise; nothing is copied behind your back).

Outputs are either arrays you pass (written in place) or allocated like the input with its own
framework: numpy (np.empty), torch (torch.empty) or cupy (cupy.empty). Other frameworks (jax:
its arrays are immutable) are accepted as inputs; pass the outputs for them.

GPU calls run asynchronously on the caller's current stream (torch.cuda.current_stream() for
torch tensors, cupy's current stream for cupy arrays, else the default stream); pass stream=
(a cudaStream_t as an integer) to choose another. CPU calls run synchronously.

Errors: ValueError for bad input (shape, dtype, device, stride, aliasing), NotImplementedError
for a combination without a kernel, RuntimeError for a device failure. Nothing is written when
a call raises.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple, Union

from . import _C
from ._common import activation_name, check_array, check_writable, current_stream, empty_like, num_sequences

__all__ = ["conv1d_forward", "conv1d_backward", "conv1d_update"]

Array = Any  # any DLPack / buffer-protocol array
OutArg = Union[Array, bool, None]  # an array to write, True to allocate, None/False to skip


def _stream(x: Array, stream: Optional[int]) -> int:
    return current_stream(x) if stream is None else int(stream)


def _state_shape(x: Array, weight: Array, cu_seqlens: Optional[Array]) -> Tuple[int, int, int]:
    return (num_sequences(x, cu_seqlens), int(weight.shape[-1]) - 1, int(x.shape[-1]))


def conv1d_forward(
    x: Array,
    weight: Array,
    bias: Optional[Array] = None,
    *,
    y: Optional[Array] = None,
    activation: Any = None,
    initial_state: Optional[Array] = None,
    final_state: OutArg = None,
    cu_seqlens: Optional[Array] = None,
    stream: Optional[int] = None,
) -> Any:
    """y = act(causal_conv1d(x, weight) + bias).

    Args:
        x: [B, T, C], or [total, C] / [1, total, C] with cu_seqlens. float32, bfloat16 or float16.
        weight: [C, K], float32 or x's dtype.  bias: [C], float32 or x's dtype.
        y: output like x (allocated when None).
        activation: None or "silu" ("swish" and True are accepted too).
        initial_state: [N, K-1, C] in x's dtype: the K-1 inputs before t = 0 of each sequence.
        final_state: [N, K-1, C] to write the last K-1 inputs of each sequence into (may be the
            initial_state array itself), True to allocate it, None to skip.
        cu_seqlens: [N+1] int32/int64 offsets of N packed sequences.
        stream: cudaStream_t as an integer; None = the caller's current stream.

    Returns:
        y, or (y, final_state) when final_state is requested.
    """
    check_array("x", x)
    check_array("weight", weight)
    if y is None:
        y = empty_like(x, x.shape)
    check_writable("y", y)
    fs = None
    if final_state is True:
        fs = empty_like(x, _state_shape(x, weight, cu_seqlens))
    elif final_state is not None and final_state is not False:
        fs = final_state
        check_writable("final_state", fs)
    _C.forward(x, weight, bias, y, activation_name(activation), initial_state, fs, cu_seqlens, _stream(x, stream))
    return y if fs is None else (y, fs)


def conv1d_backward(
    x: Array,
    weight: Array,
    dy: Array,
    bias: Optional[Array] = None,
    *,
    activation: Any = None,
    initial_state: Optional[Array] = None,
    d_final_state: Optional[Array] = None,
    cu_seqlens: Optional[Array] = None,
    dx: OutArg = True,
    dweight: OutArg = True,
    dbias: OutArg = None,
    d_initial_state: OutArg = None,
    stream: Optional[int] = None,
) -> Tuple[Any, Any, Any, Any]:
    """Gradients of conv1d_forward, in one pass over x and dy.

    x, weight, bias, activation, initial_state and cu_seqlens are the forward's arguments; dy is
    the gradient of y (like x) and d_final_state [N, K-1, C] that of the final state, if any.

    Each of dx, dweight, dbias, d_initial_state is an array to write, True to allocate, or
    False to skip; dbias=None means "when bias is given", d_initial_state=None "when
    initial_state is given". dweight and dbias are written (not accumulated) in the weight's
    dtype, deterministically.

    Returns:
        (dx, dweight, dbias, d_initial_state), None for each one skipped.
    """
    check_array("x", x)
    check_array("weight", weight)
    if dbias is None:
        dbias = bias is not None
    if d_initial_state is None:
        d_initial_state = initial_state is not None

    def out(name: str, arg: OutArg, like: Array, shape: Any) -> Optional[Array]:
        if arg is True:
            return empty_like(like, shape)
        if arg is None or arg is False:
            return None
        check_writable(name, arg)
        return arg

    dx_a = out("dx", dx, x, x.shape)
    dw_a = out("dweight", dweight, weight, weight.shape)
    db_a = out("dbias", dbias, weight, (int(weight.shape[0]),))  # dbias takes the weight's dtype
    di_a = out("d_initial_state", d_initial_state, x, _state_shape(x, weight, cu_seqlens))
    _C.backward(
        x, weight, bias, dy, activation_name(activation), initial_state, d_final_state, cu_seqlens,
        dx_a, dw_a, db_a, di_a, _stream(x, stream),
    )
    return dx_a, dw_a, db_a, di_a


def conv1d_update(
    x: Array,
    conv_state: Array,
    weight: Array,
    bias: Optional[Array] = None,
    *,
    y: Optional[Array] = None,
    activation: Any = None,
    state_indices: Optional[Array] = None,
    stream: Optional[int] = None,
) -> Any:
    """Decode step: y = conv over (state ++ x); conv_state is updated in place.

    Args:
        x: [B, T_new, C] (T_new >= 1 new tokens a row).
        conv_state: [S, K-1, C] in x's dtype, channel stride 1; row b uses slot b, or slot
            state_indices[b] when given.
        state_indices: [B] int32/int64; -1 marks a padding row (y = 0, no state touched).
        y: output like x (allocated when None).

    Returns:
        y.
    """
    check_array("x", x)
    if y is None:
        y = empty_like(x, x.shape)
    check_writable("y", y)
    check_writable("conv_state", conv_state)
    _C.update(x, conv_state, weight, bias, y, activation_name(activation), state_indices, _stream(x, stream))
    return y
