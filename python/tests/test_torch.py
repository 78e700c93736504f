"""The torch layer: custom ops, autograd, torch.compile, nn.ShortConvolution. CPU always; CUDA too
when torch sees a GPU and shortconv was built with CUDA. Skipped without torch.

Gradients: the library has no float64 kernels, so torch.autograd.gradcheck (which needs float64
to be reliable) cannot run on the op itself. Instead the op's gradients, computed in float32 /
bfloat16 / float16, are compared with those of an independent float64 reference built on
F.conv1d(groups=C), with a relative-norm tolerance per dtype; and a central difference of the
op's own float32 forward along a random direction checks its backward against its forward.
"""
from __future__ import annotations

import copy

import pytest

torch = pytest.importorskip("torch")

import _torch_reference as tref  # noqa: E402
import shortconv  # noqa: E402
import shortconv.nn  # noqa: E402

HAS_CUDA = torch.cuda.is_available() and shortconv.built_with_cuda()
DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])
# Relative-norm tolerance of outputs and gradients against the float64 reference.
REL_TOL = {torch.float32: 2e-6, torch.bfloat16: 1e-2, torch.float16: 2e-3}


def make(shape, device, dtype=torch.float32, grad=True, seed=None):
    if seed is not None:
        torch.manual_seed(seed)
    t = torch.randn(shape, device=device, dtype=torch.float32).to(dtype)
    return t.requires_grad_(grad)


def double(t):
    return None if t is None else t.detach().double().requires_grad_(t.requires_grad)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(2, 9, 6, 4), (1, 1, 5, 3), (3, 17, 33, 2), (2, 8, 16, 1), (2, 4, 8, 7)])
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("states", [False, True])
def test_forward_backward_f32_vs_conv1d_f64(device, shape, activation, states):
    B, T, C, K = shape
    torch.manual_seed(0)
    x, w, b = make((B, T, C), device), make((C, K), device), make((C,), device)
    h0 = make((B, K - 1, C), device) if states else None
    gy = torch.randn(B, T, C, device=device)
    gf = torch.randn(B, K - 1, C, device=device) if states else None

    def op(x, w, b, h0):
        return shortconv.causal_conv1d(x, w, b, activation, h0, output_final_state=states)

    def reference(x, w, b, h0):
        y, fin = tref.forward(x, w, b, activation, h0)
        return (y, fin) if states else y

    outs, g = tref.grads(op, (x, w, b, h0), (gy, gf))
    routs, rg = tref.grads(reference, tuple(map(double, (x, w, b, h0))), (gy, gf))
    for name, a, r in zip(("y", "final_state"), outs, routs):
        assert a.dtype == torch.float32 and a.shape == r.shape
        assert tref.rel_err(a, r) < REL_TOL[torch.float32], name
    for name, a, r in zip(("dx", "dweight", "dbias", "d_initial_state"), g, rg):
        assert a.dtype == torch.float32
        assert tref.rel_err(a, r) < REL_TOL[torch.float32], name


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("weight_dtype", ["f32", "x"])
def test_low_precision_vs_conv1d_f64(device, dtype, weight_dtype):
    B, T, C, K = 2, 64, 48, 4
    torch.manual_seed(1)
    wdt = torch.float32 if weight_dtype == "f32" else dtype
    x, h0 = make((B, T, C), device, dtype), make((B, K - 1, C), device, dtype)
    w, b = make((C, K), device, wdt), make((C,), device, wdt)
    gy = torch.randn(B, T, C, device=device, dtype=dtype)
    gf = torch.randn(B, K - 1, C, device=device, dtype=dtype)

    def op(x, w, b, h0):
        return shortconv.causal_conv1d(x, w, b, "silu", h0, output_final_state=True)

    def reference(x, w, b, h0):
        return tref.forward(x, w, b, "silu", h0)

    outs, g = tref.grads(op, (x, w, b, h0), (gy, gf))
    routs, rg = tref.grads(reference, tuple(map(double, (x, w, b, h0))), (gy, gf))
    assert outs[0].dtype == dtype and outs[1].dtype == dtype
    tol = REL_TOL[dtype]
    for name, a, r in zip(("y", "final_state"), outs, routs):
        assert tref.rel_err(a, r) < tol, name
    for name, a, r, like in zip(("dx", "dweight", "dbias", "d_initial_state"), g, rg, (x, w, b, h0)):
        assert a.dtype == like.dtype, name
        assert tref.rel_err(a, r) < tol, name


