"""The PyTorch layer: torch.library custom ops with autograd and fake (meta) kernels.

Ops (namespace "shortconv"), usable from torch.compile(fullgraph=True) without graph breaks:

  causal_conv1d_fwd(x, weight, bias?, initial_state?, cu_seqlens?, activation, output_final_state)
      -> (y, final_state)           final_state is an empty tensor when not requested
  causal_conv1d_bwd(x, weight, bias?, dy, initial_state?, d_final_state?, cu_seqlens?, activation,
                    need_dx, need_dweight, need_dbias, need_dinitial_state)
      -> (dx, dweight, dbias, d_initial_state)   an empty tensor for each one not needed
  causal_conv1d_update(x, conv_state!, weight, bias?, state_indices?, activation) -> y

Tensors reach the C++ library zero-copy through DLPack, strides included; GPU work is queued
on torch's current stream of the tensor's device, with no host synchronisation (except for
cu_seqlens, whose values the library checks on the host: see causal_conv1d). Outputs are new
contiguous tensors from torch's allocator.
"""
from __future__ import annotations

import contextlib
from typing import Any, Optional, Tuple

import torch
from torch import Tensor

from . import _C
from ._common import activation_name

__all__ = ["causal_conv1d", "causal_conv1d_update"]

_get_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def _stream(t: Tensor) -> int:
    if t.device.type != "cuda":
        return 0
    index = t.device.index if t.device.index is not None else torch.cuda.current_device()
    if _get_raw_stream is not None:  # the raw handle without building a torch.cuda.Stream object
        return _get_raw_stream(index)
    return torch.cuda.current_stream(index).cuda_stream


def _device_guard(t: Tensor) -> Any:
    # Tensor.__dlpack__ refuses a CUDA tensor that is not on the current device.
    if t.device.type == "cuda" and t.device.index != torch.cuda.current_device():
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


def _plain(t: Optional[Tensor]) -> Optional[Tensor]:
    # Tensor.__dlpack__ refuses tensors that require grad; the op's own kernels never need it.
    return t.detach() if t is not None and t.requires_grad else t


def _channel_last(t: Tensor) -> Tensor:
    """t itself when its channel stride is 1, else a contiguous copy.

    Used only for incoming gradients, whose layout the caller does not control (y.sum()
    produces an expanded gradient with stride 0 everywhere, for example).
    """
    return t if t.shape[-1] <= 1 or t.stride(-1) == 1 else t.contiguous()


def _state_shape(x: Tensor, weight: Tensor, cu_seqlens: Optional[Tensor]) -> Tuple[int, int, int]:
    n = cu_seqlens.shape[0] - 1 if cu_seqlens is not None else x.shape[0]
    return (n, weight.shape[1] - 1, x.shape[-1])


def _empty(shape: Any, like: Tensor, dtype: Optional[torch.dtype] = None) -> Tensor:
    return torch.empty(shape, dtype=like.dtype if dtype is None else dtype, device=like.device)


def _nothing(like: Tensor) -> Tensor:
    return torch.empty((0,), dtype=like.dtype, device=like.device)


# ---- forward ----


@torch.library.custom_op("shortconv::causal_conv1d_fwd", mutates_args=())
def causal_conv1d_fwd(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    initial_state: Optional[Tensor],
    cu_seqlens: Optional[Tensor],
    activation: str,
    output_final_state: bool,
) -> Tuple[Tensor, Tensor]:
    y = _empty(x.shape, x)
    final_state = _empty(_state_shape(x, weight, cu_seqlens), x) if output_final_state else _nothing(x)
    with _device_guard(x):
        _C.forward(
            _plain(x), _plain(weight), _plain(bias), y, activation, _plain(initial_state),
            final_state if output_final_state else None, cu_seqlens, _stream(x),
        )
    return y, final_state


@causal_conv1d_fwd.register_fake
def _(x, weight, bias, initial_state, cu_seqlens, activation, output_final_state):
    y = _empty(x.shape, x)
    final_state = _empty(_state_shape(x, weight, cu_seqlens), x) if output_final_state else _nothing(x)
    return y, final_state


def _fwd_setup_context(ctx, inputs, output):
    x, weight, bias, initial_state, cu_seqlens, activation, output_final_state = inputs
    ctx.save_for_backward(x, weight, bias, initial_state, cu_seqlens)
    ctx.activation = activation
    ctx.output_final_state = output_final_state


