"""Dense's in-place work arrays: y over z, delta over the incoming gradient.

The in-place forms must give bit-for-bit the numbers of separate arrays, on the reference
and the cpu backend, and never overwrite an array a caller still reads.
"""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx import activations
from mlpx.layers import dense

# every trainable built-in (from the registry), and parametrised ones away from the defaults
ACTS = [c.name for c in activations.builtins() if c.differentiable and not c.rowwise] + [
    activations.LeakyReLU(0.3), activations.ELU(alpha=0.5)]


def _grads(backend, act, in_place, monkeypatch, dtype=np.float32, layers=None):
    with monkeypatch.context() as m:
        if not in_place:
            m.setattr(dense, "_act_in_place", lambda a: activations.is_identity(a))
            m.setattr(dense.Dense, "returns_work_grad", False)
        rng = np.random.default_rng(0)
        X = rng.standard_normal((64, 12))
        y = rng.integers(0, 3, 64)
        if layers is None:
            model = mlpx.MLP([12, 16, 16, 3], activation=act, backend=backend, dtype=dtype,
                             seed=1)
        else:
            model = mlpx.Sequential(layers(act), backend=backend, dtype=dtype, seed=1)
            model.build(12)
        loss, grads = model.loss_and_grad(X, y, loss="cross_entropy", training=True)
        out = model.predict(X)
    return loss, grads, out


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("act", ACTS, ids=lambda a: a if isinstance(a, str) else repr(a))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_in_place_arrays_give_identical_bits(backend, act, dtype, monkeypatch):
    got = _grads(backend, act, True, monkeypatch, dtype)
    ref = _grads(backend, act, False, monkeypatch, dtype)
    assert got[0] == ref[0]
    for g, r in zip(got[1], ref[1], strict=True):
        np.testing.assert_array_equal(g, r)
    np.testing.assert_array_equal(got[2], ref[2])


def test_in_place_only_where_the_derivative_survives():
    for act in ("relu", "tanh", activations.LeakyReLU(0.0), activations.ELU(alpha=2.0)):
        assert dense._act_in_place(activations.get(act)), act
    # f' needs z itself, or the sign test would differ on y
    for act in ("gelu", "silu", "softplus", "prelu", "softmax"):
        assert not dense._act_in_place(activations.get(act)), act
    assert not dense._act_in_place(activations.LeakyReLU(-0.5))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_blocks_between_dense_layers_keep_their_gradients(backend, monkeypatch):
    """Dropout may hand back dy itself and Residual reads dy after its body: neither's
    gradient may be overwritten, and the results must match separate arrays exactly."""
    from mlpx.layers import Dense, Dropout, Residual

    def layers(act):
        return [Dense(16, act), Dropout(0.2), Dense(16, act),
                Residual([Dense(16, act), Dense(16, act)]), Dense(16, act), Dropout(0.0),
                Dense(3)]

    got = _grads(backend, "relu", True, monkeypatch, layers=layers)
    ref = _grads(backend, "relu", False, monkeypatch, layers=layers)
    assert got[0] == ref[0]
    for g, r in zip(got[1], ref[1], strict=True):
        np.testing.assert_array_equal(g, r)


def test_backward_never_overwrites_the_callers_gradient():
    rng = np.random.default_rng(2)
    model = mlpx.MLP([6, 8, 5], activation="relu", output_activation="relu", seed=0)
    X = rng.standard_normal((10, 6)).astype(np.float32)
    model.forward(X, training=True)
    g = rng.standard_normal((10, 5)).astype(np.float32)
    keep = g.copy()
    model.backward(g)
    np.testing.assert_array_equal(g, keep)


def test_a_relu_network_keeps_half_the_batch_sized_arrays():
    B = 256
    model = mlpx.MLP([32, 64, 64, 4], activation="relu", seed=0)
    rng = np.random.default_rng(0)
    model.loss_and_grad(rng.standard_normal((B, 32)), rng.integers(0, 4, B),
                        loss="cross_entropy")
    wide = [k[0] for layer in model.layers for k, a in layer._ws.items()
            if a.shape == (B, 64)]
    # z (= y) of both hidden layers and the second layer's dx (the first hidden layer's
    # delta is written over it); the output layer's dx holds the second one's delta
    assert sorted(wide) == ["dx", "dx", "z", "z"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_in_place_kernels_match_the_out_of_place_ones_bitwise(dtype):
    from mlpx.backends import numba_activations as k

    ki = k

    rng = np.random.default_rng(4)
    z0 = (rng.standard_normal((33, 17)) * 4).astype(dtype)
    z0[0, :4] = [np.nan, np.inf, -np.inf, 0.0]
    g0 = rng.standard_normal((33, 17)).astype(dtype)
    b = rng.standard_normal(17).astype(dtype)
    for code in [c.code for c in activations.builtins()
                 if activations.scalar_kernel(c()) is not None and c.differentiable]:
        alpha = 0.3
        za, ya = z0.copy(), np.empty_like(z0)
        k.bias_act(za, b, code, alpha, ya)
        zb = z0.copy()
        ki.bias_act_(zb, b, code, alpha)
        np.testing.assert_array_equal(zb, ya, err_msg=str(code))
        da = np.empty_like(g0)
        k.act_backward(g0, za, ya, code, alpha, da)
        gb = g0.copy()
        ki.act_backward_(gb, za, ya, code, alpha)
        np.testing.assert_array_equal(gb, da, err_msg=str(code))
    za, ya = z0.copy(), np.empty_like(z0)
    k.bias_relu(za, b, ya)
    zb = z0.copy()
    ki.bias_relu_(zb, b)
    np.testing.assert_array_equal(zb, ya)
    da = np.empty_like(g0)
    k.relu_backward(g0, za, da)
    gb = g0.copy()
    ki.relu_backward_(gb, zb)  # from y: the same sign test
    np.testing.assert_array_equal(gb, da)
