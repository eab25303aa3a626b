"""The Numba normalisation kernels of the cpu backend against the reference backend: bitwise
(a row's mean summed as NumPy sums it), and the dispatch to them."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.backends import norm_kernels

CPU = mlpx.get_backend("cpu")
REF = mlpx.get_backend("reference")
DTYPES = [np.float32, np.float64]
# widths around NumPy's pairwise-sum cases: under 8, a block of 128, halves above it
WIDTHS = [1, 3, 7, 8, 9, 127, 128, 129, 255, 256, 257, 513, 1000, 4100]


def _args(rng, rows, width, dtype, offset=3.0):
    x = (rng.standard_normal((rows, width)) * 2.5 + offset).astype(dtype)
    gamma = rng.standard_normal(width).astype(dtype)
    beta = rng.standard_normal(width).astype(dtype)
    return x, gamma, beta


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", WIDTHS)
def test_layernorm_forward_bitwise(dtype, width, rng):
    x, gamma, beta = _args(rng, 5, width, dtype)
    got = [np.empty_like(x), np.empty_like(x), np.empty(5)]
    want = [np.empty_like(x), np.empty_like(x), np.empty(5)]
    CPU.layernorm_forward(x, gamma, beta, 1e-5, *got)
    REF.layernorm_forward(x, gamma, beta, 1e-5, *want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [1, 7, 64, 513])
def test_batchnorm_inference_bitwise(dtype, width, rng):
    x, gamma, beta = _args(rng, 9, width, dtype)
    mean = rng.standard_normal(width).astype(dtype)
    var = (rng.random(width) * 3).astype(dtype)
    var[0] = 0.0  # eps alone under the root
    got = [np.empty_like(x), np.empty_like(x)]
    want = [np.empty_like(x), np.empty_like(x)]
    CPU.batchnorm_inference(x, gamma, beta, mean, var, 1e-3, *got)
    REF.batchnorm_inference(x, gamma, beta, mean, var, 1e-3, *want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)


def test_non_finite_values_propagate_as_in_the_reference(rng):
    x, gamma, beta = _args(rng, 3, 40, np.float32)
    x[1, 5] = np.nan
    x[2, 7] = np.inf
    got = [np.empty_like(x), np.empty_like(x), np.empty(3)]
    want = [np.empty_like(x), np.empty_like(x), np.empty(3)]
    with np.errstate(all="ignore"):
        CPU.layernorm_forward(x, gamma, beta, 1e-5, *got)
        REF.layernorm_forward(x, gamma, beta, 1e-5, *want)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.isfinite(got[0][0]).all() and np.isnan(got[0][1]).all()


@pytest.mark.parametrize("op", ["layernorm_forward", "batchnorm_inference"])
def test_cpu_backend_dispatches_to_the_kernel_and_falls_back_for_views(op, monkeypatch,
                                                                       rng):
    calls = []
    fn = getattr(norm_kernels, op)
    monkeypatch.setattr(norm_kernels, op, lambda *a: (calls.append(op), fn(*a))[1])
    x, gamma, beta = _args(rng, 6, 10, np.float32)
    stats = (np.zeros(10, np.float32), np.ones(10, np.float32))
    for arr in (x, x[:, ::2].copy(order="F")[:, :5]):  # C-contiguous; then a view
        g, b = gamma[: arr.shape[1]], beta[: arr.shape[1]]
        extra = (np.empty(arr.shape[0]),) if op == "layernorm_forward" else ()
        args = (arr, g, b) + ((1e-5,) if op == "layernorm_forward" else
                              (stats[0][: arr.shape[1]], stats[1][: arr.shape[1]], 1e-5))
        want = [np.empty(arr.shape, np.float32), np.empty(arr.shape, np.float32), *extra]
        got = [np.empty(arr.shape, np.float32), np.empty(arr.shape, np.float32), *extra]
        getattr(CPU, op)(*args, *got)
        getattr(REF, op)(*args, *want)
        np.testing.assert_array_equal(got[0], want[0])
    assert calls == [op]  # the view took the reference's NumPy path


def test_a_layernorm_model_predicts_the_reference_bits(rng):
    from mlpx.layers import BatchNorm, Dense, LayerNorm

    x = rng.standard_normal((3, 20)).astype(np.float32)
    outs = []
    for backend in ("cpu", "reference"):
        model = mlpx.Sequential([Dense(16, activation="relu"), LayerNorm(), Dense(12),
                                 BatchNorm(), Dense(4)], input_dim=20, seed=0, backend=backend)
        outs.append(model.predict(x))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)  # the GEMMs differ
