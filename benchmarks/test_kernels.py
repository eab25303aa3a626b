"""Kernel micro-benchmarks: each fused Numba kernel against the plain NumPy expression it
replaces, the batch gather, and the float32 subnormal trap.

Full sizes: a (4096, 1024) hidden activation; smoke sizes (`--benchmark-disable`): (64, 128).
Every case also checks that the fused kernel and the NumPy expression agree.
"""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.backends import numba_activations, numba_optim

from .conftest import full_run

IMPLS = ["fused", "numpy"]


@pytest.fixture
def shape(request) -> tuple[int, int]:
    return (4096, 1024) if full_run(request.config) else (64, 128)


@pytest.fixture
def arrays(shape):
    rng = np.random.default_rng(0)
    z = rng.standard_normal(shape, dtype=np.float32)
    dy = rng.standard_normal(shape, dtype=np.float32)
    b = rng.standard_normal(shape[1], dtype=np.float32)
    return z, dy, b


@pytest.mark.parametrize("impl", IMPLS)
def test_bias_relu(benchmark, arrays, impl):
    z0, _, b = arrays
    z, out = z0.copy(), np.empty_like(z0)
    if impl == "fused":
        def run():
            z[...] = z0
            numba_activations.bias_relu(z, b, out)
    else:
        def run():
            z[...] = z0
            np.add(z, b, out=z)
            np.maximum(z, 0, out=out)
    benchmark(run)
    np.testing.assert_array_equal(out, np.maximum(z0 + b, 0))


@pytest.mark.parametrize("impl", IMPLS)
def test_relu_backward(benchmark, arrays, impl):
    z, dy, _ = arrays
    out = np.empty_like(z)
    if impl == "fused":
        benchmark(numba_activations.relu_backward, dy, z, out)
    else:
        benchmark(lambda: np.multiply(dy, z > 0, out=out))
    np.testing.assert_array_equal(out, np.where(z > 0, dy, 0))


@pytest.mark.parametrize("impl", ["fused", "reference"])
def test_softmax_cross_entropy(benchmark, shape, impl):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((shape[0], 10), dtype=np.float32)
    labels = rng.integers(0, 10, shape[0])
    grad = np.empty_like(logits)
    ops = mlpx.get_backend("cpu" if impl == "fused" else "reference")
    loss = benchmark(ops.softmax_cross_entropy, logits, labels, grad)
    ref = np.empty_like(logits)
    ref_loss = mlpx.get_backend("reference").softmax_cross_entropy(logits, labels, ref)
    np.testing.assert_allclose(grad, ref, rtol=1e-6, atol=1e-12)
    assert float(loss) == pytest.approx(float(ref_loss), rel=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
def test_sgd_update(benchmark, shape, impl):
    rng = np.random.default_rng(0)
    p = rng.standard_normal((1024, shape[1]), dtype=np.float32)
    g = rng.standard_normal(p.shape, dtype=np.float32)
    lr = np.float32(1e-6)  # tiny steps: the parameters stay finite however often it runs
    if impl == "fused":
        benchmark(numba_optim.sgd_update, p, g, float(lr))
    else:
        benchmark(lambda: np.subtract(p, lr * g, out=p))
    assert np.isfinite(p).all()


@pytest.mark.parametrize("impl", ["take_rows", "fancy_index"])
def test_batch_gather(benchmark, shape, impl):
    """The shuffled mini-batch gather of every training step (784-wide inputs)."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((shape[0] * 4, 784), dtype=np.float32)
    idx = rng.permutation(X.shape[0])[: shape[0]]
    out = np.empty((shape[0], 784), np.float32)
    ops = mlpx.get_backend("cpu")
    if impl == "take_rows":
        benchmark(ops.take_rows, X, idx, out)
    else:
        out = benchmark(lambda: X[idx])
    np.testing.assert_array_equal(out, X[idx])


@pytest.mark.parametrize("values", ["normal", "subnormal"])
def test_gemm_subnormal_inputs(benchmark, shape, values):
    """The float32 subnormal trap: a GEMM whose left operand is all subnormal numbers.

    Where they can arise in mlpx: only in the float32 loss gradient, when a logit gap exceeds
    about 87 - ln(batch) (p / batch rounds to a subnormal); the fused kernels compute in
    float64, so their exp/log never see float32 subnormals.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((shape[0], shape[1]), dtype=np.float32)
    if values == "subnormal":
        a = (a * np.float32(1e-39)).astype(np.float32)
        tiny = np.finfo(np.float32).tiny
        assert np.mean((a != 0) & (np.abs(a) < tiny)) > 0.99
    w = rng.standard_normal((shape[1], shape[1]), dtype=np.float32)
    out = np.empty((shape[0], shape[1]), np.float32)
    benchmark(np.matmul, a, w, out=out)
    assert np.isfinite(out).all()
