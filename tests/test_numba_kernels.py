"""Every Numba kernel of the cpu backend against the reference backend (plain NumPy).

Bitwise where both sides do the same float64 arithmetic and round once (identity/bias add,
relu, leaky_relu, step, prelu, the derivatives computed from the output, mse/l1 gradients,
the sgd update). Where a transcendental is involved the platforms' functions differ: Numba
calls the C library's exp/tanh/erf/log1p/expm1, NumPy its own SIMD exp/tanh and SciPy's erf.
In float32 (the default) every result is computed in float64 and rounded once, and the two
sides agree within 2 ULP (measured: bitwise). In float64 the library differences show: exp-based
sigmoid/elu agree within 2 ULP; tanh and softplus within 4 (measured 3: NumPy's SIMD tanh and
Numba's tanh are each 1-2 ULP from the exact value, in opposite directions); silu = x *
sigmoid(x) within 4; and where a formula subtracts nearly equal terms (gelu's
1 + erf(x/sqrt 2) for x << 0, silu's and gelu's derivatives near their zeros) the bound is 4
ULP of the terms' magnitude instead of the small result's.
Reductions (loss sums, the PReLU slope gradient) sum in a different order: relative 1e-13.
"""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx import activations as A
from mlpx.backends import numba_kernels as K

CPU = mlpx.get_backend("cpu")
REF = mlpx.get_backend("reference")
DTYPES = [np.float32, np.float64]

BITWISE = ["identity", "relu", "leaky_relu", "step"]
TRANSCENDENTAL = ["sigmoid", "tanh", "elu", "gelu", "silu", "softplus"]
ACTS = {
    "identity": A.Identity(), "relu": A.ReLU(), "leaky_relu": A.LeakyReLU(0.1),
    "step": A.Step(), "sigmoid": A.Sigmoid(), "tanh": A.Tanh(), "elu": A.ELU(0.7),
    "gelu": A.GELU(), "silu": A.SiLU(), "softplus": A.Softplus(),
}
# forward: (max ULP, measured against the magnitude of |z| (cancellation) or of the result)
FWD64 = {"sigmoid": (2, None), "tanh": (4, None), "elu": (2, None), "softplus": (4, None),
         "silu": (4, None), "gelu": (4, "z")}