@pytest.mark.parametrize("device", DEVICES)
def test_backward_agrees_with_own_forward(device):
    # Central difference of the f32 forward along a random direction vs <grad, direction>.
    B, T, C, K = 2, 12, 8, 4
    torch.manual_seed(2)
    inputs = [make((B, T, C), device), make((C, K), device), make((C,), device), make((B, K - 1, C), device)]
    gy, gf = torch.randn(B, T, C, device=device), torch.randn(B, K - 1, C, device=device)

    def loss(x, w, b, h0):
        y, fin = shortconv.causal_conv1d(x, w, b, "silu", h0, output_final_state=True)
        return (y.double() * gy).sum() + (fin.double() * gf).sum()

    g = torch.autograd.grad(loss(*inputs), inputs)
    dirs = [torch.randn_like(t) for t in inputs]
    eps = 1e-2
    with torch.no_grad():
        plus = loss(*[t + eps * d for t, d in zip(inputs, dirs)])
        minus = loss(*[t - eps * d for t, d in zip(inputs, dirs)])
    fd = ((plus - minus) / (2 * eps)).item()
    analytic = sum((gi.double() * d.double()).sum() for gi, d in zip(g, dirs)).item()
    assert abs(fd - analytic) <= 1e-3 * max(1.0, abs(analytic))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_varlen_gradients(device, index_dtype):
    C, K = 10, 4
    lengths = [6, 2, 1, 9]
    cu = torch.tensor([0] + torch.tensor(lengths).cumsum(0).tolist(), dtype=index_dtype, device=device)
    total = int(cu[-1])
    torch.manual_seed(3)
    x, w, b = make((total, C), device), make((C, K), device), make((C,), device)
    h0 = make((len(lengths), K - 1, C), device)
    gy, gf = torch.randn(total, C, device=device), torch.randn(len(lengths), K - 1, C, device=device)

    def op(x, w, b, h0):
        return shortconv.causal_conv1d(x, w, b, "silu", h0, True, cu_seqlens=cu)

    def reference(x, w, b, h0):
        return tref.forward(x, w, b, "silu", h0, cu.cpu())

    outs, g = tref.grads(op, (x, w, b, h0), (gy, gf))
    routs, rg = tref.grads(reference, tuple(map(double, (x, w, b, h0))), (gy, gf))
    for a, r in zip(list(outs) + list(g), list(routs) + list(rg)):
        assert tref.rel_err(a, r) < REL_TOL[torch.float32]


@pytest.mark.parametrize("device", DEVICES)
def test_strided_input_gradient_reaches_the_projection(device):
    B, T, C, K = 2, 10, 8, 4
    torch.manual_seed(4)
    proj = make((B, T, 3 * C), device)
    w = make((C, K), device)
    x = proj[:, :, C:2 * C]  # token stride 3C, channel stride 1: no copy
    y = shortconv.causal_conv1d(x, w, activation="silu")
    y.sum().backward()  # an expanded (stride 0) gradient: copied to channel-last in the backward
    p64 = double(proj)
    w64 = double(w)
    tref.forward(p64[:, :, C:2 * C], w64, None, "silu")[0].sum().backward()
    assert tref.rel_err(y, tref.forward(p64[:, :, C:2 * C], w64, None, "silu")[0]) < REL_TOL[torch.float32]
    assert tref.rel_err(proj.grad, p64.grad) < REL_TOL[torch.float32]
    assert torch.all(proj.grad[:, :, :C] == 0) and torch.all(proj.grad[:, :, 2 * C:] == 0)
    assert tref.rel_err(w.grad, w64.grad) < REL_TOL[torch.float32]


