"""shortconv.compat adapters against the reference formulas of the libraries they stand in for
(written here with F.conv1d in float64). Skipped without torch."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import _torch_reference as tref  # noqa: E402
import shortconv  # noqa: E402
from shortconv import compat  # noqa: E402

HAS_CUDA = torch.cuda.is_available() and shortconv.built_with_cuda()
DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])
TOL = 2e-6


def double(t):
    return None if t is None else t.detach().double().requires_grad_(t.requires_grad)


# ---- causal-conv1d (Dao-AILab): x [B, C, T] ----


def dao_ref(x, weight, bias=None, initial_states=None, return_final_states=False, activation=None):
    """causal_conv1d_ref's formula: conv over (initial_states ++ x) along the last dimension."""
    seqlen, (dim, width) = x.shape[-1], weight.shape
    if initial_states is None:
        out = F.conv1d(x, weight.unsqueeze(1), bias, padding=width - 1, groups=dim)
        xe = F.pad(x, (width - 1, 0))
    else:
        xe = torch.cat([initial_states, x], dim=-1)
        out = F.conv1d(xe, weight.unsqueeze(1), bias, padding=0, groups=dim)
    out = out[..., :seqlen]
    out = out if activation is None else F.silu(out)
    return (out, xe[..., xe.shape[-1] - (width - 1):]) if return_final_states else out


def dao_update_ref(x, conv_state, weight, bias=None, activation=None):
    """causal_conv1d_update_ref's formula (no cache_seqlens); returns (out, new_state)."""
    squeeze = x.dim() == 2
    x = x.unsqueeze(-1) if squeeze else x
    seqlen, state_len = x.shape[-1], conv_state.shape[-1]
    xe = torch.cat([conv_state, x], dim=-1)
    out = F.conv1d(xe, weight.unsqueeze(1), bias, padding=0, groups=weight.shape[0])[..., -seqlen:]
    out = out if activation is None else F.silu(out)
    return (out.squeeze(-1) if squeeze else out), xe[..., xe.shape[-1] - state_len:]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("channel_last", [False, True])
@pytest.mark.parametrize("states", [False, True])
@pytest.mark.parametrize("activation", [None, "silu", "swish", True])
def test_causal_conv1d_fn(device, channel_last, states, activation):
    B, C, T, K = 2, 8, 11, 4
    torch.manual_seed(0)
    if channel_last:  # [B, C, T] view of [B, T, C] memory: zero-copy
        x = torch.randn(B, T, C, device=device).transpose(1, 2).requires_grad_()
    else:
        x = torch.randn(B, C, T, device=device, requires_grad=True)
    w = torch.randn(C, K, device=device, requires_grad=True)
    b = torch.randn(C, device=device, requires_grad=True)
    h0 = None
    if states:
        h0 = (torch.randn(B, K - 1, C, device=device).transpose(1, 2) if channel_last
              else torch.randn(B, C, K - 1, device=device)).requires_grad_()
    act = "silu" if activation in ("silu", "swish", True) else None
    res = compat.causal_conv1d_fn(x, w, b, initial_states=h0, return_final_states=states, activation=activation)
    out, fin = res if states else (res, None)
    assert out.shape == (B, C, T) and out.stride(1) == 1
    args64 = [double(t) for t in (x, w, b, h0)]
    ref = dao_ref(*args64, return_final_states=states, activation=act)
    ref_out, ref_fin = ref if states else (ref, None)
    assert tref.rel_err(out, ref_out) < TOL
    gy = torch.randn_like(out)
    loss, loss_ref = (out.double() * gy).sum(), (ref_out * gy).sum()
    if states:
        assert fin.shape == (B, C, K - 1)
        assert tref.rel_err(fin, ref_fin) < TOL
        gf = torch.randn_like(fin)
        loss, loss_ref = loss + (fin.double() * gf).sum(), loss_ref + (ref_fin * gf).sum()
    wrt = [t for t in (x, w, b, h0) if t is not None]
    wrt64 = [t for t in args64 if t is not None]
    for g, r in zip(torch.autograd.grad(loss, wrt), torch.autograd.grad(loss_ref, wrt64)):
        assert tref.rel_err(g, r) < TOL


