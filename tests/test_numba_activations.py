"""Every Numba activation kernel of the cpu backend against the reference (plain NumPy).

The activations come from the registry (`mlpx.activations.builtins()`): a new built-in with
a scalar kernel is tested here without editing this file (with the loosest bounds below until
its own are measured).

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
The PReLU slope gradient sums in a different order: relative 1e-13.
"""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import assert_ulp

import mlpx
from mlpx import activations
from mlpx.backends import numba_activations

CPU = mlpx.get_backend("cpu")
REF = mlpx.get_backend("reference")
DTYPES = [np.float32, np.float64]

#: every built-in with elementwise kernels, parametrised ones away from their defaults
NON_DEFAULT = {"leaky_relu": activations.LeakyReLU(0.1), "elu": activations.ELU(0.7)}
ACTS = {c.name: NON_DEFAULT.get(c.name) or c() for c in activations.builtins()
        if activations.scalar_kernel(c()) is not None}
#: pure arithmetic, no library function: bitwise on every backend
BITWISE = {"identity", "relu", "leaky_relu", "step"}
# forward: (max ULP, measured against the magnitude of |z| (cancellation) or of the result)
FWD64 = {"sigmoid": (2, None), "tanh": (4, None), "elu": (2, None), "softplus": (4, None),
         "silu": (4, None), "gelu": (4, "z")}
# backward in float64 (derivatives from the output are pure arithmetic: sigmoid, tanh, elu)
BWD64 = {"sigmoid": (0, None), "tanh": (0, None), "elu": (0, None), "softplus": (4, None),
         "silu": (4, "gz"), "gelu": (4, "gz")}
LOOSEST = (4, "z")  # an activation whose bounds were not measured yet


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
@pytest.mark.parametrize("name", sorted(ACTS))
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
        n, scale = FWD64.get(name, LOOSEST)
        assert_ulp(yc, yr, n, zr if scale == "z" else None)
    if not act.differentiable:
        with pytest.raises(ValueError, match="step activation"):
            CPU.act_backward(dy, zr, yr, act, np.empty_like(z))
        return
    gc, gr = np.empty_like(z), np.empty_like(z)
    CPU.act_backward(dy, zr, yr, act, gc)  # same (z, y) inputs: only the kernel differs
    REF.act_backward(dy, zr, yr, act, gr)
    if name in BITWISE or dtype == np.float32:
        assert_ulp(gc, gr, 0 if name in BITWISE else 2)
    else:
        n, scale = BWD64.get(name, LOOSEST)
        gz = np.abs(dy.astype(np.float64)) * np.maximum(1.0, np.abs(zr))
        assert_ulp(gc, gr, n, gz if scale in ("gz", "z") else None)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ACTS))
def test_act_forward_kernel_without_bias(name, dtype, rng):
    act = ACTS[name]
    z, _, _ = _data(rng, dtype)
    out = np.empty_like(z)
    numba_activations.act_forward(z, act.code, act.alpha, out)
    inplace = z.copy()
    numba_activations.act_forward_(inplace, act.code, act.alpha)
    np.testing.assert_array_equal(inplace, out)
    expected = act.formula(REF, z.astype(np.float64)).astype(dtype)
    if name in BITWISE or dtype == np.float32:
        assert_ulp(out, expected, 0 if name in BITWISE else 2)
    else:
        n, scale = FWD64.get(name, LOOSEST)
        assert_ulp(out, expected, n, z if scale == "z" else None)


@pytest.mark.parametrize("dtype", DTYPES)
def test_prelu_kernels_bitwise(dtype, rng):
    z, b, dy = _data(rng, dtype)
    slopes = rng.uniform(0.0, 0.5, z.shape[1]).astype(dtype)
    r = _both_forward(activations.PReLU(), z, b, slopes)
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


