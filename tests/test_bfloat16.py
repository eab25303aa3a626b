"""The bfloat16 rounding contract (mlpx.backends.bfloat16) and the mixed matrix product."""

from __future__ import annotations

import numpy as np
import pytest

from mlpx.backends import get_backend
from mlpx.backends.bfloat16 import (
    MixedBFloat16Ops,
    from_bfloat16_bits,
    round_to_bfloat16,
    to_bfloat16_bits,
)


def _f32(bits):
    return np.array(bits, dtype=np.uint32).view(np.float32)


def test_ties_round_to_even():
    one = 1.0
    ulp = 2.0**-7  # bfloat16 spacing at 1
    x = np.array([one + ulp / 2, one + 3 * ulp / 2, one + ulp / 2 + 2**-20, -(one + ulp / 2)],
                 np.float32)
    np.testing.assert_array_equal(round_to_bfloat16(x),
                                  [one, one + 2 * ulp, one + ulp, -one])


def test_nan_stays_nan_and_overflow_goes_to_infinity():
    x = _f32([0x7FFFFFFF, 0xFFFFFFFF, 0x7F800001, 0x7F800000, 0xFF800000, 0x7F7FFFFF])
    r = round_to_bfloat16(x)
    assert np.isnan(r[:3]).all()
    assert np.signbit(r[1]) and not np.signbit(r[0])
    np.testing.assert_array_equal(r[3:], [np.inf, -np.inf, np.inf])


def test_bits_round_trip_exactly():
    bits = np.arange(0, 2**16, dtype=np.uint32).astype(np.uint16)
    values = from_bfloat16_bits(bits)
    finite = ~np.isnan(values)
    np.testing.assert_array_equal(to_bfloat16_bits(values)[finite], bits[finite])
    np.testing.assert_array_equal(round_to_bfloat16(values)[finite], values[finite])


def test_rounding_matches_ml_dtypes_bit_for_bit():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(0)
    x = np.concatenate([
        rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
        rng.standard_normal(10_000).astype(np.float32),
        _f32([0, 0x80000000, 1, 0x00008000, 0x00018000, 0x7F7F8000, 0x7F7FFFFF]),
    ])
    ours = to_bfloat16_bits(x)
    with np.errstate(invalid="ignore"):  # ml_dtypes warns on casting NaN
        theirs = x.astype(ml_dtypes.bfloat16).view(np.uint16)
    nan = np.isnan(x)
    np.testing.assert_array_equal(ours[~nan], theirs[~nan])
    assert np.isnan(from_bfloat16_bits(ours[nan])).all()


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
def test_mixed_matmul_rounds_operands_and_accumulates_in_float32(backend, trans_a, trans_b):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((40, 300)).astype(np.float32)
    b = rng.standard_normal((300, 24)).astype(np.float32)
    if trans_a:
        a = np.ascontiguousarray(a.T)
    if trans_b:
        b = np.ascontiguousarray(b.T)
    ops = MixedBFloat16Ops(get_backend(backend))
    out = np.empty((40, 24), np.float32)
    ops.matmul(a, b, out, trans_a=trans_a, trans_b=trans_b)

    def op(x, t):
        x = round_to_bfloat16(x).astype(np.float64)
        return x.T if t else x

    exact = op(a, trans_a) @ op(b, trans_b)
    k = 300
    # float32 accumulation of exact products: at most k * eps32 relative to sum |a||b|
    bound = k * 2.0**-24 * (np.abs(op(a, trans_a)) @ np.abs(op(b, trans_b)))
    assert (np.abs(out - exact) <= bound).all()
    # and it is not the float32 product: the operands were rounded
    plain = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    assert np.abs(out - plain).max() > 100 * np.abs(out - exact).max()
    # the operands themselves are left alone
    assert a.dtype == np.float32 and not np.array_equal(a, round_to_bfloat16(a))


def test_mixed_ops_delegate_everything_else():
    base = get_backend("cpu")
    ops = MixedBFloat16Ops(base)
    assert ops.name == "cpu" and ops.xp is np and ops.wrapped is base
    assert ops.sum_rows.__self__ is base


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
def test_cpu_emulated_product_is_the_reference_bit_for_bit(monkeypatch, trans_a, trans_b):
    """The cpu backend's compiled rounding into per-thread copies computes what the
    reference's NumPy rounding does, NaN, infinity and ties included."""
    from mlpx.backends import _bf16_gemm
    from mlpx.backends.base import Backend
    from mlpx.backends.cpu import CPUBackend

    monkeypatch.setitem(_bf16_gemm._state, "choice", "emulated")
    rng = np.random.default_rng(7)
    a = rng.standard_normal((33, 47)).astype(np.float32)
    b = rng.standard_normal((47, 29)).astype(np.float32)
    a[0, 0], a[1, 1], b[2, 2] = np.nan, np.inf, np.float32(1 + 2 ** -8)  # a tie
    a_op = np.ascontiguousarray(a.T) if trans_a else a
    b_op = np.ascontiguousarray(b.T) if trans_b else b
    ops = CPUBackend()
    got = np.empty((33, 29), np.float32)
    want = np.empty((33, 29), np.float32)
    # NaN operands: whichever BLAS the measured route picks here may warn of them
    with np.errstate(invalid="ignore"):
        ops.matmul_bf16(a_op, b_op, got, trans_a, trans_b)
        Backend.matmul_bf16(ops, a_op, b_op, want, trans_a, trans_b)
        assert got.tobytes() == want.tobytes()
        ops.matmul_bf16(a_op.T.T[:, :], b_op, got, trans_a, trans_b)  # the copies are reused
        assert got.tobytes() == want.tobytes()


