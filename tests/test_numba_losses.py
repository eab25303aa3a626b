"""The Numba loss kernels of the cpu backend against the reference backend (plain NumPy).

Gradients are bitwise where both sides do the same float64 arithmetic and round once (mse,
l1); where exp/log are involved the platforms' functions differ by a few ULP. Loss values
are sums in a different order: relative 1e-13.
"""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import assert_ulp

import mlpx
from mlpx.backends import numba_losses

CPU = mlpx.get_backend("cpu")
REF = mlpx.get_backend("reference")
DTYPES = [np.float32, np.float64]


def _loss_pair(method: str, out, target):
    gc, gr = np.empty_like(out), np.empty_like(out)
    vc = float(getattr(CPU, method)(out, target, gc))
    vr = float(getattr(REF, method)(out, target, gr))
    vc_only = float(getattr(CPU, method)(out, target))  # without a gradient: same value
    assert vc_only == vc
    return vc, vr, gc, gr


@pytest.mark.parametrize("dtype", DTYPES)
def test_mse_and_l1_kernels(dtype, rng):
    y = rng.standard_normal((50, 7)).astype(dtype)
    t = rng.standard_normal((50, 7)).astype(dtype)
    t[0, 0] = y[0, 0]  # l1's sign(0) = 0
    for method in ("mse", "l1"):
        vc, vr, gc, gr = _loss_pair(method, y, t)
        np.testing.assert_array_equal(gc, gr)  # same arithmetic, one rounding
        assert vc == pytest.approx(vr, rel=1e-13)  # sums in a different order
    assert gc[0, 0] == 0.0


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_kernel(dtype, rng):
    x = (rng.standard_normal((40, 5)) * 6).astype(dtype)
    x[0, :2] = [1e4, -1e4]
    t = rng.integers(0, 2, size=x.shape).astype(dtype)
    vc, vr, gc, gr = _loss_pair("bce_with_logits", x, t)
    assert vc == pytest.approx(vr, rel=1e-13)
    # sigmoid(x) - t: sigmoid's exp differs by <= 2 ULP; the subtraction of t = 1 can cancel,
    # so the bound is 2 ULP of the terms (magnitude <= 1) divided by the mean's denominator
    assert_ulp(gc, gr, 2, np.full(x.shape, 1.0 / x.size))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_kernel(dtype, rng):
    z = (rng.standard_normal((40, 10)) * 5).astype(dtype)
    z[0] = 1e4  # saturating row: log-sum-exp keeps it finite
    z[1, 3] = -1e4
    labels = rng.integers(0, 10, size=40)
    gc, gr = np.empty_like(z), np.empty_like(z)
    vc = float(CPU.softmax_cross_entropy(z, labels, gc))
    vr = float(REF.softmax_cross_entropy(z, labels, gr))
    assert np.isfinite(vc) and vc == pytest.approx(vr, rel=1e-13)
    # p = exp(z - lse): lse is summed in a different order with a different exp/log, so it
    # carries a few ULP of |lse| (~ the row's largest |z|), which z - lse passes on to p;
    # p - 1 at the label can cancel. Bound: 4 ULP of max(1, |z|_row) / n.
    row = np.maximum(1.0, np.abs(z.astype(np.float64)).max(axis=1, keepdims=True))
    assert_ulp(gc, gr, 4, np.broadcast_to(row / z.shape[0], z.shape))


def test_cpu_backend_dispatches_to_the_loss_kernels(monkeypatch, rng):
    """The comparisons above would be vacuous if the cpu backend fell back to the reference."""
    calls: list[str] = []
    for name in ("softmax_xent", "bce_logits", "mse", "l1"):
        fn = getattr(numba_losses, name)
        monkeypatch.setattr(numba_losses, name,
                            lambda *a, _f=fn, _n=name: (calls.append(_n), _f(*a))[1])
    z = rng.standard_normal((8, 5)).astype(np.float32)
    t = rng.standard_normal((8, 5)).astype(np.float32)
    g = np.empty_like(z)
    CPU.softmax_cross_entropy(z, np.zeros(z.shape[0], np.int64), g)
    for m in ("bce_with_logits", "mse", "l1"):
        getattr(CPU, m)(z, t, g)
    assert calls == ["softmax_xent", "bce_logits", "mse", "l1"]