class _ParallelScanNumPy:
    """NumPy whose cumsum is a parallel scan (recursive doubling, as on a GPU): the same
    sums, added in another order, so rounded differently."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def cumsum(a, axis=0):
        a = np.moveaxis(np.array(a, dtype=np.float64), axis, 0)
        step = 1
        while step < a.shape[0]:
            a[step:] = a[step:] + a[:-step].copy()
            step *= 2
        return np.moveaxis(a, 0, axis)


def test_reference_prelu_slope_sum_keeps_its_order_on_any_array_module(rng):
    """The reference's fixed summation order does not rest on the array module's cumsum
    (CuPy's is a parallel scan): the reference on such a module stays bitwise equal to the
    reference on NumPy and to the cpu kernels."""
    from mlpx.backends.base import Backend

    class ParallelScanReference(Backend):
        xp = _ParallelScanNumPy()

    n, m = 1000, 7  # 16 chunks of 64 rows: enough terms for the order to show (in float64)
    dy, z = rng.standard_normal((n, m)), rng.standard_normal((n, m)) * 1e3
    slopes = np.full(m, 0.25)
    got = {}
    for label, ops in (("ref", REF), ("scan", ParallelScanReference()), ("cpu", CPU)):
        out, ds = np.empty_like(z), np.empty(m)
        ops.prelu_backward(dy, z, slopes, out, ds)
        got[label] = ds
    np.testing.assert_array_equal(got["scan"], got["ref"])
    np.testing.assert_array_equal(got["cpu"], got["ref"])


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_fast_path_bitwise(dtype, rng):
    z, b, dy = _data(rng, dtype)
    zc, yc = z.copy(), np.empty_like(z)
    numba_activations.bias_relu(zc, b, yc)
    zr, yr = z.copy(), np.empty_like(z)
    REF.bias_act(zr, b, activations.ReLU(), yr)
    np.testing.assert_array_equal(zc, zr)
    np.testing.assert_array_equal(yc, yr)
    gc, gr = np.empty_like(z), np.empty_like(z)
    numba_activations.relu_backward(dy, zr, gc)
    REF.act_backward(dy, zr, yr, activations.ReLU(), gr)
    np.testing.assert_array_equal(gc, gr)


def test_cpu_backend_dispatches_to_the_kernels(monkeypatch, rng):
    """The comparisons above would be vacuous if the cpu backend fell back to the reference."""
    calls: list[str] = []
    for name in ("bias_relu", "relu_backward", "bias_act", "act_backward", "bias_prelu",
                 "prelu_backward", "relu_forward", "act_forward_", "prelu_forward",
                 "relu_forward_"):
        fn = getattr(numba_activations, name)
        monkeypatch.setattr(numba_activations, name,
                            lambda *a, _f=fn, _n=name: (calls.append(_n), _f(*a))[1])
    z, b, dy = _data(rng, np.float32)
    y = np.empty_like(z)
    CPU.bias_act(z, b, activations.ReLU(), y)
    CPU.act_backward(dy, z, y, activations.ReLU(), y)
    CPU.bias_act(z, b, activations.Tanh(), y)
    CPU.act_backward(dy, z, y, activations.Tanh(), y)
    s = np.full(z.shape[1], 0.25, np.float32)
    CPU.bias_act(z, b, activations.PReLU(), y, slopes=s)
    CPU.prelu_backward(dy, z, s, y, s.copy())
    # without a bias (Dense(use_bias=False), the PReLU layer): kernels too, not the reference
    CPU.bias_act(z, None, activations.ReLU(), y)
    CPU.bias_act(y, None, activations.Tanh(), y)
    CPU.bias_act(z, None, activations.PReLU(), y, slopes=s)
    CPU.bias_act(y, None, activations.ReLU(), y)
    assert calls == ["bias_relu", "relu_backward", "bias_act", "act_backward", "bias_prelu",
                     "prelu_backward", "relu_forward", "act_forward_", "prelu_forward",
                     "relu_forward_"]


def test_non_contiguous_inputs_fall_back_to_the_reference(rng):
    z = rng.standard_normal((8, 6))
    view = z[:, ::2]  # not C-contiguous: the kernels assume row-major rows
    yc, yr = np.empty_like(view), np.empty_like(view)
    CPU.bias_act(view.copy(order="F"), np.zeros(3), activations.Sigmoid(), yc)
    REF.bias_act(view.copy(), np.zeros(3), activations.Sigmoid(), yr)
    np.testing.assert_array_equal(yc, yr)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bias_free_paths_match_the_reference(dtype, rng):
    z, _, _ = _data(rng, dtype)
    slopes = rng.uniform(0.0, 0.5, z.shape[1]).astype(dtype)
    for act in [*ACTS.values(), activations.PReLU()]:
        s = slopes if act.has_parameters else None
        yc, yr = np.empty_like(z), np.empty_like(z)
        zc = z.copy()
        CPU.bias_act(zc, None, act, yc, slopes=s)
        REF.bias_act(z.copy(), None, act, yr, slopes=s)
        np.testing.assert_array_equal(zc, z)  # z is read only without a bias
        if not act.has_parameters:  # in place, as Dense(use_bias=False) calls it
            zi = z.copy()
            CPU.bias_act(zi, None, act, zi)
            np.testing.assert_array_equal(zi, yc)
        if act.name in BITWISE or act.has_parameters or dtype == np.float32:
            assert_ulp(yc, yr, 0 if act.name in BITWISE or act.has_parameters else 2)
        else:
            n, scale = FWD64.get(act.name, LOOSEST)
            assert_ulp(yc, yr, n, z if scale == "z" else None)


def test_user_activations_never_take_a_kernel(rng):
    """A subclass of a built-in, or a class that copies a built-in's code, runs its own
    formula: no kernel of another function silently replaces it."""

    class Cube(activations.Activation):
        code = activations.ReLU.code  # copied by mistake: must be ignored

        def formula(self, ops, z):
            return z * z * z

        def derivative(self, ops, dy, z, y):
            return dy * 3.0 * z * z

    class ShiftedReLU(activations.ReLU):
        def formula(self, ops, z):
            return ops.xp.where(z > 1.0, z, 0.0)

    z, b, dy = _data(rng, np.float64)
    for act, f in ((Cube(), lambda v: v ** 3), (ShiftedReLU(), lambda v: np.where(v > 1, v, 0))):
        assert activations.kernel_code(act) is None
        y = np.empty_like(z)
        zc = z.copy()
        CPU.bias_act(zc, b, act, y)
        np.testing.assert_allclose(y, f(z + b), rtol=1e-12)


# --- the derivative fused with the bias gradient -------------------------------------------
@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("shape", [(64, 33), (1, 7), (0, 5), (257, 1024)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ACTS))
def test_act_backward_bias_grad_is_the_two_ops_bit_for_bit(name, dtype, shape, in_place, rng):
    """One pass gives the delta of act_backward and the column sums of NumPy's
    `sum(axis=0)` (row after row in the array's dtype): the fused path changes no bit."""
    act = ACTS[name]
    z, b, dy = _data(rng, dtype, shape) if shape[0] else (
        np.zeros(shape, dtype), np.zeros(shape[1], dtype), np.zeros(shape, dtype))
    if shape[0] > 1:
        dy[:, 0] = -0.0  # NumPy's sums start from +0.0: a column of -0.0 sums to +0.0
        dy[1, 1] = np.finfo(dtype).max
        dy[2 % shape[0], 1] = np.finfo(dtype).max  # overflow to inf in the running sum
    y = np.empty_like(z)
    CPU.bias_act(z, b, act, y)
    if not act.differentiable:  # the same explanatory error as act_backward's
        with pytest.raises(ValueError, match="cannot be trained by backpropagation"):
            CPU.act_backward_bias_grad(dy, z, y, act, dy.copy(), np.empty(shape[1], dtype))
        return
    want_delta = np.empty_like(dy)
    CPU.act_backward(dy, z, y, act, want_delta)
    want_bias = want_delta.sum(axis=0)
    got_bias = np.full(shape[1], np.nan, dtype)
    d = dy.copy()
    out = d if in_place else np.empty_like(d)
    assert CPU.act_backward_bias_grad(d, z, y, act, out, got_bias) is out
    np.testing.assert_array_equal(out, want_delta)
    assert got_bias.tobytes() == want_bias.tobytes()  # signed zeros included
    if not in_place:
        np.testing.assert_array_equal(d, dy)  # dy is only read


def test_act_backward_bias_grad_default_is_act_backward_then_sum_rows(rng):
    """Backends without a fused kernel (reference, cuda) run the two ops."""
    z, b, dy = _data(rng, np.float64)
    act = ACTS["tanh"]
    y = np.empty_like(z)
    REF.bias_act(z, b, act, y)
    delta, bias = np.empty_like(dy), np.empty(z.shape[1])
    REF.act_backward_bias_grad(dy, z, y, act, delta, bias)
    want = np.empty_like(dy)
    REF.act_backward(dy, z, y, act, want)
    np.testing.assert_array_equal(delta, want)
    np.testing.assert_array_equal(bias, want.sum(axis=0))
