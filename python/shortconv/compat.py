"""Drop-in adapters with the signatures of other short-convolution libraries (torch tensors).

causal-conv1d (Dao-AILab), channel-first x [B, C, T]:
    causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None,
                     return_final_states=False, final_states_out=None, activation=None)
    causal_conv1d_update(x, conv_state, weight, bias=None, activation=None,
                         cache_seqlens=None, conv_state_indices=None)

flash-linear-attention (fla.modules.convolution), channel-last x [B, T, D]:
    causal_conv1d(x, weight, bias, residual, initial_state, output_final_state, activation,
                  cu_seqlens) -> (y, final_state or None)

All of them run shortconv's custom ops, so they are differentiable and torch.compile-able.
Activation: None, "silu", "swish" or True. An argument shortconv cannot honour (seq_idx,
cache_seqlens, a conv_state longer than width - 1, ...) raises NotImplementedError; nothing is
silently ignored. Layout conversions are zero-copy where the memory is already channel-last,
and each function's docstring names the copies it makes otherwise.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import Tensor

from ._common import activation_name
from ._torch import causal_conv1d_fwd, causal_conv1d_update_op

__all__ = ["causal_conv1d_fn", "causal_conv1d_update", "causal_conv1d"]


def _channel_last(t: Tensor) -> Tensor:
    """t itself when its last dimension has stride 1 (or size 1), else a contiguous copy."""
    return t if t.shape[-1] <= 1 or t.stride(-1) == 1 else t.contiguous()


def _activation(activation: Any) -> str:
    return activation_name(activation, NotImplementedError)


# ---- causal-conv1d (Dao-AILab) ----


def causal_conv1d_fn(
    x: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    seq_idx: Optional[Tensor] = None,
    initial_states: Optional[Tensor] = None,
    return_final_states: bool = False,
    final_states_out: Optional[Tensor] = None,
    activation: Any = None,
) -> Any:
    """causal_conv1d.causal_conv1d_fn on shortconv.

    Args:
        x: [B, C, T]. Zero-copy when x is channel-last in memory (x.stride(1) == 1, e.g.
            x = h.transpose(1, 2) of an [B, T, C] tensor h); otherwise x is copied once to
            channel-last layout.
        weight: [C, K]; bias: [C] or None.
        seq_idx: not supported (NotImplementedError); use shortconv.causal_conv1d with
            cu_seqlens for packed sequences.
        initial_states: [B, C, K-1]. Zero-copy when initial_states.stride(1) == 1, else copied.
        return_final_states: also return the final states [B, C, K-1].
        final_states_out: [B, C, K-1] tensor the final states are copied into (and returned).
        activation: None, "silu", "swish" or True.

    Returns:
        out [B, C, T] (a channel-last view: out.stride(1) == 1), or (out, final_states).
    """
    if seq_idx is not None:
        raise NotImplementedError(
            "shortconv does not support seq_idx; pack the sequences and pass cu_seqlens to shortconv.causal_conv1d")
    act = _activation(activation)
    if x.dim() != 3:
        raise ValueError(f"x must be [batch, dim, seqlen] but has shape {tuple(x.shape)}")
    x_btc = _channel_last(x.transpose(1, 2))
    h0 = _channel_last(initial_states.transpose(1, 2)) if initial_states is not None else None
    y, final_state = causal_conv1d_fwd(x_btc, weight, bias, h0, None, act, bool(return_final_states))
    out = y.transpose(1, 2)
    if not return_final_states:
        return out
    final_states = final_state.transpose(1, 2)  # [B, C, K-1]
    if final_states_out is not None:
        final_states_out.copy_(final_states)
        final_states = final_states_out
    return out, final_states


def causal_conv1d_update(
    x: Tensor,
    conv_state: Tensor,
    weight: Tensor,
    bias: Optional[Tensor] = None,
    activation: Any = None,
    cache_seqlens: Optional[Tensor] = None,
    conv_state_indices: Optional[Tensor] = None,
) -> Tensor:
    """causal_conv1d.causal_conv1d_update on shortconv: one decode step, conv_state updated in place.

    Args:
        x: [B, C] or [B, C, T_new]; zero-copy when x.stride(1) == 1 (always so for a
            contiguous [B, C]), else copied to channel-last layout.
        conv_state: [B, C, K-1], or [S, C, K-1] with conv_state_indices. Its length must be
            exactly K-1 (NotImplementedError otherwise). Zero-copy when it is channel-last in
            memory (conv_state.stride(1) == 1, e.g. torch.empty(S, K-1, C).transpose(1, 2));
            otherwise — the usual contiguous [S, C, K-1] — the whole state is copied to a
            channel-last buffer, updated and copied back, which costs two passes over it.
        cache_seqlens: not supported (NotImplementedError): shortconv has no circular buffer.
        conv_state_indices: [B] int32/int64 slot of each row; -1 marks a padding row, whose
            output is 0 and whose slot is untouched.

    Returns:
        out with x's shape.
    """
    if cache_seqlens is not None:
        raise NotImplementedError("shortconv does not support cache_seqlens (a circular conv_state buffer)")
    act = _activation(activation)
    one_token = x.dim() == 2
    x_btc = _channel_last(x.unsqueeze(1) if one_token else x.transpose(1, 2))  # [B, T_new, C]
    width = weight.shape[-1]
    if conv_state.dim() != 3 or conv_state.shape[-1] != width - 1:
        raise NotImplementedError(
            f"conv_state is {tuple(conv_state.shape)}, but shortconv keeps exactly width - 1 = {width - 1} "
            "inputs per slot ([batch, dim, width - 1])")
    state = conv_state.transpose(1, 2)  # [S, K-1, C]
    copy_back = state.shape[-1] > 1 and state.stride(-1) != 1
    if copy_back:
        state = state.contiguous()
    y = causal_conv1d_update_op(x_btc, state, weight, bias, conv_state_indices, act)
    if copy_back:
        conv_state.copy_(state.transpose(1, 2))
    return y.squeeze(1) if one_token else y.transpose(1, 2)


# ---- flash-linear-attention ----

# Keyword arguments of fla's causal_conv1d that select an implementation or carry precomputed
# metadata; they do not change the result, so they are accepted and unused.
_FLA_HINTS = ("backend", "cu_seqlens_cpu", "chunk_indices", "chunk_size")
# Keyword arguments that would change the result; only None is accepted.
_FLA_UNSUPPORTED = ("cp_context", "seq_idx")


def _fla_oldest_slot(x: Tensor, initial_state: Optional[Tensor], cu_seqlens: Optional[Tensor], width: int) -> Tensor:
    """[N, D]: token T-W of each sequence (slot 0 of fla's W-long final state), from x when
    T >= W, else from the initial state (slot T) or zero. No host synchronisation."""
    if cu_seqlens is None:
        seqlen = x.shape[1]
        if seqlen >= width:
            return x[:, seqlen - width, :]
        if initial_state is not None:
            return initial_state[:, :, seqlen]
        return x.new_zeros((x.shape[0], x.shape[-1]))
    tokens = x.reshape(-1, x.shape[-1])  # [total, D]
    ends = cu_seqlens[1:].long()
    lens = ends - cu_seqlens[:-1].long()
    from_x = tokens.index_select(0, (ends - width).clamp(min=0))
    if initial_state is not None:
        rows = torch.arange(initial_state.shape[0], device=initial_state.device)
        from_state = initial_state[rows, :, lens.clamp(max=width - 1)]
    else:
        from_state = torch.zeros_like(from_x)
    return torch.where((lens >= width).unsqueeze(1), from_x, from_state)


def causal_conv1d(
    x: Tensor,
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    residual: Optional[Tensor] = None,
    initial_state: Optional[Tensor] = None,
    output_final_state: bool = False,
    activation: Any = None,
    cu_seqlens: Optional[Tensor] = None,
    **kwargs: Any,
) -> Tuple[Tensor, Optional[Tensor]]:
    """fla.modules.convolution.causal_conv1d on shortconv: y = act(conv(x) + bias) + residual.

    Args:
        x: [B, T, D] (or [B, T, H, Dh], flattened to D = H * Dh); with cu_seqlens, [1, total, D].
            Zero-copy for any batch and token strides when the channel stride is 1; otherwise
            x is copied once to channel-last layout.
        weight: [D, W] (required: weight=None raises NotImplementedError); bias: [D] or None.
        residual: like x, added after the activation (a separate elementwise add, not fused).
        initial_state: [N, D, W], fla's layout: slot w holds token w - W, so slot 0 never
            reaches the output. Slots 1..W-1 are used: zero-copy when
            initial_state.stride(1) == 1, else copied to channel-last layout.
        output_final_state: also return the final state [N, D, W] (contiguous, like fla's):
            the last W inputs of each sequence (from the initial state where a sequence is
            shorter than W, zeros without one).
        activation: None, "silu", "swish" or True.
        cu_seqlens: [N+1] offsets of packed sequences.
        backend, cu_seqlens_cpu, chunk_indices, chunk_size: accepted and unused (they pick an
            implementation or carry precomputed metadata). cp_context and seq_idx must be None
            (NotImplementedError otherwise). Any other keyword raises TypeError.

    Returns:
        (y with x's shape, final_state or None).
    """
    for key, value in kwargs.items():
        if key in _FLA_UNSUPPORTED:
            if value is not None:
                raise NotImplementedError(f"shortconv does not support {key}")
        elif key not in _FLA_HINTS:
            raise TypeError(f"causal_conv1d() got an unexpected keyword argument {key!r}")
    if weight is None:
        raise NotImplementedError("shortconv needs a weight (weight=None, a plain shift, is not supported)")
    act = _activation(activation)
    shape = x.shape
    if x.dim() > 3 and x.shape[-1] != weight.shape[0]:
        x = x.flatten(2)  # [B, T, H, Dh] -> [B, T, D], as fla does (a view when the strides allow)
    x = _channel_last(x)
    width = weight.shape[1]
    h0 = None
    if initial_state is not None:
        h0 = _channel_last(initial_state[:, :, 1:].transpose(1, 2))  # [N, W-1, D]
    y, final = causal_conv1d_fwd(x, weight, bias, h0, cu_seqlens, act, bool(output_final_state))
    if residual is not None:
        y = y + residual.reshape(y.shape)
    y = y.reshape(shape)
    if not output_final_state:
        return y, None
    oldest = _fla_oldest_slot(x, initial_state, cu_seqlens, width)  # [N, D]
    final_state = torch.cat([oldest.unsqueeze(1), final], dim=1).transpose(1, 2).contiguous()  # [N, D, W]
    return y, final_state
