"""jax arrays as inputs (read-only DLPack import; CPU arrays). jax arrays are immutable, so outputs are
numpy arrays passed in. Skipped without jax."""
from __future__ import annotations

import os

import numpy as np
import pytest

# CPU arrays only, and no GPU memory grabbed by jax on a machine that has one (the torch tests in
# the same process need it); must be set before jax is first imported.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
jnp = pytest.importorskip("jax.numpy")
import _reference as ref  # noqa: E402
import shortconv  # noqa: E402
from shortconv import ops  # noqa: E402


def test_jax_inputs_numpy_outputs():
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((2, 9, 6)).astype(np.float32)
    w_np = rng.standard_normal((6, 4)).astype(np.float32)
    h0_np = rng.standard_normal((2, 3, 6)).astype(np.float32)
    x, w, h0 = jnp.asarray(x_np), jnp.asarray(w_np), jnp.asarray(h0_np)
    y = np.empty_like(x_np)
    fin = np.empty_like(h0_np)
    ops.conv1d_forward(x, w, y=y, activation="silu", initial_state=h0, final_state=fin)
    y_ref, fin_ref = ref.forward(x_np, w_np, None, "silu", h0_np)
    np.testing.assert_allclose(y, y_ref, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(fin, fin_ref, rtol=0, atol=0)


def test_jax_outputs_cannot_be_allocated():
    x, w = jnp.zeros((1, 4, 3), jnp.float32), jnp.zeros((3, 2), jnp.float32)
    with pytest.raises(TypeError, match="pass the output arrays"):
        shortconv.causal_conv1d(x, w)
