"""Activations: values and derivatives against PyTorch and float64 finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import central_differences

import mlpx
from mlpx import activations

torch = pytest.importorskip("torch", reason="PyTorch is the independent reference here")
F = torch.nn.functional



def _twin(act):
    name, kwargs = act.torch_module()
    module = getattr(torch.nn, name)(**kwargs)
    return lambda x, a: module(x)


# (activation object, torch function of (x, slopes)); slopes only used by prelu. Every built-in
# with a PyTorch twin comes from the registry, through the twin its declaration names.
CASES = {c.name: (c(), _twin(c())) for c in activations.builtins()
         if c().torch_module() is not None}
CASES.update({
    "leaky_relu_0.1": (activations.LeakyReLU(0.1), _twin(activations.LeakyReLU(0.1))),
    "elu_0.5": (activations.ELU(alpha=0.5), _twin(activations.ELU(alpha=0.5))),
    "prelu": (activations.PReLU(), lambda x, a: F.prelu(x, a)),
})


def test_every_trainable_builtin_is_compared_with_torch():
    missing = {c.name for c in activations.builtins() if c.differentiable} - set(CASES)
    assert not missing, f"declare torch_module() for {sorted(missing)}"


def _inputs(rng, shape=(6, 5), lo=-4.0, hi=4.0) -> np.ndarray:
    z = rng.uniform(lo, hi, size=shape)
    # keep clear of the kink at 0 so one-sided behaviour never decides a comparison
    return np.where(np.abs(z) < 0.05, z + np.sign(z + 1e-12) * 0.1, z)


def _slopes(n: int) -> np.ndarray:
    return np.linspace(0.05, 0.4, n)


def _forward(ops, act, z: np.ndarray, dtype, slopes=None):
    """Through the backend's fused bias+activation op with a zero bias."""
    zd = ops.asarray(z, dtype=dtype)
    b = ops.zeros((z.shape[1],), dtype)
    out = ops.empty(z.shape, dtype)
    s = None if slopes is None else ops.asarray(slopes, dtype=dtype)
    ops.bias_act(zd, b, act, out, slopes=s)
    return zd, out, s


def _backward(ops, act, zd, yd, dy: np.ndarray, dtype, s=None) -> np.ndarray:
    out = ops.empty(dy.shape, dtype)
    ops.act_backward(ops.asarray(dy, dtype=dtype), zd, yd, act, out, slopes=s)
    return ops.to_numpy(out)


def _torch(name, z, dy, slopes, dtype):
    tdt = torch.float64 if dtype == np.float64 else torch.float32
    x = torch.tensor(z, dtype=tdt, requires_grad=True)
    a = torch.tensor(slopes, dtype=tdt, requires_grad=True)
    y = CASES[name][1](x, a)
    (y * torch.tensor(dy, dtype=tdt)).sum().backward()
    return y.detach().numpy(), x.grad.numpy(), (a.grad.numpy() if a.grad is not None else None)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", list(CASES))