# backward in float64 (derivatives from the output are pure arithmetic: sigmoid, tanh, elu)
BWD64 = {"sigmoid": (0, None), "tanh": (0, None), "elu": (0, None), "softplus": (4, None),
         "silu": (4, "gz"), "gelu": (4, "gz")}


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Number of representable values between a and b (same dtype; +0 == -0)."""
    assert a.dtype == b.dtype
    itype = np.int64 if a.dtype == np.float64 else np.int32
    mask = np.iinfo(itype).max

    def ordered(x):
        i = x.view(itype).astype(np.int64)
        return np.where(i < 0, -(i & mask), i)

    return np.abs(ordered(a) - ordered(b))


def assert_ulp(a, b, max_ulp: int, scale: np.ndarray | None = None) -> None:
    assert np.isfinite(a).all() == np.isfinite(b).all()
    if scale is None:
        d = ulp_distance(a, b)
        assert d.max() <= max_ulp, f"{d.max()} ULP apart (allowed {max_ulp})"
    else:  # cancellation: the error is relative to the terms, not to the small result
        bound = max_ulp * np.spacing(np.maximum(np.abs(scale), np.abs(b)).astype(a.dtype))
        excess = np.abs(a.astype(np.float64) - b.astype(np.float64)) - bound
        assert excess.max() <= 0


def _data(rng, dtype, shape=(64, 33)):
    z = (rng.standard_normal(shape) * 4).astype(dtype)
    z[0, :5] = [0.0, -0.0, 1e-30, -1e-30, 30.0]  # zero, signed zero, tiny, saturating
    b = rng.standard_normal(shape[1]).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    return z, b, dy


def _both_forward(act, z, b, slopes=None):
    out = {}
    for name, ops in (("cpu", CPU), ("ref", REF)):
        zz = z.copy()
        y = np.empty_like(z)
        ops.bias_act(zz, b, act, y, slopes=slopes)
        out[name] = (zz, y)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BITWISE + TRANSCENDENTAL)
def test_bias_act_and_backward(name, dtype, rng):
    act = ACTS[name]
    z, b, dy = _data(rng, dtype)
    r = _both_forward(act, z, b)
    zc, yc = r["cpu"]
    zr, yr = r["ref"]
    np.testing.assert_array_equal(zc, zr)  # the bias add is bitwise everywhere
    if name in BITWISE or dtype == np.float32:
        # float32: the float64 results differ by < 1 float32 ULP, so rounding agrees or
        # lands on neighbours; measured 0 here
        assert_ulp(yc, yr, 0 if name in BITWISE else 2)
    else:
        n, scale = FWD64[name]
        assert_ulp(yc, yr, n, zr if scale == "z" else None)
    if name == "step":
        with pytest.raises(ValueError, match="step activation"):
            CPU.act_backward(dy, zr, yr, act, np.empty_like(z))
        return
    gc, gr = np.empty_like(z), np.empty_like(z)
    CPU.act_backward(dy, zr, yr, act, gc)  # same (z, y) inputs: only the kernel differs
    REF.act_backward(dy, zr, yr, act, gr)
    if name in BITWISE or dtype == np.float32:
        assert_ulp(gc, gr, 0 if name in BITWISE else 2)
    else:
        n, scale = BWD64[name]
        gz = np.abs(dy.astype(np.float64)) * np.maximum(1.0, np.abs(zr))
        assert_ulp(gc, gr, n, gz if scale == "gz" else None)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", BITWISE + TRANSCENDENTAL)
def test_act_forward_kernel_without_bias(name, dtype, rng):
    act = ACTS[name]
    z, _, _ = _data(rng, dtype)
    out = np.empty_like(z)
    K.act_forward(z, act.code, act.alpha, out)
    expected = act.formula(REF, z.astype(np.float64)).astype(dtype)
    if name in BITWISE or dtype == np.float32:
        assert_ulp(out, expected, 0 if name in BITWISE else 2)
    else:
        n, scale = FWD64[name]
        assert_ulp(out, expected, n, z if scale == "z" else None)


@pytest.mark.parametrize("dtype", DTYPES)
def test_prelu_kernels_bitwise(dtype, rng):
    z, b, dy = _data(rng, dtype)
    slopes = rng.uniform(0.0, 0.5, z.shape[1]).astype(dtype)
    r = _both_forward(A.PReLU(), z, b, slopes)
    np.testing.assert_array_equal(r["cpu"][0], r["ref"][0])
    np.testing.assert_array_equal(r["cpu"][1], r["ref"][1])
    zr = r["ref"][0]
    gc, gr = np.empty_like(z), np.empty_like(z)
    dsc, dsr = np.empty_like(slopes), np.empty_like(slopes)
    CPU.prelu_backward(dy, zr, slopes, gc, dsc)
    REF.prelu_backward(dy, zr, slopes, gr, dsr)
    np.testing.assert_array_equal(gc, gr)
    # a batch sum: Numba accumulates in row order, NumPy pairwise, both in float64
    np.testing.assert_allclose(dsc, dsr, rtol=2e-7 if dtype == np.float32 else 1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_fast_path_bitwise(dtype, rng):
    z, b, dy = _data(rng, dtype)
    zc, yc = z.copy(), np.empty_like(z)
    K.bias_relu(zc, b, yc)
    zr, yr = z.copy(), np.empty_like(z)
    REF.bias_act(zr, b, A.ReLU(), yr)
    np.testing.assert_array_equal(zc, zr)
    np.testing.assert_array_equal(yc, yr)
    gc, gr = np.empty_like(z), np.empty_like(z)
    K.relu_backward(dy, zr, gc)
    REF.act_backward(dy, zr, yr, A.ReLU(), gr)
    np.testing.assert_array_equal(gc, gr)


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


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_update_bitwise(dtype, rng):
    p = rng.standard_normal((30, 20)).astype(dtype)
    g = rng.standard_normal((30, 20)).astype(dtype)
    pc, pr = p.copy(), p.copy()
    CPU.sgd_update(pc, g, 0.0137)
    REF.sgd_update(pr, g, 0.0137)
    np.testing.assert_array_equal(pc, pr)
    assert not np.array_equal(pc, p)


def test_cpu_backend_dispatches_to_the_kernels(monkeypatch, rng):
    """The comparisons above would be vacuous if the cpu backend fell back to the reference."""
    calls: list[str] = []
    for name in ("bias_relu", "relu_backward", "bias_act", "act_backward", "bias_prelu",
                 "prelu_backward", "softmax_xent", "bce_logits", "mse", "l1", "sgd_update"):
        fn = getattr(K, name)
        monkeypatch.setattr(K, name, lambda *a, _f=fn, _n=name: (calls.append(_n), _f(*a))[1])
    z, b, dy = _data(rng, np.float32)
    y = np.empty_like(z)
    CPU.bias_act(z, b, A.ReLU(), y)
    CPU.act_backward(dy, z, y, A.ReLU(), y)
    CPU.bias_act(z, b, A.Tanh(), y)
    CPU.act_backward(dy, z, y, A.Tanh(), y)
    s = np.full(z.shape[1], 0.25, np.float32)
    CPU.bias_act(z, b, A.PReLU(), y, slopes=s)
    CPU.prelu_backward(dy, z, s, y, s.copy())
    CPU.softmax_cross_entropy(z, np.zeros(z.shape[0], np.int64), y)
    for m in ("bce_with_logits", "mse", "l1"):
        getattr(CPU, m)(z, dy, y)
    CPU.sgd_update(z, dy, 0.1)
    assert calls == ["bias_relu", "relu_backward", "bias_act", "act_backward", "bias_prelu",
                     "prelu_backward", "softmax_xent", "bce_logits", "mse", "l1", "sgd_update"]


def test_non_contiguous_inputs_fall_back_to_the_reference(rng):
    z = rng.standard_normal((8, 6))
    view = z[:, ::2]  # not C-contiguous: the kernels assume row-major rows
    yc, yr = np.empty_like(view), np.empty_like(view)
    CPU.bias_act(view.copy(order="F"), np.zeros(3), A.Sigmoid(), yc)
    REF.bias_act(view.copy(), np.zeros(3), A.Sigmoid(), yr)
    np.testing.assert_array_equal(yc, yr)
