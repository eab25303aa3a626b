"""The vectorised tanh, sigmoid, ELU and SiLU rows of float32 activations (mlpx.backends.
vector_math_kernels): rounded to float32, the C library's results, special values included."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlpx.backends import vector_math_kernels as vm

SPECIAL = [0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324, 1e-300, 19.0, 19.1, 20.0,
           -87.3, -88.8, -103.9, -104.0, -110.0, -111.0, 87.0, 200.0, -745.0, 700.0]


def _c_tanh(x):
    return np.array([math.tanh(v) for v in x])


def _c_sigmoid(x):
    out = []
    for v in x:
        if v != v:
            out.append(v)
        elif v >= 0:
            out.append(1.0 / (1.0 + math.exp(-v)))
        else:
            e = math.exp(v)
            out.append(e / (1.0 + e))
    return np.array(out)


def _c_elu(x, alpha=0.7):
    """The reference's formula (np.minimum: +0.0 for -0.0) with the C library's expm1."""
    return np.array([v if v > 0 else alpha * math.expm1(float(np.minimum(v, 0.0))) for v in x])


def _c_silu(x):
    return x * _c_sigmoid(x)


ROWS = {
    "tanh": (vm.tanh_row, _c_tanh),
    "sigmoid": (vm.sigmoid_row, _c_sigmoid),
    "elu": (lambda x, out, work: vm.elu_row(x, 0.7, out, work), _c_elu),
    "silu": (vm.silu_row, _c_silu),
}


@pytest.mark.parametrize("name", sorted(ROWS))
@pytest.mark.parametrize("scale", [1e-6, 0.01, 0.3, 1.0, 4.0, 30.0, 200.0])
def test_float32_results_are_the_c_librarys(name, scale):
    x = np.random.default_rng(int(scale * 1000) + len(name)).standard_normal(20000) * scale
    x = np.concatenate([x, SPECIAL, [-1000.0, -120.0, -109.0]])
    row, reference = ROWS[name]
    out = np.empty(x.shape[0], np.float32)
    row(x, out, np.empty((5, x.shape[0])))
    with np.errstate(invalid="ignore", over="ignore"):
        want = reference(x).astype(np.float32)
    same = (out == want) & (np.signbit(out) == np.signbit(want))
    assert np.all(same | (np.isnan(out) & np.isnan(want))), x[~same][:5]


def test_exp_parts_are_accurate_in_float64():
    """e^y = s q + s within a few float64 ulps over the range the rows use."""
    y = np.linspace(-110.0, 40.0, 30001)
    t, q = np.empty_like(y), np.empty_like(y)
    bits = np.empty(y.shape[0], np.int64)
    vm.expm1_parts(y, t, bits, q)
    s = bits.view(np.float64)
    got = s * q + s
    want = np.exp(y)
    assert np.max(np.abs(got - want) / np.spacing(want)) <= 4
