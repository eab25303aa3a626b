"""Numba kernels of the output probability transforms on a few rows (mlpx.backends.proba).

Each computes what the NumPy formula computes, with the same float64 operations in the same
order: softmax is `e = exp(z - max)` then `e / sum(e)`, the sum taken the way NumPy's
`add.reduce` sums a contiguous row (`pairwise_sum` below); sigmoid is
mlpx.activations.Sigmoid's formula. Only `exp` comes from another implementation (the C
library's, which NumPy also calls unless it has its own SIMD loop, as on AVX-512), so results
equal NumPy's to the bit or, at worst, differ by one unit in the last place of the output's
dtype.

Importing this module imports Numba; mlpx.backends.proba does so on first use only.
"""

from __future__ import annotations

import math

import numpy as np

from .numba_common import jit

_BLOCK = 128  # NumPy's PW_BLOCKSIZE


@jit
def _block_sum(a, lo, n):
    """NumPy's pairwise_sum for n <= 128 values of a from lo: eight running sums."""
    if n < 8:
        res = -0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - n % 8:
        r0 += a[lo + i]
        r1 += a[lo + i + 1]
        r2 += a[lo + i + 2]
        r3 += a[lo + i + 3]
        r4 += a[lo + i + 4]
        r5 += a[lo + i + 5]
        r6 += a[lo + i + 6]
        r7 += a[lo + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@jit
def pairwise_sum(a, n):
    """Sum of a[:n] as NumPy's float64 add.reduce sums a contiguous row: blocks of at most
    128 summed by `_block_sum`, halves (cut at a multiple of 8) above that. NumPy recurses;
    here the same tree is walked with explicit stacks (Numba's cache does not keep recursive
    functions reliably)."""
    if n <= _BLOCK:
        return _block_sum(a, 0, n)
    return pairwise_sum_with(a, n, np.empty((3, 128), np.int64), np.empty(128, np.float64))


@jit
def pairwise_sum_with(a, n, stack, vals):
    """pairwise_sum with its work arrays given (stack (3, 128) int64, vals (128,) float64):
    a caller summing many rows allocates them once."""
    if n <= _BLOCK:
        return _block_sum(a, 0, n)
    los, lens, split = stack[0], stack[1], stack[2]
    los[0], lens[0], split[0], top, nv = 0, n, 0, 1, 0
    while top:
        t = top - 1
        if lens[t] <= _BLOCK:  # a leaf
            vals[nv] = _block_sum(a, los[t], lens[t])
            nv += 1
            top -= 1
        elif split[t] == 0:  # push the right half, then the left (taken first)
            split[t] = 1
            half = lens[t] // 2
            half -= half % 8
            los[top], lens[top], split[top] = los[t] + half, lens[t] - half, 0
            los[top + 1], lens[top + 1], split[top + 1] = los[t], half, 0
            top += 2
        else:  # both halves summed: left + right, as NumPy adds them
            vals[nv - 2] = vals[nv - 2] + vals[nv - 1]
            nv -= 1
            top -= 1
    return vals[0]


@jit
def softmax_rows(z, out):
    """out = softmax of each row of z, in float64 (rounded once to out's dtype); out may be z.
    Returns False, with out unspecified, where z holds NaN or infinity (the caller's NumPy
    path then gives NumPy's result)."""
    m, n = z.shape
    e = np.empty(n, np.float64)
    for r in range(m):
        row = z[r]
        top = -np.inf
        for j in range(n):
            v = np.float64(row[j])
            if not np.isfinite(v):
                return False
            top = max(top, v)
        for j in range(n):
            e[j] = math.exp(np.float64(row[j]) - top)
        s = pairwise_sum(e, n)
        o = out[r]
        for j in range(n):
            o[j] = e[j] / s
    return True


@jit
def sigmoid_rows(z, out):
    """out = mlpx.activations.Sigmoid's formula on z in float64 (rounded once to out's dtype);
    out may be z. Returns False where z holds NaN (as softmax_rows)."""
    m, n = z.shape
    for r in range(m):
        row, o = z[r], out[r]
        for j in range(n):
            v = np.float64(row[j])
            if v != v:
                return False
            e = math.exp(-abs(v))
            o[j] = 1.0 / (1.0 + e) if v >= 0 else e / (1.0 + e)
    return True


@jit
def expit_rows(z, out):
    """out = 1 / (1 + exp(-z)) in float64, SciPy's `expit` formula (scikit-learn's logistic
    output); out may be z. Returns False where z holds NaN (as softmax_rows)."""
    m, n = z.shape
    for r in range(m):
        row, o = z[r], out[r]
        for j in range(n):
            v = np.float64(row[j])
            if v != v:
                return False
            o[j] = 1.0 / (1.0 + math.exp(-v))
    return True
