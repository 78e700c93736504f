"""Independent float64 reference for the depthwise causal conv1d, in plain numpy.

Every function works sequence by sequence on xe = (initial state ++ x), the input extended to
negative time (zeros without a state), which makes the states, varlen batches and the decode
step the same few lines:

    z[t]    = bias + sum_k w[:, k] * xe[t + k]          (xe[t + k] is x at time t + k - (K-1))
    y       = z, or silu(z)
    final   = xe[-(K-1):]                                the last K-1 inputs
    dxe[j]  = sum_k w[:, k] * dz[j - k]  (+ d_final on the last K-1 positions)
    dx      = dxe[K-1:],  d_initial = dxe[:K-1],  dw[:, k] = sum_t xe[t + k] * dz[t],  db = sum_t dz[t]
"""
from __future__ import annotations

import numpy as np


def silu(z):
    return z / (1.0 + np.exp(-z))


def silu_grad(z):
    s = 1.0 / (1.0 + np.exp(-z))
    return s * (1.0 + z * (1.0 - s))


def _sequences(x, cu_seqlens):
    """[(start, stop)] token ranges and the x rows as [T_s, C] float64 arrays."""
    x = np.asarray(x, np.float64)
    if cu_seqlens is None:
        return [x[b] for b in range(x.shape[0])]
    flat = x.reshape(-1, x.shape[-1])
    cu = [int(v) for v in cu_seqlens]
    return [flat[cu[s]:cu[s + 1]] for s in range(len(cu) - 1)]


def _join(parts, like_shape):
    return np.concatenate(parts, axis=0).reshape(like_shape) if parts else np.zeros(like_shape)


def _extend(xs, h0, width, channels):
    head = np.zeros((width - 1, channels)) if h0 is None else np.asarray(h0, np.float64)
    return np.concatenate([head, xs], axis=0)


def forward(x, w, b=None, activation=None, initial_state=None, cu_seqlens=None):
    """Returns (y, final_state [N, K-1, C]) in float64."""
    w = np.asarray(w, np.float64)
    channels, width = w.shape
    bias = np.zeros(channels) if b is None else np.asarray(b, np.float64)
    ys, finals = [], []
    for n, xs in enumerate(_sequences(x, cu_seqlens)):
        xe = _extend(xs, None if initial_state is None else initial_state[n], width, channels)
        t_len = xs.shape[0]
        z = np.tile(bias, (t_len, 1))
        for k in range(width):
            z += w[:, k] * xe[k:k + t_len]
        ys.append(silu(z) if activation == "silu" else z)
        finals.append(xe[xe.shape[0] - (width - 1):])
    return _join(ys, np.shape(x)), np.stack(finals)


def backward(x, w, dy, b=None, activation=None, initial_state=None, d_final_state=None, cu_seqlens=None):
    """Returns (dx, dw, db, d_initial_state) in float64."""
    w = np.asarray(w, np.float64)
    channels, width = w.shape
    bias = np.zeros(channels) if b is None else np.asarray(b, np.float64)
    dys = _sequences(dy, cu_seqlens)
    dxs, dinit = [], []
    dw = np.zeros_like(w)
    db = np.zeros(channels)
    for n, xs in enumerate(_sequences(x, cu_seqlens)):
        xe = _extend(xs, None if initial_state is None else initial_state[n], width, channels)
        t_len = xs.shape[0]
        z = np.tile(bias, (t_len, 1))
        for k in range(width):
            z += w[:, k] * xe[k:k + t_len]
        dz = dys[n] * silu_grad(z) if activation == "silu" else dys[n]
        dxe = np.zeros_like(xe)
        for k in range(width):
            dxe[k:k + t_len] += w[:, k] * dz
            dw[:, k] += (xe[k:k + t_len] * dz).sum(axis=0)
        if d_final_state is not None and width > 1:
            dxe[xe.shape[0] - (width - 1):] += np.asarray(d_final_state[n], np.float64)
        db += dz.sum(axis=0)
        dxs.append(dxe[width - 1:])
        dinit.append(dxe[:width - 1])
    return _join(dxs, np.shape(x)), dw, db, np.stack(dinit)


def update(x, conv_state, w, b=None, activation=None, state_indices=None):
    """Decode step on copies: returns (y, new_conv_state) in float64. x [B, T_new, C]."""
    w = np.asarray(w, np.float64)
    channels, width = w.shape
    state = np.array(conv_state, np.float64)
    y = np.zeros(np.shape(x))
    for row in range(np.shape(x)[0]):
        slot = row if state_indices is None else int(state_indices[row])
        if slot == -1:
            continue  # padding row: y = 0, no state touched
        out, final = forward(np.asarray(x)[row:row + 1], w, b, activation, state[slot:slot + 1])
        y[row] = out[0]
        state[slot] = final[0]
    return y, state