@pytest.mark.parametrize("device", DEVICES)
def test_causal_conv1d_fn_final_states_out(device):
    B, C, T, K = 2, 6, 9, 3
    x, w = torch.randn(B, C, T, device=device), torch.randn(C, K, device=device)
    out_buf = torch.full((B, C, K - 1), 5.0, device=device)
    out, fin = compat.causal_conv1d_fn(x, w, return_final_states=True, final_states_out=out_buf)
    assert fin is out_buf
    assert torch.equal(out_buf, x[..., T - (K - 1):])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("x_form", ["BC", "BC_strided", "BCT", "BCT_channel_last"])
@pytest.mark.parametrize("state_form", ["contiguous", "channel_last"])
@pytest.mark.parametrize("indices", [False, True])
def test_causal_conv1d_update(device, x_form, state_form, indices):
    B, C, K, S, Tn = 3, 8, 4, 5, 2
    torch.manual_seed(1)
    if x_form == "BC":
        x = torch.randn(B, C, device=device)
    elif x_form == "BC_strided":  # a column of a [B, C, T] tensor: channel stride T, copied
        x = torch.randn(B, C, 5, device=device)[..., 2]
    elif x_form == "BCT":
        x = torch.randn(B, C, Tn, device=device)
    else:
        x = torch.randn(B, Tn, C, device=device).transpose(1, 2)
    slots = S if indices else B
    if state_form == "contiguous":
        state = torch.randn(slots, C, K - 1, device=device)
    else:
        state = torch.randn(slots, K - 1, C, device=device).transpose(1, 2)
    w, b = torch.randn(C, K, device=device), torch.randn(C, device=device)
    before = state.clone()
    idx = torch.tensor([4, -1, 0], dtype=torch.int32, device=device) if indices else None
    out = compat.causal_conv1d_update(x, state, w, b, "silu", conv_state_indices=idx)
    assert out.shape == x.shape
    rows = idx.tolist() if indices else list(range(B))
    for row, slot in enumerate(rows):
        if slot < 0:
            assert torch.all(out[row] == 0)
            continue
        ref_out, ref_state = dao_update_ref(x[row:row + 1].double(), before[slot:slot + 1].double(), w.double(),
                                            b.double(), "silu")
        assert tref.rel_err(out[row:row + 1], ref_out) < TOL
        assert torch.allclose(state[slot].double(), ref_state[0])
    if indices:
        for slot in (1, 2, 3):
            assert torch.equal(state[slot], before[slot])


def test_dao_unsupported_arguments_raise():
    x, w = torch.randn(2, 4, 5), torch.randn(4, 3)
    with pytest.raises(NotImplementedError, match="seq_idx"):
        compat.causal_conv1d_fn(x, w, seq_idx=torch.zeros(2, 5, dtype=torch.int32))
    with pytest.raises(NotImplementedError, match="activation"):
        compat.causal_conv1d_fn(x, w, activation="gelu")
    with pytest.raises(NotImplementedError, match="cache_seqlens"):
        compat.causal_conv1d_update(x[..., 0], torch.zeros(2, 4, 2), w, cache_seqlens=torch.zeros(2, dtype=torch.int32))
    with pytest.raises(NotImplementedError, match="width - 1"):
        compat.causal_conv1d_update(x[..., 0], torch.zeros(2, 4, 5), w)


# ---- flash-linear-attention: x [B, T, D], states [N, D, W] ----


