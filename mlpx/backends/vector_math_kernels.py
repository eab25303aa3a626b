"""Tanh, sigmoid, ELU and SiLU of float32 rows, computed in float64 with loops LLVM vectorises.

The activation kernels compute f in float64 and round once to the array's dtype. Through the
C library (`math.tanh`, `math.exp`), one call per value, a 1024 x 1024 tanh took about 20 ms
on a 2-core AMD EPYC, more than the GEMM before it. Here exp is computed as 2^n * e^r: n
rounded with the 1.5 * 2^52 trick (its bits give 2^n by integer ops), r = x - n ln2 in two
parts (Cody and Waite), e^r - 1 by its Taylor series to degree 13 (truncation below 1e-17 for
|r| <= ln2 / 2), every step a plain array loop. Its error is a few units in the last place of
float64, far below half a unit of float32: rounded to float32, the results are the C
library's except when a value lies within that error of a rounding boundary (about one value
in 10^8), within the one-float32-ulp bound the kernels document. Used for float32 arrays
only: float64 models keep the C library (their tolerance is a few float64 ulps).

CPU only (the CUDA kernels call CUDA's tanh and exp). Importing this module imports Numba.
"""

from __future__ import annotations

import numpy as np

from . import numba_common
from .numba_common import jit, stamp_with_callees

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # ln 2's leading 32 bits: n * _LN2_HI is exact
_LN2_LO = 1.90821492927058770002e-10
_MAGIC = 6755399441055744.0  # 1.5 * 2^52: x + _MAGIC holds round(x) in its low bits
_MAGIC_BITS = 0x4338000000000000
#: 1 / k! for k = 13 down to 2 (Horner's order)
_C13, _C12, _C11, _C10 = 1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0
_C9, _C8, _C7, _C6 = 1.0 / 362880.0, 1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0
_C5, _C4, _C3, _C2 = 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5


@jit
def expm1_parts(y, t, scale_bits, q):
    """For each y[j] (finite, |y| <= 700): 2^n in scale_bits[j] (as float64 bits, read through
    a float64 view) and e^r - 1 in q[j], with y = n ln2 + r; e^y = s q + s, e^y - 1 = s q +
    (s - 1). `t` is a work array."""
    n = y.shape[0]
    for j in range(n):
        t[j] = y[j] * _LOG2E + _MAGIC
    tb = t.view(np.int64)
    for j in range(n):
        scale_bits[j] = (tb[j] - _MAGIC_BITS + 1023) << 52
    for j in range(n):
        nf = t[j] - _MAGIC
        r = (y[j] - nf * _LN2_HI) - nf * _LN2_LO
        p = _C13
        p = p * r + _C12
        p = p * r + _C11
        p = p * r + _C10
        p = p * r + _C9
        p = p * r + _C8
        p = p * r + _C7
        p = p * r + _C6
        p = p * r + _C5
        p = p * r + _C4
        p = p * r + _C3
        p = p * r + _C2
        q[j] = r + r * (r * p)


@jit
def tanh_row(x, out, work):
    """out = tanh(x) for float64 values x (a row), rounded to out's dtype; work: (5, len)."""
    n = x.shape[0]
    y, t, q = work[0, :n], work[1, :n], work[2, :n]
    sb = work[3, :n].view(np.int64)
    for j in range(n):
        y[j] = min(2.0 * abs(x[j]), 40.0)  # tanh is 1 in float64 from 2|x| = 38.1
    expm1_parts(y, t, sb, q)
    s = sb.view(np.float64)
    for j in range(n):
        e = s[j] * q[j] + (s[j] - 1.0)  # e^(2|x|) - 1
        out[j] = np.copysign(e / (e + 2.0), x[j])
    for j in range(n):
        if x[j] != x[j]:  # NaN in, NaN out (min() above dropped it)
            out[j] = x[j]


@jit
def sigmoid_row(x, out, work):
    """out = sigmoid(x) for float64 values x, as mlpx.activations.Sigmoid writes it (e =
    exp(-|x|); 1 / (1 + e) for x >= 0, e / (1 + e) below), rounded to out's dtype (float32:
    e^-110 and below round to the same results as e^-|x|)."""
    n = x.shape[0]
    y, t, q = work[0, :n], work[1, :n], work[2, :n]
    sb = work[3, :n].view(np.int64)
    for j in range(n):
        y[j] = -min(abs(x[j]), 110.0)
    expm1_parts(y, t, sb, q)
    s = sb.view(np.float64)
    for j in range(n):
        e = s[j] * q[j] + s[j]
        out[j] = 1.0 / (1.0 + e) if x[j] >= 0.0 else e / (1.0 + e)
    for j in range(n):
        if x[j] != x[j]:
            out[j] = x[j]


@jit
def elu_row(x, alpha, out, work):
    """out = x for x > 0, else alpha expm1(x) (mlpx.activations.ELU), rounded to out's dtype
    (expm1 is -1 in float64 from x = -38)."""
    n = x.shape[0]
    y, t, q = work[0, :n], work[1, :n], work[2, :n]
    sb = work[3, :n].view(np.int64)
    for j in range(n):
        y[j] = max(min(x[j], 0.0), -40.0)
    expm1_parts(y, t, sb, q)
    s = sb.view(np.float64)
    for j in range(n):
        e = s[j] * q[j] + (s[j] - 1.0)
        out[j] = x[j] if x[j] > 0.0 else alpha * e
    for j in range(n):
        if x[j] != x[j]:
            out[j] = x[j]


@jit
def silu_row(x, out, work):
    """out = x sigmoid(x) (mlpx.activations.SiLU), rounded to out's dtype; below x = -110 the
    float32 result is -0.0 (|x| e^x < 7e-46, half float32's smallest subnormal), written so."""
    n = x.shape[0]
    sigmoid_row(x, work[4, :n], work)
    for j in range(n):
        v = x[j]
        out[j] = v * work[4, j] if v >= -110.0 or v != v else v * 0.0


stamp_with_callees((expm1_parts, tanh_row, sigmoid_row, elu_row, silu_row), (numba_common,))
