"""BatchNorm, LayerNorm, PReLU and Dropout against PyTorch (CPU) on the same inputs."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.layers import BatchNorm, Dropout, LayerNorm, PReLU

torch = pytest.importorskip("torch")

TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-5, atol=2e-6)}
DTYPES = [np.float64, np.float32]


def _layer(layer, d, backend, dtype):
    layer.build(d, mlpx.get_backend(backend), dtype, np.random.default_rng(0))
    return layer


def _np(t):
    return t.detach().numpy()


def _data(dtype, n=16, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, d)) * np.linspace(0.5, 3.0, d) + np.arange(d)).astype(dtype)
    dy = rng.normal(size=(n, d)).astype(dtype)
    return x, dy


def _backward(layer, dy):
    dx = layer.backward(layer.ops.asarray(dy), need_input_grad=True)
    return layer.ops.to_numpy(dx), [layer.ops.to_numpy(p.grad) for p in layer.parameters()]


def _torch_dtype(dtype):
    return torch.float64 if dtype == np.float64 else torch.float32


def _same_affine(ours, ref, dtype):
    """The same non-trivial gamma and beta in the mlpx layer and the torch layer."""
    gamma = np.linspace(0.5, 1.5, 6).astype(dtype)
    beta = np.linspace(-1, 1, 6).astype(dtype)
    ours.gamma.data[...] = ours.ops.asarray(gamma)
    ours.beta.data[...] = ours.ops.asarray(beta)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(gamma))
        ref.bias.copy_(torch.from_numpy(beta))


def _compare_affine_step(ours, ref, x, dy, tol, training):
    """One forward and backward pass of both normalisation layers: y, dx, dgamma, dbeta."""
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = ref(xt)
    yt.backward(torch.from_numpy(dy))
    y = ours.ops.to_numpy(ours.forward(ours.ops.asarray(x), training=training))
    np.testing.assert_allclose(y, _np(yt), **tol)
    dx, (dgamma, dbeta) = _backward(ours, dy)
    np.testing.assert_allclose(dx, _np(xt.grad), **tol)
    np.testing.assert_allclose(dgamma, _np(ref.weight.grad), **tol)
    np.testing.assert_allclose(dbeta, _np(ref.bias.grad), **tol)
    ref.zero_grad()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
def test_batchnorm_matches_torch(backend, dtype, momentum):
    tol = TOL[dtype]
    ours = _layer(BatchNorm(momentum=momentum, eps=1e-3), 6, backend, dtype)
    ref = torch.nn.BatchNorm1d(6, momentum=momentum, eps=1e-3, dtype=_torch_dtype(dtype))
    _same_affine(ours, ref, dtype)
    ref.train()
    for step in range(3):  # several steps: the running statistics accumulate
        x, dy = _data(dtype, seed=step)
        _compare_affine_step(ours, ref, x, dy, tol, training=True)
        bufs = ours.buffers()
        np.testing.assert_allclose(ours.ops.to_numpy(bufs["running_mean"]),
                                   _np(ref.running_mean), **tol)
        np.testing.assert_allclose(ours.ops.to_numpy(bufs["running_var"]),
                                   _np(ref.running_var), **tol)
        assert int(bufs["num_batches_tracked"]) == int(ref.num_batches_tracked)
    # inference: running statistics, and gradients that treat them as constants
    ref.eval()
    x, dy = _data(dtype, seed=9)
    _compare_affine_step(ours, ref, x, dy, tol, training=False)


def test_batchnorm_running_stats_are_buffers_not_weights():
    model = mlpx.Sequential([mlpx.Dense(4), BatchNorm(), mlpx.Dense(2)], input_dim=3, seed=0)
    shapes = [w.shape for w in model.get_weights()]
    assert shapes == [(3, 4), (4,), (4,), (4,), (4, 2), (2,)]  # W, b, gamma, beta, W, b
    assert set(model.layers[1].buffers()) == {"running_mean", "running_var",
                                             "num_batches_tracked"}


def test_batchnorm_rejects_a_batch_of_one():
    bn = _layer(BatchNorm(), 3, "cpu", np.float64)
    with pytest.raises(ValueError, match="at least 2 samples"):
        bn.forward(np.ones((1, 3)), training=True)
    bn.forward(np.ones((1, 3)), training=False)  # inference is fine


@pytest.mark.parametrize("dtype", DTYPES)
def test_layernorm_matches_torch(backend, dtype):
    tol = TOL[dtype]
    x, dy = _data(dtype)
    ours = _layer(LayerNorm(eps=1e-4), 6, backend, dtype)
    ref = torch.nn.LayerNorm(6, eps=1e-4, dtype=_torch_dtype(dtype))
    _same_affine(ours, ref, dtype)
    for training in (True, False):  # LayerNorm does the same in both modes
        _compare_affine_step(ours, ref, x, dy, tol, training)


@pytest.mark.parametrize("dtype", DTYPES)
def test_prelu_layer_matches_torch(backend, dtype):
    tol = TOL[dtype]
    x, dy = _data(dtype)
    x -= np.asarray(x.mean(), dtype=dtype)  # both signs
    ours = _layer(PReLU(), 6, backend, dtype)
    assert np.all(ours.ops.to_numpy(ours.slopes.data) == np.float32(0.25))
    slopes = np.linspace(-0.2, 0.7, 6).astype(dtype)
    ours.slopes.data[...] = ours.ops.asarray(slopes)
    ref = torch.nn.PReLU(num_parameters=6, dtype=_torch_dtype(dtype))
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(slopes))
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = ref(xt)
    yt.backward(torch.from_numpy(dy))
    y = ours.ops.to_numpy(ours.forward(ours.ops.asarray(x)))
    np.testing.assert_allclose(y, _np(yt), **tol)
    dx, (dslopes,) = _backward(ours, dy)
    np.testing.assert_allclose(dx, _np(xt.grad), **tol)
    np.testing.assert_allclose(dslopes, _np(ref.weight.grad), rtol=tol["rtol"] * 10,
                               atol=tol["atol"] * 10)


def test_dropout_at_inference_matches_torch(backend):
    x, dy = _data(np.float32)
    ours = _layer(Dropout(0.4), 6, backend, np.float32)
    ref = torch.nn.Dropout(0.4).eval()
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = ref(xt)
    yt.backward(torch.from_numpy(dy))
    y = ours.ops.to_numpy(ours.forward(ours.ops.asarray(x), training=False))
    np.testing.assert_array_equal(y, _np(yt))
    dx = ours.ops.to_numpy(ours.backward(ours.ops.asarray(dy)))
    np.testing.assert_array_equal(dx, _np(xt.grad))


def test_dropout_in_training_scales_like_torch():
    """Same mask -> same values: torch's output divided by its mask equals x / (1 - p)."""
    x, _ = _data(np.float64)
    ours = _layer(Dropout(0.25), 6, "cpu", np.float64)
    y = ours.forward(x, training=True)
    mask = ours._mask.astype(np.float64)
    torch.manual_seed(0)
    yt = _np(torch.nn.Dropout(0.25).train()(torch.from_numpy(x)))
    kept_t = yt != 0
    np.testing.assert_allclose(yt[kept_t], x[kept_t] / 0.75, rtol=1e-15)
    np.testing.assert_allclose(y[mask == 1], x[mask == 1] / 0.75, rtol=1e-15)
    assert np.all(y[mask == 0] == 0)
