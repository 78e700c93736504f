"""Helpers shared by the framework-agnostic layer and the torch layer.

Nothing here imports an array framework at module level: numpy, torch and cupy are imported
only when an array of theirs is seen.
"""
from __future__ import annotations

import sys
from typing import Any, Optional, Sequence

_ACTIVATIONS = {None: "none", False: "none", "none": "none", True: "silu", "silu": "silu", "swish": "silu"}


def activation_name(activation: Any, error: type = ValueError) -> str:
    """Maps None / False / "none" to "none" and "silu" / "swish" / True to "silu".

    Anything else raises `error` (ValueError here; the drop-in adapters raise
    NotImplementedError, as causal-conv1d does).
    """
    try:
        return _ACTIVATIONS[activation]
    except (KeyError, TypeError):  # TypeError: an unhashable value
        raise error(f"activation must be None, 'silu', 'swish' or True, not {activation!r}") from None


def framework(a: Any) -> str:
    """The top-level module of an array's type: "numpy", "torch", "cupy", "jax", "jaxlib", ..."""
    return type(a).__module__.partition(".")[0]


def is_torch_tensor(a: Any) -> bool:
    # No import: if torch was never imported, `a` cannot be a torch tensor.
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(a, torch.Tensor)


def empty_like(like: Any, shape: Sequence[int], dtype: Any = None) -> Any:
    """An uninitialised, contiguous array of `shape` with `like`'s framework, device and dtype.

    Works for numpy, torch and cupy arrays. Other frameworks (jax arrays are immutable, so
    shortconv must not write into them) raise TypeError: pass the outputs yourself.
    """
    dtype = like.dtype if dtype is None else dtype
    fw = framework(like)
    shape = tuple(int(s) for s in shape)
    if fw == "numpy":
        import numpy as np

        return np.empty(shape, dtype)
    if fw == "torch":
        import torch

        return torch.empty(shape, dtype=dtype, device=like.device)
    if fw == "cupy":
        import cupy

        with like.device:
            return cupy.empty(shape, dtype)
    raise TypeError(
        f"shortconv cannot allocate outputs for a {type(like).__module__}.{type(like).__qualname__}: "
        "pass the output arrays (numpy, torch or cupy arrays on the same device) explicitly"
    )


def current_stream(a: Any) -> int:
    """The caller's current CUDA stream for `a` as an integer (0 for CPU arrays and unknown frameworks).

    torch: torch.cuda.current_stream(a.device); cupy: cupy.cuda.get_current_stream().
    """
    fw = framework(a)
    if fw == "torch":
        if a.device.type != "cuda":
            return 0
        import torch

        return torch.cuda.current_stream(a.device).cuda_stream
    if fw == "cupy":
        import cupy

        with a.device:
            return cupy.cuda.get_current_stream().ptr
    return 0


def check_array(name: str, a: Any) -> None:
    """TypeError unless `a` looks like an array (has shape and dtype)."""
    if not (hasattr(a, "shape") and hasattr(a, "dtype")):
        raise TypeError(f"{name} must be an array (numpy, torch, cupy, jax or any DLPack array), not {type(a).__name__}")


def check_writable(name: str, a: Any) -> None:
    """ValueError for an output array flagged read-only (numpy's writeable flag)."""
    flags = getattr(a, "flags", None)
    if flags is not None and getattr(flags, "writeable", True) is False:
        raise ValueError(f"{name} is read-only, but shortconv writes it in place")


def num_sequences(x: Any, cu_seqlens: Optional[Any]) -> int:
    """N: the batch size, or the number of packed sequences with cu_seqlens."""
    return int(cu_seqlens.shape[0]) - 1 if cu_seqlens is not None else int(x.shape[0])