def test_value_and_gradient_match_torch(ops, name, dtype, rng):
    act = CASES[name][0]
    z = _inputs(rng).astype(dtype)
    dy = rng.normal(size=z.shape).astype(dtype)
    slopes = _slopes(z.shape[1]).astype(dtype)
    zd, yd, s = _forward(ops, act, z, dtype, slopes if act.has_parameters else None)
    y = ops.to_numpy(yd)
    g = _backward(ops, act, zd, yd, dy, dtype, s)
    # torch in float64 on the same (rounded) inputs is the exact answer to compare with
    ty, tg, _ = _torch(name, z.astype(np.float64), dy.astype(np.float64),
                       slopes.astype(np.float64), np.float64)
    if dtype == np.float64:
        np.testing.assert_allclose(y, ty, rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(g, tg, rtol=1e-12, atol=1e-14 * np.abs(tg).max())
    else:
        # one rounding of a float64 result: <= 1 float32 ULP; derivatives computed from the
        # rounded output (sigmoid, tanh, elu) inherit its rounding error
        np.testing.assert_allclose(y, ty, rtol=1.2e-7, atol=1e-7 * np.abs(ty).max())
        np.testing.assert_allclose(g, tg, rtol=1e-5, atol=2e-6 * np.abs(tg).max())


@pytest.mark.parametrize("name", [n for n in CASES if n != "identity"])
def test_derivative_matches_central_differences(name, rng):
    """The reference derivative against float64 central differences of the reference formula."""
    ref = mlpx.get_backend("reference")
    act = CASES[name][0]
    z = _inputs(rng, shape=(4, 5))
    dy = rng.normal(size=z.shape)
    slopes = _slopes(5) if act.has_parameters else None
    zd, yd, s = _forward(ref, act, z, np.float64, slopes)
    g = _backward(ref, act, zd, yd, dy, np.float64, s)

    def objective(zz):
        _, y, _ = _forward(ref, act, zz, np.float64, slopes)
        return float((y * dy).sum())

    fd = central_differences(objective, z.copy())
    assert np.abs(g - fd).max() <= 1e-7 * np.abs(fd).max()


def test_step_forward_and_no_gradient(ops):
    act = activations.Step()
    z = np.array([[-1.0, 0.0, 2.0]])
    _, y, _ = _forward(ops, act, z, np.float64)
    np.testing.assert_array_equal(ops.to_numpy(y), [[0.0, 1.0, 1.0]])  # H(0) = 1
    with pytest.raises(ValueError, match="step activation.*cannot be trained"):
        _backward(ops, act, ops.asarray(z), y, np.ones_like(z), np.float64)


def test_prelu_slope_gradient_matches_torch(ops, rng):
    z = _inputs(rng)
    dy = rng.normal(size=z.shape)
    slopes = _slopes(z.shape[1])
    act = activations.PReLU()
    zd = ops.asarray(z)
    s = ops.asarray(slopes)
    out = ops.empty(z.shape, np.float64)
    ds = ops.zeros((z.shape[1],), np.float64)
    ops.prelu_backward(ops.asarray(dy), zd, s, out, ds)
    _, tg, tds = _torch("prelu", z, dy, slopes, np.float64)
    np.testing.assert_allclose(ops.to_numpy(out), tg, rtol=1e-14)
    np.testing.assert_allclose(ops.to_numpy(ds), tds, rtol=1e-12, atol=1e-14)
    assert act.init == 0.25


def test_saturating_inputs_stay_finite(ops):
    """Huge |z| must not overflow: stable sigmoid/softplus/silu and log-sum-exp."""
    z = np.array([[-1e4, -800.0, 0.0, 800.0, 1e4]])
    for name in [c.name for c in activations.builtins()
                 if c.differentiable and not c.has_parameters and c.name in CASES]:
        act = CASES[name][0]
        with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow
            _, y, _ = _forward(mlpx.get_backend("reference"), act, z, np.float64)
        _, yb, _ = _forward(ops, act, z, np.float64)
        ty, _, _ = _torch(name, z, np.ones_like(z), np.ones(5), np.float64)
        np.testing.assert_allclose(ops.to_numpy(yb), ty, rtol=1e-14, atol=1e-300)
        np.testing.assert_allclose(y, ty, rtol=1e-14, atol=1e-300)


def test_names_and_aliases():
    assert activations.get("swish") == activations.SiLU()
    assert activations.get(None) == activations.Identity()
    assert activations.get("LeakY_ReLU").negative_slope == 0.01
    assert activations.LeakyReLU(0.1) != activations.LeakyReLU(0.01)
    assert activations.from_config(activations.ELU(0.3).config()) == activations.ELU(0.3)
    assert set(activations.names()) >= {
        "identity", "step", "sigmoid", "tanh", "relu", "leaky_relu", "prelu", "elu", "gelu",
        "silu", "softplus", "softmax", "log_softmax",
    }
    with pytest.raises(ValueError, match="unknown activation 'relu6'.*valid names.*sigmoid"):
        activations.get("relu6")
    with pytest.raises(ValueError, match="alpha"):
        activations.ELU(alpha=-1.0)
