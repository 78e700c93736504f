"""
Low-level binding of the shortconv C++ library. Use the functions of the shortconv package instead.

Generated with `python -m nanobind.stubgen -m shortconv._C`, then edited: the binding takes any
DLPack or buffer-protocol array (torch, numpy, cupy, jax, ...), which stubgen spells as numpy's
NDArray; here it is `Array`. Outputs (y, final_state, dx, ...) must be writable.
"""

from typing import Any, Optional

Array = Any  # any DLPack / buffer-protocol array

__version__: str

def built_with_cuda() -> bool:
    """True when the library was built with the CUDA backend."""

def cuda_device_count() -> int:
    """Number of GPUs the library sees (0 without the CUDA backend or a driver)."""

def forward(x: Array, weight: Array, bias: Optional[Array], y: Array, activation: str, initial_state: Optional[Array], final_state: Optional[Array], cu_seqlens: Optional[Array], stream: int = 0) -> None:
    """
    conv1d_forward: y = act(causal_conv1d(x, weight) + bias), written into y.

    x [B, T, C] (or [total, C] / [1, total, C] with cu_seqlens [N+1]), weight [C, K], bias [C],
    initial_state / final_state [N, K-1, C] (final_state may be the same array as initial_state).
    activation is 'none' or 'silu'. stream is a cudaStream_t as an integer (0: the default
    stream), ignored for CPU arrays. Raises ValueError (bad input), NotImplementedError (no
    kernel) or RuntimeError (device failure); nothing is written when it raises.
    """

def backward(x: Array, weight: Array, bias: Optional[Array], dy: Array, activation: str, initial_state: Optional[Array], d_final_state: Optional[Array], cu_seqlens: Optional[Array], dx: Optional[Array], dweight: Optional[Array], dbias: Optional[Array], d_initial_state: Optional[Array], stream: int = 0) -> None:
    """
    conv1d_backward: writes each of dx, dweight, dbias and d_initial_state that is given.

    dweight and dbias are written (not accumulated) in the weight's dtype; bias is the forward's
    (needed to recompute the pre-activation for silu). Errors as in forward().
    """

def update(x: Array, conv_state: Array, weight: Array, bias: Optional[Array], y: Array, activation: str, state_indices: Optional[Array], stream: int = 0) -> None:
    """
    conv1d_update: decode step. x [B, T_new, C], conv_state [S, K-1, C] updated in place, y written.

    state_indices [B] (int32/int64) picks each row's slot; -1 marks a padding row (y = 0, no state
    touched). Errors as in forward().
    """
