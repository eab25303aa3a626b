"""A few rows times a weight matrix under "mixed_bfloat16", rounding both to bfloat16 as it
reads them: the cpu backend's "rows" route for the products of a few-row forward pass.

A bfloat16 GEMM library packs its operands first, and the emulated route rounds a copy of
the whole weight matrix per call: for one row that copy, not the product, is the cost (0.1-
0.3 ms for a 1024 x 1024 matrix, against a product that reads it once). Here each weight row
is rounded once, in registers, and applied to every input row while it sits in L1, so the
matrix is read once and nothing is written but the output. The rounding is the contract's
(round to nearest even, NaN kept, overflow to infinity: mlpx.backends.numba_bfloat16's
`rounded`); the products of two bfloat16 values are exact in float32 and summed in float32,
one at a time in input order. mlpx.backends._bf16_gemm measures this route against the others
per shape class, as for every product of the policy.
"""

from __future__ import annotations

import numpy as np

from . import numba_bfloat16, numba_common, small_batch_kernels
from .numba_bfloat16 import rounded
from .numba_common import jit, stamp_with_callees
from .small_batch_kernels import add_products


@jit
def rows_product(x, w, out, xr, wr):
    """out = bf16(x) @ bf16(w) for x (m, k) and w (k, n), both any strides; xr (m, k) and
    wr (4, n) float32 work arrays (the rounded rows). Four weight rows are rounded at a time
    and added as small_batch_kernels.block_sum adds them (add_products): each output value
    is loaded and stored once per four products, still added one product at a time."""
    m, k = x.shape
    n = w.shape[1]
    for r in range(m):
        for i in range(k):
            xr[r, i] = rounded(x[r, i])
    out[:, :] = 0
    i = 0
    while i < k:
        step = min(4, k - i)
        for q in range(step):
            for j in range(n):
                wr[q, j] = rounded(w[i + q, j])
        add_products(xr, i, wr, 0, step, out)
        i += step


stamp_with_callees((rows_product,), (numba_bfloat16, numba_common, small_batch_kernels))


def product(x: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """out = bf16(x) @ bf16(w) (float32 arrays; out C-contiguous), see rows_product."""
    m, k = x.shape
    rows_product(x, w, out, np.empty((m, k), np.float32), np.empty((4, w.shape[1]),
                                                                     np.float32))
