"""Whole-network gradients (`loss_and_grad`) for every hidden activation x every loss.

Checked two independent ways: float64 central finite differences (relative error <= 1e-6 of
each tensor's largest element) and PyTorch autograd on the same network with the same weights
(float64: within 1e-9 of the largest gradient element; float32: within 2e-4).
"""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx import activations

torch = pytest.importorskip("torch", reason="PyTorch is the independent reference here")
F = torch.nn.functional

# every trainable elementwise built-in, from the registry
HIDDEN = [c.name for c in activations.builtins() if c.differentiable and not c.rowwise]
LOSSES = ["mse", "l1", "cross_entropy", "bce", "nll"]
KINKED = {"relu", "leaky_relu", "prelu", "elu"}  # f' (or f'') jumps at z = 0
N, D_IN, H1, H2 = 6, 3, 5, 4



def _torch_act(name: str):
    if name == "prelu":
        return lambda z, a: F.prelu(z, a)
    twin, kwargs = activations.get(name).torch_module()
    module = getattr(torch.nn, twin)(**kwargs)
    return lambda z, a: module(z)


def _build(act: str, loss: str, backend: str, dtype: str, seed: int):
    n_out = 2 if loss in ("mse", "l1") else 3
    out_act = "log_softmax" if loss == "nll" else None
    model = mlpx.Sequential(
        [mlpx.Dense(H1, activation=act), mlpx.Dense(H2, activation=act),
         mlpx.Dense(n_out, activation=out_act)],
        input_dim=D_IN, backend=backend, dtype=dtype, seed=seed,
    )
    rng = np.random.default_rng(seed)
    # random biases and slopes too, so every parameter's gradient is exercised
    model.set_weights([w + rng.normal(scale=0.3, size=w.shape) for w in model.get_weights()])
    X = rng.normal(size=(N, D_IN))
    if loss in ("mse", "l1"):
        out = model.predict(X).astype(np.float64)
        # targets a clear distance from the outputs: |out - t| never crosses l1's kink
        y = out + rng.choice([-1.0, 1.0], size=out.shape) * rng.uniform(0.3, 1.0, out.shape)
    elif loss == "bce":
        y = rng.integers(0, 2, size=(N, n_out)).astype(np.float64)
    else:
        y = rng.integers(0, n_out, size=N)
    return model, X, y


def _min_abs_preactivation(model, X) -> float:
    # recomputed in float64 from the weights: Dense may overwrite z with f(z) in place
    ref = mlpx.backends.base.Backend()
    h, smallest = np.asarray(X, np.float64), np.inf
    for layer in model.layers[:-1]:
        z = h @ mlpx.to_numpy(layer.W.data).astype(np.float64)
        if layer.b is not None:
            z = z + mlpx.to_numpy(layer.b.data)
        smallest = min(smallest, float(np.abs(z).min()))
        h = np.empty_like(z)
        slopes = None if layer.slopes is None else mlpx.to_numpy(layer.slopes.data)
        ref.bias_act(z, None, layer.activation, out=h, slopes=slopes)
    return smallest


def _case(act, loss, backend, dtype):
    """A network whose pre-activations keep clear of the kink at 0 (so FD is meaningful)."""
    for seed in range(50):
        model, X, y = _build(act, loss, backend, dtype, seed)
        if act not in KINKED or _min_abs_preactivation(model, X) > 1e-3:
            return model, X, y
    raise AssertionError("no seed kept the pre-activations away from 0")  # pragma: no cover


def _torch_grads(model, X, y, loss: str, act: str):
    ws = [torch.tensor(w.astype(np.float64), requires_grad=True) for w in model.get_weights()]
    x = torch.tensor(np.asarray(X, dtype=model.dtype).astype(np.float64))
    k = 0
    for i in range(len(model.layers)):
        W, b = ws[k], ws[k + 1]
        k += 2
        x = x @ W + b
        if i < len(model.layers) - 1:
            a = None
            if act == "prelu":
                a = ws[k]
                k += 1
            x = _torch_act(act)(x, a)
    if loss == "nll":
        value = F.nll_loss(torch.log_softmax(x, dim=1), torch.tensor(y))
    elif loss == "cross_entropy":
        value = F.cross_entropy(x, torch.tensor(y))
    elif loss == "bce":
        value = F.binary_cross_entropy_with_logits(x, torch.tensor(y))
    elif loss == "mse":
        value = F.mse_loss(x, torch.tensor(np.asarray(y, dtype=model.dtype), dtype=x.dtype))
    else:
        value = F.l1_loss(x, torch.tensor(np.asarray(y, dtype=model.dtype), dtype=x.dtype))
    value.backward()
    return float(value.detach()), [w.grad.numpy() for w in ws]


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("act", HIDDEN)
def test_network_gradient_matches_finite_differences(backend, act, loss):
    model, X, y = _case(act, loss, backend, "float64")
    value, grads = model.loss_and_grad(X, y, loss=loss)
    assert value == pytest.approx(model.evaluate(X, y, loss=loss)["loss"], rel=1e-12)
    h = 1e-6
    for p, g in zip(model.parameters(), grads, strict=True):
        fd = np.zeros(p.shape)
        for idx in np.ndindex(p.shape):
            old = float(p.data[idx])
            p.data[idx] = old + h
            up = model.evaluate(X, y, loss=loss)["loss"]
            p.data[idx] = old - h
            down = model.evaluate(X, y, loss=loss)["loss"]
            p.data[idx] = old
            fd[idx] = (up - down) / (2 * h)
        scale = np.abs(fd).max()
        assert scale > 0, f"{p.name}: zero gradient, the check would be vacuous"
        err = np.abs(g - fd).max() / scale
        assert err <= 1e-6, f"{p.name}: relative error {err:.2e}"


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-9), ("float32", 2e-4)])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("act", HIDDEN)
def test_network_gradient_matches_torch_autograd(backend, act, loss, dtype, tol):
    model, X, y = _case(act, loss, backend, dtype)
    value, grads = model.loss_and_grad(X, y, loss=loss)
    tvalue, tgrads = _torch_grads(model, X, y, loss, act)
    assert value == pytest.approx(tvalue, rel=tol)
    assert len(grads) == len(tgrads) == (8 if act == "prelu" else 6)
    for p, g, tg in zip(model.parameters(), grads, tgrads, strict=True):
        assert g.shape == tg.shape and g.dtype == np.dtype(dtype)
        err = np.abs(g - tg).max() / np.abs(tg).max()
        assert err <= tol, f"{p.name}: error {err:.2e} of the largest element"
