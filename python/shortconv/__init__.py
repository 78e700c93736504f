"""shortconv: depthwise causal 1-D convolution (the "short convolution" of Mamba, GatedDeltaNet,
Hyena) for numpy, PyTorch and any DLPack array, on the CPU and on CUDA GPUs.

    y[b,t,c] = act(bias[c] + sum_k weight[c,k] * x[b, t+k-(K-1), c])     x before t = 0: the
                                                                         initial state, or 0

Layout is channel-last: x [B, T, C] with channel stride 1 (any batch and token strides, so x
may be a column slice of a wider projection), weight [C, K], bias [C], states [N, K-1, C].

Functions:
    causal_conv1d(x, weight, bias=None, activation=None, initial_state=None,
                  output_final_state=False, cu_seqlens=None)
    causal_conv1d_update(x, conv_state, weight, bias=None, activation=None, state_indices=None)

Torch tensors go through torch.library custom ops ("shortconv::causal_conv1d_fwd", ...) that
support autograd and torch.compile(fullgraph=True); other arrays (numpy, cupy, ...) call the
library directly. Submodules: shortconv.ops (low-level, caller-provided outputs, backward),
shortconv.nn (ShortConvolution module), shortconv.compat (drop-in adapters for causal-conv1d
and flash-linear-attention).

Errors: ValueError (bad input), NotImplementedError (no kernel for the combination),
RuntimeError (device failure). Nothing is written when a call raises.
"""
from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any, Optional

from . import _C
from ._common import check_array, is_torch_tensor

if TYPE_CHECKING:  # loaded lazily at run time (see __getattr__ below)
    from . import compat, nn, ops  # noqa: F401

__version__: str = _C.__version__

__all__ = [
    "causal_conv1d",
    "causal_conv1d_update",
    "built_with_cuda",
    "cuda_device_count",
    "__version__",
]


def built_with_cuda() -> bool:
    """True when this build of shortconv has the CUDA backend."""
    return _C.built_with_cuda()


def cuda_device_count() -> int:
    """Number of GPUs shortconv sees (0 without the CUDA backend or a driver)."""
    return _C.cuda_device_count()


def causal_conv1d(
    x: Any,
    weight: Any,
    bias: Optional[Any] = None,
    activation: Any = None,
    initial_state: Optional[Any] = None,
    output_final_state: bool = False,
    cu_seqlens: Optional[Any] = None,
) -> Any:
    """Causal depthwise convolution y = act(conv(x, weight) + bias), with optional states.

    Args:
        x: [B, T, C], or [total, C] (also [1, total, C]) of packed sequences with cu_seqlens.
            float32, bfloat16 or float16; channel stride 1 (any batch and token strides).
        weight: [C, K], float32 or x's dtype.
        bias: [C], float32 or x's dtype, or None.
        activation: None, or "silu" (also "swish" or True) applied after the bias.
        initial_state: [N, K-1, C] in x's dtype: the K-1 inputs before the first token of each
            of the N sequences (N = B, or len(cu_seqlens) - 1). None means zeros.
        output_final_state: also return the final state [N, K-1, C]: the last K-1 inputs of
            each sequence, to continue with causal_conv1d_update or another chunk.
        cu_seqlens: [N+1] int32/int64 offsets: sequence s is tokens cu_seqlens[s]:cu_seqlens[s+1]
            of x; nothing crosses a boundary. The library checks its values on the host, so
            with CUDA tensors the call waits for the stream to reach it.

    Returns:
        y (like x, contiguous), or (y, final_state) with output_final_state.

    With torch tensors the call is differentiable in x, weight, bias and initial_state (and in
    the final state's gradient) and traceable by torch.compile(fullgraph=True); GPU work runs on
    torch's current stream without host synchronisation. Other arrays run the library directly,
    outputs allocated like x (numpy, cupy; use shortconv.ops for other frameworks).
    """
    if is_torch_tensor(x):
        from ._torch import causal_conv1d as torch_causal_conv1d

        return torch_causal_conv1d(x, weight, bias, activation, initial_state, output_final_state, cu_seqlens)
    from .ops import conv1d_forward

    return conv1d_forward(
        x, weight, bias, activation=activation, initial_state=initial_state,
        final_state=True if output_final_state else None, cu_seqlens=cu_seqlens,
    )


def causal_conv1d_update(
    x: Any,
    conv_state: Any,
    weight: Any,
    bias: Optional[Any] = None,
    activation: Any = None,
    state_indices: Optional[Any] = None,
) -> Any:
    """Decode step: convolve new tokens with the cached state, and update the state in place.

    Args:
        x: [B, C] (one token a row) or [B, T_new, C] (several, e.g. speculative decoding).
        conv_state: [S, K-1, C] in x's dtype with channel stride 1, updated in place to hold the
            last K-1 inputs of each row's slot. Without state_indices, row b uses slot b (S >= B).
        weight: [C, K]; bias: [C] or None; activation: None or "silu" ("swish", True).
        state_indices: [B] int32/int64 slot of each row (continuous batching); -1 marks a
            padding row, whose y is 0 and whose slot is untouched. On CUDA an index outside
            [-1, S) cannot be reported without a host sync: that row's y is NaN and no state is
            touched. On the CPU it raises ValueError.

    Returns:
        y with x's shape.
    """
    if is_torch_tensor(x):
        from ._torch import causal_conv1d_update as torch_causal_conv1d_update

        return torch_causal_conv1d_update(x, conv_state, weight, bias, activation, state_indices)
    from .ops import conv1d_update

    check_array("x", x)
    if len(x.shape) == 2:
        y = conv1d_update(x[:, None, :], conv_state, weight, bias, activation=activation, state_indices=state_indices)
        return y[:, 0, :]
    return conv1d_update(x, conv_state, weight, bias, activation=activation, state_indices=state_indices)


def __getattr__(name: str) -> Any:
    # shortconv.nn / .compat import torch, shortconv.ops does not; load each on first use.
    if name in ("nn", "compat", "ops"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'shortconv' has no attribute {name!r}")


# Register the torch custom ops now when torch is already loaded, so that torch.compile can
# trace calls without importing anything mid-trace.
if "torch" in sys.modules:
    from . import _torch  # noqa: F401