def fla_ref(x, weight, bias=None, residual=None, initial_state=None, output_final_state=False, activation=None,
            cu_seqlens=None):
    """fla's semantics: the state holds the last W inputs (slot w = token w - W); y = act(z) + residual."""
    width = weight.shape[1]
    flat = x.reshape(-1, x.shape[-1])
    cu = [0, flat.shape[0]] if cu_seqlens is None else [int(v) for v in cu_seqlens]
    if cu_seqlens is None and x.dim() == 3 and x.shape[0] > 1:
        cu = [i * x.shape[1] for i in range(x.shape[0] + 1)]
    ys, finals = [], []
    for n in range(len(cu) - 1):
        xs = flat[cu[n]:cu[n + 1]]
        head = initial_state[n].transpose(0, 1) if initial_state is not None else xs.new_zeros(width, xs.shape[1])
        xe = torch.cat([head, xs])  # [W + T, D]
        z = F.conv1d(xe[1:].t().unsqueeze(0), weight.unsqueeze(1), bias, groups=weight.shape[0])[0].t()
        ys.append(F.silu(z) if activation else z)
        finals.append(xe[xe.shape[0] - width:].t())
    y = torch.cat(ys).reshape(x.shape)
    if residual is not None:
        y = y + residual
    return y, (torch.stack(finals) if output_final_state else None)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("varlen", [False, True])
@pytest.mark.parametrize("states", [False, True])
def test_fla_causal_conv1d(device, varlen, states):
    D, W = 8, 4
    torch.manual_seed(2)
    if varlen:
        lengths = [5, 2, 1, 7]  # three sequences shorter than W
        cu = torch.tensor([0, 5, 7, 8, 15], dtype=torch.int32, device=device)
        x = torch.randn(1, 15, D, device=device, requires_grad=True)
        n = len(lengths)
    else:
        cu = None
        x = torch.randn(3, 10, D, device=device, requires_grad=True)
        n = 3
    w = torch.randn(D, W, device=device, requires_grad=True)
    b = torch.randn(D, device=device, requires_grad=True)
    res = torch.randn(x.shape, device=device, requires_grad=True)
    h0 = torch.randn(n, D, W, device=device, requires_grad=True) if states else None
    y, fin = compat.causal_conv1d(x, w, b, res, h0, True, "swish", cu)
    y_ref, fin_ref = fla_ref(*map(double, (x, w, b, res, h0)), True, "silu", None if cu is None else cu.cpu())
    assert tref.rel_err(y, y_ref) < TOL
    assert fin.shape == (n, D, W) and fin.is_contiguous()
    assert tref.rel_err(fin, fin_ref) < TOL
    gy, gf = torch.randn_like(y), torch.randn_like(fin)
    wrt = [t for t in (x, w, b, res, h0) if t is not None]
    g = torch.autograd.grad((y.double() * gy).sum() + (fin.double() * gf).sum(), wrt)
    wrt64 = [double(t) for t in wrt]
    args64 = wrt64 + ([] if states else [None])
    y64, fin64 = fla_ref(*args64, True, "silu", None if cu is None else cu.cpu())
    g_ref = torch.autograd.grad((y64 * gy).sum() + (fin64 * gf).sum(), wrt64)
    for a, r in zip(g, g_ref):
        assert tref.rel_err(a, r) < TOL


def test_fla_shapes_kwargs_and_unsupported():
    x, w = torch.randn(2, 6, 2, 4), torch.randn(8, 3)  # [B, T, H, Dh] is flattened to D = 8
    y, fin = compat.causal_conv1d(x, w, activation=None, backend="triton", chunk_indices=None)
    assert y.shape == x.shape and fin is None
    assert tref.rel_err(y, fla_ref(x.reshape(2, 6, 8).double(), w.double())[0].reshape(x.shape)) < TOL
    xt = torch.randn(2, 8, 6).transpose(1, 2)  # [B, T, D] with channel stride 6: copied, not refused
    assert tref.rel_err(compat.causal_conv1d(xt, w)[0], fla_ref(xt.double(), w.double())[0]) < TOL
    with pytest.raises(NotImplementedError, match="cp_context"):
        compat.causal_conv1d(x, w, cp_context=object())
    with pytest.raises(NotImplementedError, match="weight"):
        compat.causal_conv1d(x, None)
    with pytest.raises(TypeError, match="unexpected keyword"):
        compat.causal_conv1d(x, w, not_an_argument=1)
    with pytest.raises(NotImplementedError, match="activation"):
        compat.causal_conv1d(x, w, activation="relu")
