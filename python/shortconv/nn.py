"""torch.nn modules built on shortconv's custom ops."""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ._common import activation_name
from ._torch import causal_conv1d, causal_conv1d_update

__all__ = ["ShortConvolution"]


class ShortConvolution(nn.Module):
    """Depthwise causal convolution layer over channel-last x [B, T, C]:

        y = act(causal_conv1d(x, weight) + bias)

    Holds weight [C, K] (and bias [C]), initialised like nn.Conv1d(C, C, K, groups=C). Loads
    state dicts that store the weight as [C, K] or in nn.Conv1d's depthwise layout [C, 1, K]
    (the layout of flash-linear-attention's and Mamba's conv layers); it saves [C, K].

    Args:
        channels: C.
        width: K, the kernel size (any K >= 1).
        bias: whether to add a learnable bias.
        activation: None or "silu" ("swish" and True are accepted too).
    """

    def __init__(
        self,
        channels: int,
        width: int,
        bias: bool = True,
        activation: Any = None,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        if channels < 1 or width < 1:
            raise ValueError(f"channels and width must be positive, got {channels} and {width}")
        self.channels = channels
        self.width = width
        self.activation = activation_name(activation)
        self.weight = nn.Parameter(torch.empty((channels, width), device=device, dtype=dtype))
        if bias:
            self.bias = nn.Parameter(torch.empty((channels,), device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Conv1d(C, C, K, groups=C)'s initialisation: its fan-in is 1 * K, as here for [C, K].
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.width)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(
        self,
        x: Tensor,
        initial_state: Optional[Tensor] = None,
        output_final_state: bool = False,
        cu_seqlens: Optional[Tensor] = None,
    ) -> Any:
        """x [B, T, C] (or [total, C] with cu_seqlens) -> y, or (y, final_state [N, K-1, C])."""
        return causal_conv1d(x, self.weight, self.bias, self.activation, initial_state, output_final_state, cu_seqlens)

    def step(self, x: Tensor, conv_state: Tensor, state_indices: Optional[Tensor] = None) -> Tensor:
        """Decode: x [B, C] or [B, T_new, C]; conv_state [S, K-1, C] is updated in place."""
        return causal_conv1d_update(x, conv_state, self.weight, self.bias, self.activation, state_indices)

    def init_state(self, batch_size: int, device: Optional[torch.device] = None,
                   dtype: Optional[torch.dtype] = None) -> Tensor:
        """A zero conv_state [batch_size, K-1, C] for step() (dtype: the weight's unless given)."""
        return torch.zeros(
            (batch_size, self.width - 1, self.channels),
            device=self.weight.device if device is None else device,
            dtype=self.weight.dtype if dtype is None else dtype,
        )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # nn.Module.load_state_dict hands each module a shallow copy of the caller's dict, so
        # replacing the entry here leaves the caller's dict alone.
        key = prefix + "weight"
        weight = state_dict.get(key)
        if isinstance(weight, Tensor) and weight.dim() == 3 and weight.shape[1] == 1:
            state_dict[key] = weight[:, 0, :]  # nn.Conv1d(groups=C) layout [C, 1, K] -> [C, K]
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, width={self.width}, bias={self.bias is not None}, "
                f"activation={None if self.activation == 'none' else self.activation!r}")
