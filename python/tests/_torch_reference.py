"""float64 references built on torch.nn.functional.conv1d(groups=C), differentiable, for the torch
tests. Independent of shortconv: sequences are extended to negative time by concatenation."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def conv_sequence(xe, w, b, activation):
    """xe [B, T+K-1, C] (already extended), w [C, K] -> act(z) [B, T, C]."""
    z = F.conv1d(xe.transpose(1, 2), w.unsqueeze(1), b, groups=w.shape[0]).transpose(1, 2)
    return F.silu(z) if activation == "silu" else z


def forward(x, w, b=None, activation=None, initial_state=None, cu_seqlens=None):
    """(y, final_state [N, K-1, C]) with the library's layout, computed in x's dtype."""
    width = w.shape[1]

    def extend(xs, h0):
        head = h0 if h0 is not None else xs.new_zeros((xs.shape[0], width - 1, xs.shape[2]))
        return torch.cat([head, xs], dim=1)

    if cu_seqlens is None:
        xe = extend(x, initial_state)
        return conv_sequence(xe, w, b, activation), xe[:, xe.shape[1] - (width - 1):]
    flat = x.reshape(-1, x.shape[-1])
    cu = [int(v) for v in cu_seqlens]
    ys, finals = [], []
    for s in range(len(cu) - 1):
        xe = extend(flat[None, cu[s]:cu[s + 1]], None if initial_state is None else initial_state[s:s + 1])
        ys.append(conv_sequence(xe, w, b, activation)[0])
        finals.append(xe[0, xe.shape[1] - (width - 1):])
    return torch.cat(ys).reshape(x.shape), torch.stack(finals)


def grads(fn, inputs, cotangents):
    """Gradients of sum(out * cot) over fn's outputs w.r.t. the inputs that require grad."""
    outs = fn(*inputs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    loss = sum((o.double() * c.double()).sum() for o, c in zip(outs, cotangents) if c is not None)
    wrt = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    return outs, torch.autograd.grad(loss, wrt)


def rel_err(actual, expected):
    """||a - r|| / max(||r||, tiny) in float64."""
    a, r = actual.double(), expected.double()
    return ((a - r).norm() / r.norm().clamp_min(1e-30)).item()