def _fwd_backward(ctx, dy, d_final_state):
    x, weight, bias, initial_state, cu_seqlens = ctx.saved_tensors
    need_dx, need_dw, need_db, need_di = ctx.needs_input_grad[:4]
    need_db = need_db and bias is not None
    need_di = need_di and initial_state is not None
    if not (need_dx or need_dw or need_db or need_di):
        return None, None, None, None, None, None, None
    dy = _channel_last(dy)
    if not ctx.output_final_state or d_final_state is None:
        d_final_state = None
    else:
        d_final_state = _channel_last(d_final_state)
    dx, dw, db, di = causal_conv1d_bwd(
        x, weight, bias, dy, initial_state, d_final_state, cu_seqlens, ctx.activation,
        need_dx, need_dw, need_db, need_di,
    )
    if need_db and db.dtype != bias.dtype:  # the library writes dbias in the weight's dtype
        db = db.to(bias.dtype)
    return (
        dx if need_dx else None,
        dw if need_dw else None,
        db if need_db else None,
        di if need_di else None,
        None, None, None,
    )


causal_conv1d_fwd.register_autograd(_fwd_backward, setup_context=_fwd_setup_context)


# ---- backward ----


@torch.library.custom_op("shortconv::causal_conv1d_bwd", mutates_args=())
def causal_conv1d_bwd(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    dy: Tensor,
    initial_state: Optional[Tensor],
    d_final_state: Optional[Tensor],
    cu_seqlens: Optional[Tensor],
    activation: str,
    need_dx: bool,
    need_dweight: bool,
    need_dbias: bool,
    need_dinitial_state: bool,
) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    dx = _empty(x.shape, x) if need_dx else _nothing(x)
    dw = _empty(weight.shape, weight) if need_dweight else _nothing(weight)
    db = _empty(weight.shape[:1], weight) if need_dbias else _nothing(weight)
    di = _empty(_state_shape(x, weight, cu_seqlens), x) if need_dinitial_state else _nothing(x)
    with _device_guard(x):
        _C.backward(
            _plain(x), _plain(weight), _plain(bias), _plain(dy), activation, _plain(initial_state),
            _plain(d_final_state), cu_seqlens,
            dx if need_dx else None, dw if need_dweight else None, db if need_dbias else None,
            di if need_dinitial_state else None, _stream(x),
        )
    return dx, dw, db, di


@causal_conv1d_bwd.register_fake
def _(x, weight, bias, dy, initial_state, d_final_state, cu_seqlens, activation, need_dx, need_dweight, need_dbias,
      need_dinitial_state):
    dx = _empty(x.shape, x) if need_dx else _nothing(x)
    dw = _empty(weight.shape, weight) if need_dweight else _nothing(weight)
    db = _empty(weight.shape[:1], weight) if need_dbias else _nothing(weight)
    di = _empty(_state_shape(x, weight, cu_seqlens), x) if need_dinitial_state else _nothing(x)
    return dx, dw, db, di


# ---- decode step ----


@torch.library.custom_op("shortconv::causal_conv1d_update", mutates_args=("conv_state",))
def causal_conv1d_update_op(
    x: Tensor,
    conv_state: Tensor,
    weight: Tensor,
    bias: Optional[Tensor],
    state_indices: Optional[Tensor],
    activation: str,
) -> Tensor:
    y = _empty(x.shape, x)
    with _device_guard(x):
        _C.update(_plain(x), conv_state, _plain(weight), _plain(bias), y, activation, state_indices, _stream(x))
    return y


@causal_conv1d_update_op.register_fake
def _(x, conv_state, weight, bias, state_indices, activation):
    return _empty(x.shape, x)


# ---- public functions ----


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    activation: Any = None,
    initial_state: Optional[Tensor] = None,
    output_final_state: bool = False,
    cu_seqlens: Optional[Tensor] = None,
) -> Any:
    """Differentiable y = act(causal_conv1d(x, weight) + bias) on torch tensors (see shortconv.causal_conv1d)."""
    act = activation_name(activation)
    y, final_state = causal_conv1d_fwd(x, weight, bias, initial_state, cu_seqlens, act, bool(output_final_state))
    return (y, final_state) if output_final_state else y


def causal_conv1d_update(
    x: Tensor,
    conv_state: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    activation: Any = None,
    state_indices: Optional[Tensor] = None,
) -> Tensor:
    """Decode step on torch tensors (see shortconv.causal_conv1d_update); conv_state is updated in place."""
    act = activation_name(activation)
    if x.dim() == 2:
        return causal_conv1d_update_op(x.unsqueeze(1), conv_state, weight, bias, state_indices, act).squeeze(1)
    return causal_conv1d_update_op(x, conv_state, weight, bias, state_indices, act)
