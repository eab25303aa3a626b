"""The few-row bfloat16 product that rounds its operands as it reads them
(mlpx.backends.bf16_rows_kernels)."""

from __future__ import annotations

import numpy as np
import pytest

from mlpx.backends.bf16_rows_kernels import product
from mlpx.backends.bfloat16 import round_to_bfloat16


def _in_order(x, w):
    """float32 sums of the rounded operands' products, one product at a time in input order
    (a product of two bfloat16 values is exact in float32, so this is the kernel's sum)."""
    xr, wr = round_to_bfloat16(x), round_to_bfloat16(w)
    out = np.zeros((x.shape[0], w.shape[1]), np.float32)
    with np.errstate(all="ignore"):
        for i in range(x.shape[1]):
            out += xr[:, i : i + 1] * wr[i]
    return out


@pytest.mark.parametrize("m,k,n", [(1, 784, 1024), (3, 7, 5), (17, 130, 33), (2, 1, 1)])
def test_the_product_of_the_rounded_operands_in_input_order_bit_for_bit(m, k, n):
    rng = np.random.default_rng(m * 100 + k)
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    out = np.full((m, n), np.nan, np.float32)
    product(x, w, out)
    np.testing.assert_array_equal(out.view(np.uint32), _in_order(x, w).view(np.uint32))
    # and the contract's product within float32 accumulation error
    exact = round_to_bfloat16(x).astype(np.float64) @ round_to_bfloat16(w)
    bound = k * 2.0**-24 * (np.abs(round_to_bfloat16(x)).astype(np.float64)
                            @ np.abs(round_to_bfloat16(w)))
    assert np.all(np.abs(out - exact) <= bound + 1e-30)


def test_strided_operands_specials_and_ties():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((6, 40)).astype(np.float32)
    base[0, 2] = np.float32(1 + 2**-8)  # a tie: rounds to even (1.0)
    base[2, 6] = np.inf
    base[4, 8] = np.nan
    x = base[::2, ::2]  # non-contiguous: rows 0, 2, 4 and even columns of base
    w = np.asfortranarray(rng.standard_normal((20, 9)).astype(np.float32))
    out = np.empty((3, 9), np.float32)
    product(x, w, out)
    want = _in_order(np.ascontiguousarray(x), np.ascontiguousarray(w))
    np.testing.assert_array_equal(out.view(np.uint32), want.view(np.uint32))
    assert np.isinf(out[1]).any() and np.isnan(out[2]).all()  # infinity's row, NaN's