#: the activations whose derivative reads bfloat16 saved activations under the policy
ROUNDED = ["sigmoid", "tanh", "elu", "gelu", "silu", "softplus"]


def _saved_values():
    rng = np.random.default_rng(2)
    z = np.concatenate([rng.standard_normal(3000) * 4, np.linspace(-30, 30, 3000)])
    return z.astype(np.float32).reshape(-1, 3)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("name", [*ROUNDED, "relu", "leaky_relu"])
def test_derivative_reads_the_saved_activations_rounded(backend, name):
    from mlpx import activations

    act = activations.get(name)
    base = get_backend(backend)
    ops = MixedBFloat16Ops(base)
    z = _saved_values()
    y = np.empty_like(z)
    base.bias_act(z.copy(), None, act, out=y)
    dy = np.random.default_rng(3).standard_normal(z.shape).astype(np.float32)
    z0, y0 = z.copy(), y.copy()
    got, want = np.empty_like(z), np.empty_like(z)
    bgrad, want_bgrad = np.empty(3, np.float32), np.empty(3, np.float32)
    ops.act_backward_bias_grad(dy, z, y, act, got, bgrad)
    rounded = name in ROUNDED
    zr, yr = (round_to_bfloat16(z), round_to_bfloat16(y)) if rounded else (z, y)
    base.act_backward_bias_grad(dy, zr, yr, act, want, want_bgrad)
    assert got.tobytes() == want.tobytes() and bgrad.tobytes() == want_bgrad.tobytes()
    ops.act_backward(dy, z, y, act, got)
    assert got.tobytes() == want.tobytes()
    # z and y are left as the forward pass stored them (rounded copies are read)
    assert z.tobytes() == z0.tobytes() and y.tobytes() == y0.tobytes()
    if rounded:  # and the rounding shows: the float32 derivative differs
        base.act_backward(dy, z, y, act, want)
        assert not np.array_equal(got, want)


@pytest.mark.parametrize("name", ROUNDED)
def test_the_rounded_derivative_is_within_the_documented_bound(name):
    """|f'(v') - f'(v)| <= 2**-8 with v' the bfloat16 rounding of the saved z and y
    (ELU: alpha * 2**-8), as mlpx.backends.bfloat16 documents."""
    from mlpx import activations

    act = activations.get(name) if name != "elu" else activations.ELU(2.5)
    ops = get_backend("reference")
    z = np.concatenate([_saved_values().ravel(), np.linspace(-8, 8, 200_001)])
    z = z.astype(np.float32).astype(np.float64)
    y = np.asarray(act.formula(ops, z), np.float32).astype(np.float64)
    one = np.ones_like(z)
    exact = np.asarray(act.derivative(ops, one, z, y))
    r = [round_to_bfloat16(a.astype(np.float32)).astype(np.float64) for a in (z, y)]
    err = np.abs(np.asarray(act.derivative(ops, one, *r)) - exact)
    bound = 2.5 * 2.0**-8 if name == "elu" else 2.0**-8
    assert err.max() <= bound
    assert err.max() > bound / 16  # the bound is near the worst case, not vacuous


def test_rounding_on_another_array_module_needs_no_host_read():
    """With an array module other than NumPy (CuPy) NaNs are chosen with `where`, not by
    asking whether there are any (which would wait for the GPU): the same bits."""
    import types

    class NoHostRead(np.ndarray):
        def __bool__(self):
            raise AssertionError("a data-dependent branch read the array on the host")

    xp = types.SimpleNamespace(
        float32=np.float32, uint32=np.uint32,
        ascontiguousarray=lambda x, dtype: np.ascontiguousarray(x, dtype).view(NoHostRead),
        where=np.where,
    )
    x = np.concatenate([_f32([0x7FFFFFFF, 0xFFFFFFFF, 0x7F800001, 0x7F800000, 0x3F808000]),
                        np.random.default_rng(4).standard_normal(100).astype(np.float32)])
    got = np.asarray(round_to_bfloat16(x, xp=xp))
    assert got.view(np.uint32).tobytes() == round_to_bfloat16(x).view(np.uint32).tobytes()


def test_cpu_rounded_copy_is_the_contracts_bits():
    cpu = get_backend("cpu")
    x = np.concatenate([_f32([0x7FFFFFFF, 0xFFFFFFFF, 0x7F800001, 0x3F808000, 0x3F818000, 1]),
                        np.random.default_rng(5).standard_normal(90).astype(np.float32)])
    for a in (x.reshape(-1, 8), x.reshape(-1, 8)[:, ::2], x):  # compiled, and the fallbacks
        got = cpu.rounded_bf16(a)
        assert got.view(np.uint32).tobytes() == round_to_bfloat16(a).view(np.uint32).tobytes()
        assert got is not a