@pytest.mark.parametrize("device", DEVICES)
def test_errors(device):
    x, w = torch.randn(2, 5, 6, device=device), torch.randn(6, 3, device=device)
    with pytest.raises(ValueError, match="channel stride 1"):
        shortconv.causal_conv1d(x.transpose(1, 2).contiguous().transpose(1, 2), w)
    with pytest.raises(ValueError, match="weight is \\[5, 3\\]"):
        shortconv.causal_conv1d(x, w[:5])
    with pytest.raises(NotImplementedError, match="float64"):
        shortconv.causal_conv1d(x.double(), w.double())
    with pytest.raises(ValueError, match="activation"):
        shortconv.causal_conv1d(x, w, activation="relu")
    with pytest.raises(ValueError):
        shortconv.causal_conv1d(x, w, initial_state=torch.zeros(2, 3, 6, device=device))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", ["fwd", "bwd", "update"])
def test_opcheck(device, op):
    B, T, C, K = 2, 7, 6, 4
    torch.manual_seed(5)
    x, w, b = make((B, T, C), device), make((C, K), device), make((C,), device)
    h0 = make((B, K - 1, C), device)
    if op == "fwd":
        args = (x, w, b, h0, None, "silu", True)
        target = torch.ops.shortconv.causal_conv1d_fwd.default
    elif op == "bwd":
        dy, df = torch.randn(B, T, C, device=device), torch.randn(B, K - 1, C, device=device)
        args = (x.detach(), w.detach(), b.detach(), dy, h0.detach(), df, None, "silu", True, True, True, True)
        target = torch.ops.shortconv.causal_conv1d_bwd.default
    else:
        state = torch.randn(3, K - 1, C, device=device)
        idx = torch.tensor([2, -1], dtype=torch.int32, device=device)
        args = (x.detach()[:, :1], state, w.detach(), b.detach(), idx, "none")
        target = torch.ops.shortconv.causal_conv1d_update.default
    torch.library.opcheck(target, args)


@pytest.mark.parametrize("device", DEVICES)
def test_update_and_decode_equals_prefill(device):
    B, T, C, K = 3, 9, 8, 4
    torch.manual_seed(6)
    x, w, b = make((B, T, C), device, grad=False), make((C, K), device, grad=False), make((C,), device, grad=False)
    y_full, fin_full = shortconv.causal_conv1d(x, w, b, "silu", output_final_state=True)
    state = torch.zeros(B, K - 1, C, device=device)
    ys = [shortconv.causal_conv1d_update(x[:, t], state, w, b, "silu") for t in range(T)]
    assert ys[0].shape == (B, C)
    assert tref.rel_err(torch.stack(ys, 1), y_full) < 1e-6
    assert torch.allclose(state, fin_full)
    # Several tokens a row, slots picked by index, a padding row.
    pool = torch.randn(5, K - 1, C, device=device)
    before = pool.clone()
    idx = torch.tensor([4, -1, 1], dtype=torch.int64, device=device)
    y = shortconv.causal_conv1d_update(x[:, :3], pool, w, b, None, idx)
    for row, slot in enumerate(idx.tolist()):
        if slot < 0:
            assert torch.all(y[row] == 0)
            continue
        y_ref, fin_ref = tref.forward(x[row:row + 1, :3].double(), w.double(), b.double(), None,
                                      before[slot:slot + 1].double())
        assert tref.rel_err(y[row:row + 1], y_ref) < 1e-6
        assert torch.allclose(pool[slot].double(), fin_ref[0])
    for slot in (0, 2, 3):
        assert torch.equal(pool[slot], before[slot])


# ---- nn.ShortConvolution ----


