"""Float64 central-difference gradient checks of BatchNorm, LayerNorm, Residual and PReLU.

Each check compares the analytic gradient of L = sum(out * R) (R fixed and random) with
(L(v + h) - L(v - h)) / 2h for every element v of the input and of every parameter; the error
must stay within 1e-6 of the tensor's largest gradient element.
"""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import central_differences

import mlpx
from mlpx.layers import BatchNorm, Dense, Dropout, LayerNorm, PReLU, Residual

H = 1e-6
RTOL = 1e-6


def _build(layer, d, backend="cpu", seed=0):
    layer.build(d, mlpx.get_backend(backend), np.float64, np.random.default_rng(seed))
    return layer


def _loss(layer, x, r, training):
    out = layer.forward(layer.ops.asarray(x), training=training)
    return float(np.sum(layer.ops.to_numpy(out) * r))


def _check(analytic, numeric, what):
    # bias before BatchNorm: exactly 0, and the differences are rounding noise of about
    # eps * |loss| / H = 2e-10, whose size depends on the BLAS's summation order
    scale = max(np.abs(analytic).max(), 1e-3)
    err = np.abs(analytic - numeric).max()
    assert err <= RTOL * scale, f"{what}: max error {err:.3g} > {RTOL} * {scale:.3g}"


def gradcheck(layer, x, training=True, before_forward=None):
    rng = np.random.default_rng(7)
    x = np.array(x, dtype=np.float64)
    ops = layer.ops
    prep = before_forward or (lambda: None)
    r = rng.normal(size=_out_shape(layer, x, training, prep))
    prep()
    layer.forward(ops.asarray(x), training=training)
    dx = ops.to_numpy(layer.backward(ops.asarray(r), need_input_grad=True)).copy()
    grads = [ops.to_numpy(p.grad).copy() for p in layer.parameters()]

    def f(xx):
        prep()
        return _loss(layer, xx, r, training)

    _check(dx, central_differences(f, x, H), "input gradient")
    for p, g in zip(layer.parameters(), grads, strict=True):
        host = ops.to_numpy(p.data).copy()

        def f_param(w, p=p):
            ops.copy_into(p.data, ops.asarray(w))
            return f(x)

        num = central_differences(f_param, host.copy(), H)
        ops.copy_into(p.data, ops.asarray(host))
        _check(g, num, f"gradient of {p.name}")
    return dx, grads


def _out_shape(layer, x, training, prep):
    prep()
    return tuple(layer.forward(layer.ops.asarray(x), training=training).shape)


@pytest.fixture
def x():
    return np.random.default_rng(3).normal(size=(6, 5)) * 2.0 + 0.5


def test_batchnorm_training_gradients(x, backend):
    bn = _build(BatchNorm(), 5, backend)
    bn.gamma.data[...] = bn.ops.asarray(np.linspace(0.5, 2.0, 5))
    bn.beta.data[...] = bn.ops.asarray(np.linspace(-1.0, 1.0, 5))
    gradcheck(bn, x, training=True)


def test_batchnorm_inference_gradients(x, backend):
    bn = _build(BatchNorm(), 5, backend)
    bn.forward(bn.ops.asarray(x * 3.0), training=True)  # non-trivial running statistics
    gradcheck(bn, x, training=False)


def test_layernorm_gradients(x, backend):
    ln = _build(LayerNorm(), 5, backend)
    ln.gamma.data[...] = ln.ops.asarray(np.linspace(0.5, 2.0, 5))
    gradcheck(ln, x)


def test_prelu_gradients(backend):
    x = np.random.default_rng(4).normal(size=(6, 5))
    x[np.abs(x) < 1e-3] = 0.1  # keep central differences away from the kink at 0
    layer = _build(PReLU(), 5, backend)
    layer.slopes.data[...] = layer.ops.asarray(np.linspace(-0.3, 0.6, 5))
    gradcheck(layer, x)


def test_residual_gradients(x, backend):
    block = _build(
        Residual([Dense(7, activation="tanh"), LayerNorm(), PReLU(), Dense(5)]), 5, backend
    )
    gradcheck(block, x)


def test_residual_with_batchnorm_and_dropout_gradients(x, backend):
    drop = Dropout(0.3)
    block = _build(Residual([Dense(8, activation="gelu"), BatchNorm(), drop, Dense(5)]), 5,
                   backend)

    def same_mask():
        drop.step = 0  # every evaluation draws the same dropout mask

    gradcheck(block, x, before_forward=same_mask)


def test_dropout_gradient_uses_the_forward_mask(x, backend):
    drop = _build(Dropout(0.5), 5, backend)

    def same_mask():
        drop.step = 3

    dx, _ = gradcheck(drop, x, before_forward=same_mask)


def test_model_gradients_match_finite_differences(backend):
    """loss_and_grad(training=True) of a model mixing every new layer, against FD."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 4))
    y = rng.integers(0, 3, size=8)
    model = mlpx.Sequential(
        [Dense(6), BatchNorm(), PReLU(), Residual([Dense(6, activation="tanh"), Dense(6)]),
         LayerNorm(), Dense(3)],
        input_dim=4, backend=backend, dtype="float64", seed=1,
    )
    loss, grads = model.loss_and_grad(X, y, loss="cross_entropy", training=True)
    weights = model.get_weights()
    assert len(grads) == len(weights) == 13
    for k, w in enumerate(weights):

        def f(wk, k=k):
            model.set_weights(weights[:k] + [wk] + weights[k + 1:])
            return model.loss_and_grad(X, y, "cross_entropy", training=True)[0]

        num = central_differences(f, w.copy(), H)
        model.set_weights(weights)
        _check(grads[k], num, f"weight {k}")
