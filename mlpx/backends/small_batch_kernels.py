"""Numba kernels of small-batch inference (mlpx.backends.small_batch): a chain of Dense
layers, each a matrix-vector style product with its bias and activation, in one call.

For a few rows a GEMM library's blocking, packing and threading cost more than the product;
here each weight row is read once and applied to every input row while it sits in L1, in the
calling thread, with no other pool woken. The bias and activation are the reference's
(`bias_act`: z + b rounded to the dtype, then f(z) in float64, rounded once); the products are
summed in the dtype in input order, so they differ from a BLAS GEMM's only in summation order,
within the documented GEMM tolerance.

Importing this module imports Numba; mlpx.backends.small_batch does so on first use only.
"""

from __future__ import annotations

import numpy as np

from .numba_activations import act_scalar
from .numba_common import jit


@jit
def all_finite(x):
    """True when no value of x is NaN or infinite."""
    for v in x.reshape(-1):
        if not np.isfinite(v):
            return False
    return True


@jit
def dense_cols(x, w, b, has_bias, code, alpha, out, j0, j1):
    """Columns j0:j1 of out = f(x @ w + b) for a few rows x (m, k), w (k, n) C-contiguous,
    each column by the operations `dense_rows` performs for it, in the same order: any split
    of the columns (the threaded chain, mlpx.backends.small_batch_split) gives its bits."""
    m, k = x.shape
    # 1-D views indexed from 0: a loop from j0 would keep Numba's negative-index check in
    # the innermost loop, which stops LLVM from vectorising it (about 10x slower)
    for r in range(m):
        o = out[r, j0:j1]
        for j in range(o.shape[0]):
            o[j] = 0
    k4 = k - k % 4
    for i in range(0, k4, 4):  # four weight rows at a time, as dense_rows
        w0, w1, w2, w3 = w[i, j0:j1], w[i + 1, j0:j1], w[i + 2, j0:j1], w[i + 3, j0:j1]
        for r in range(m):
            x0, x1, x2, x3 = x[r, i], x[r, i + 1], x[r, i + 2], x[r, i + 3]
            o = out[r, j0:j1]
            for j in range(w0.shape[0]):
                t = o[j]
                t += x0 * w0[j]
                t += x1 * w1[j]
                t += x2 * w2[j]
                t += x3 * w3[j]
                o[j] = t
    for i in range(k4, k):
        wi = w[i, j0:j1]
        for r in range(m):
            xi = x[r, i]
            o = out[r, j0:j1]
            for j in range(wi.shape[0]):
                o[j] += xi * wi[j]
    bi = b[j0:j1]
    for r in range(m):
        o = out[r, j0:j1]
        for j in range(o.shape[0]):
            v = np.float64(o[j]) + np.float64(bi[j]) if has_bias else np.float64(o[j])
            o[j] = v  # rounded to the dtype, as the reference's z
            o[j] = act_scalar(code, np.float64(o[j]), alpha)


@jit
def dense_rows(x, w, b, has_bias, code, alpha, out):
    """out = f(x @ w + b) for a few rows x (m, k), w (k, n) C-contiguous. `dense_cols` on
    every column performs the same operations per column (kept apart: with the bounds known
    to be 0 and n, this loop compiles to the faster code for one row)."""
    m, k = x.shape
    n = w.shape[1]
    out[:, :] = 0
    # four weight rows at a time, applied to every input row while they sit in L1: each
    # output value still adds its products one by one in input order (the same bits as one
    # row at a time), but is loaded and stored once per four products instead of once per
    # product, which bounded the loop (1.1-2.2x faster on 1-16 rows of 784-1024 wide layers)
    k4 = k - k % 4
    for i in range(0, k4, 4):
        w0, w1, w2, w3 = w[i], w[i + 1], w[i + 2], w[i + 3]
        for r in range(m):
            x0, x1, x2, x3 = x[r, i], x[r, i + 1], x[r, i + 2], x[r, i + 3]
            o = out[r]
            for j in range(n):
                t = o[j]
                t += x0 * w0[j]
                t += x1 * w1[j]
                t += x2 * w2[j]
                t += x3 * w3[j]
                o[j] = t
    for i in range(k4, k):  # the last k % 4 rows
        wi = w[i]
        for r in range(m):
            xi = x[r, i]
            o = out[r]
            for j in range(n):
                o[j] += xi * wi[j]
    for r in range(m):
        o = out[r]
        for j in range(n):
            v = np.float64(o[j]) + np.float64(b[j]) if has_bias else np.float64(o[j])
            o[j] = v  # rounded to the dtype, as the reference's z
            o[j] = act_scalar(code, np.float64(o[j]), alpha)


@jit
def dense_chain(x, ws, bs, has_bias, codes, alphas, outs):
    """Every layer of the chain; outs[i] receives layer i's output (the last: the result).
    Returns False (nothing trustworthy written) when x holds NaN or infinity."""
    if not all_finite(x):
        return False
    # the first layer apart: x (perhaps read-only) and the buffers are different types
    dense_rows(x, ws[0], bs[0], has_bias[0], codes[0], alphas[0], outs[0])
    for i in range(1, len(ws)):
        dense_rows(outs[i - 1], ws[i], bs[i], has_bias[i], codes[i], alphas[i], outs[i])
    return True