@pytest.mark.parametrize("device", DEVICES)
def test_module_loads_conv1d_state_dict(device):
    C, K = 12, 4
    conv = torch.nn.Conv1d(C, C, K, groups=C, padding=K - 1, bias=True).to(device)
    layer = shortconv.nn.ShortConvolution(C, K, bias=True).to(device)
    state = conv.state_dict()
    layer.load_state_dict(state)
    assert state["weight"].shape == (C, 1, K)  # the caller's dict is left alone
    assert layer.weight.shape == (C, K)
    x = torch.randn(2, 15, C, device=device)
    expected = conv(x.transpose(1, 2))[..., :15].transpose(1, 2)
    assert tref.rel_err(layer(x), expected) < 1e-6
    # Its own state dict round-trips ([C, K]).
    other = shortconv.nn.ShortConvolution(C, K).to(device)
    other.load_state_dict(layer.state_dict())
    assert torch.equal(other.weight, layer.weight)
    # Nested, with a prefix.
    outer = torch.nn.Sequential(torch.nn.Identity(), shortconv.nn.ShortConvolution(C, K, activation="silu"))
    outer.load_state_dict({"1.weight": state["weight"].cpu(), "1.bias": state["bias"].cpu()})
    assert torch.equal(outer[1].weight.to(device), layer.weight)


def test_module_init_and_repr():
    torch.manual_seed(7)
    layer = shortconv.nn.ShortConvolution(256, 4, activation="swish")
    bound = 1 / 4 ** 0.5  # Conv1d(groups=C): fan-in 1 * K
    assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
    assert layer.weight.std() > bound / 3
    assert "activation='silu'" in repr(layer)
    assert shortconv.nn.ShortConvolution(4, 3, bias=False).bias is None
    state = layer.init_state(3)
    assert state.shape == (3, 3, 256)
    y = layer.step(torch.randn(3, 256), state)
    assert y.shape == (3, 256)


# ---- torch.compile ----


class _Block(torch.nn.Module):
    def __init__(self, channels, width):
        super().__init__()
        self.proj = torch.nn.Linear(channels, 3 * channels)
        self.conv = shortconv.nn.ShortConvolution(channels, width, activation="silu")
        self.channels = channels

    def forward(self, x, h0):
        q = self.proj(x)[..., self.channels:2 * self.channels]  # a strided column slice
        y, fin = self.conv(q, initial_state=h0, output_final_state=True)
        return y.float().pow(2).mean() + fin.float().sum()


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_forward_backward(device):
    torch._dynamo.reset()
    torch.manual_seed(8)
    B, T, C, K = 2, 16, 32, 4
    block = _Block(C, K).to(device)
    compiled = torch.compile(copy.deepcopy(block), fullgraph=True)
    x = torch.randn(B, T, C, device=device)
    h0 = torch.randn(B, K - 1, C, device=device, requires_grad=True)
    loss = block(x, h0)
    grads = torch.autograd.grad(loss, [h0, *block.parameters()])
    h0c = h0.detach().clone().requires_grad_()
    loss_c = compiled(x, h0c)
    grads_c = torch.autograd.grad(loss_c, [h0c, *compiled.parameters()])
    assert torch.allclose(loss, loss_c, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, grads_c):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_decode_step(device):
    torch._dynamo.reset()
    C, K = 16, 4
    layer = shortconv.nn.ShortConvolution(C, K, activation="silu").to(device)
    x = torch.randn(4, C, device=device)
    idx = torch.tensor([0, 2, -1, 1], dtype=torch.int32, device=device)
    state_eager = torch.randn(3, K - 1, C, device=device)
    state_comp = state_eager.clone()

    @torch.compile(fullgraph=True)
    def step(x, state, idx):
        return layer.step(x, state, idx) * 2

    with torch.no_grad():
        y_eager = layer.step(x, state_eager, idx) * 2
        y_comp = step(x, state_comp, idx)
    assert torch.allclose(y_eager, y_comp, rtol=1e-6, atol=1e-6)
    assert torch.equal(state_eager, state_comp)  # the in-place update survives functionalisation
