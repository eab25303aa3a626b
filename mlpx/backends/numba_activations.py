"""Numba activation kernels of the cpu backend. CUDA twin: kernels/activations.cu.

Each kernel computes exactly the expression of the reference (`mlpx/activations.py`):
elementwise values are loaded as float64, computed, and rounded once on store. `act_scalar`
and `dact_scalar` switch on the `code` of each built-in declaration; a new built-in
activation adds its id constant and one case to each.

The in-place kernels (names ending in `_`) serve Dense's shared work arrays: when y = f(z)
overwrites z, or delta overwrites dy, the out-of-place kernels would be called with aliased
arguments; LLVM's runtime overlap check then fails and the loop runs scalar, several times
slower (the figures: docs/benchmarks.md). The in-place kernels write the array they read,
element by element, so they vectorise; CUDA needs no such twins (one thread reads and writes
each element).

Importing this module imports Numba (~0.25 s); the cpu backend does so on first use only.
"""

from __future__ import annotations

import math

import numpy as np

from .. import activations
from . import numba_common, vector_math_kernels
from .numba_common import jit, jit_inline, sigmoid, stamp_with_callees
from .vector_math_kernels import elu_row, sigmoid_row, silu_row, tanh_row

ACT_IDENTITY = activations.Identity.code
ACT_STEP = activations.Step.code
ACT_SIGMOID = activations.Sigmoid.code
ACT_TANH = activations.Tanh.code
ACT_RELU = activations.ReLU.code
ACT_LEAKY_RELU = activations.LeakyReLU.code
ACT_ELU = activations.ELU.code
ACT_GELU = activations.GELU.code
ACT_SILU = activations.SiLU.code
ACT_SOFTPLUS = activations.Softplus.code
_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


@jit
def act_scalar(code, v, alpha):
    """f(v) for one float64 value. CUDA twin: act_scalar."""
    if code == ACT_RELU:
        return v if v > 0.0 else 0.0
    if code == ACT_IDENTITY:
        return v
    if code == ACT_LEAKY_RELU:
        return v if v > 0.0 else alpha * v
    if code == ACT_SIGMOID:
        return sigmoid(v)
    if code == ACT_TANH:
        return math.tanh(v)
    if code == ACT_STEP:
        return 1.0 if v >= 0.0 else 0.0
    if code == ACT_ELU:
        return v if v > 0.0 else alpha * math.expm1(min(v, 0.0))
    if code == ACT_GELU:
        return 0.5 * v * (1.0 + math.erf(v * _SQRT_HALF))
    if code == ACT_SILU:
        return v * sigmoid(v)
    if code == ACT_SOFTPLUS:
        return max(v, 0.0) + math.log1p(math.exp(-abs(v)))
    return math.nan


@jit
def dact_scalar(code, g, v, y, alpha):
    """g * f'(v) given the output y = f(v). CUDA twin: dact_scalar."""
    if code == ACT_RELU:
        return g if v > 0.0 else 0.0
    if code == ACT_IDENTITY:
        return g
    if code == ACT_LEAKY_RELU:
        return g if v > 0.0 else alpha * g
    if code == ACT_SIGMOID:
        return g * (y * (1.0 - y))
    if code == ACT_TANH:
        return g * (1.0 - y * y)
    if code == ACT_ELU:
        return g if v > 0.0 else g * (y + alpha)
    if code == ACT_GELU:
        cdf = 0.5 * (1.0 + math.erf(v * _SQRT_HALF))
        pdf = _INV_SQRT_2PI * math.exp(-0.5 * v * v)
        return g * (cdf + v * pdf)
    if code == ACT_SILU:
        s = sigmoid(v)
        return g * (s * (1.0 + v * (1.0 - s)))
    if code == ACT_SOFTPLUS:
        return g * sigmoid(v)
    return math.nan


@jit_inline
def _simple_derivative(code):
    return code == ACT_LEAKY_RELU or code == ACT_ELU or code == ACT_SIGMOID or code == ACT_TANH


@jit_inline
def _dact_simple(code, g, v, y, alpha):
    """dact_scalar's Leaky ReLU, ELU, sigmoid and tanh cases, inlined into the loops that call it
    (the code is the same for every value, so LLVM takes the branch out of the loop and
    vectorises each case; a call per value to dact_scalar does not vectorise)."""
    if code == ACT_LEAKY_RELU:
        return g if v > 0.0 else alpha * g
    if code == ACT_ELU:
        return g if v > 0.0 else g * (y + alpha)
    if code == ACT_SIGMOID:
        return g * (y * (1.0 - y))
    return g * (1.0 - y * y)


@jit_inline
def vectorised(code, out):
    """Whether f is computed by the vectorised rows of vector_math_kernels: tanh, sigmoid,
    ELU and SiLU written to float32 (see there; 4-5x faster than a C library call per
    value)."""
    return (code == ACT_TANH or code == ACT_SIGMOID or code == ACT_ELU
            or code == ACT_SILU) and out.itemsize == 4


@jit_inline
def vector_row(code, alpha, xs, out_row, work):
    if code == ACT_TANH:
        tanh_row(xs, out_row, work)
    elif code == ACT_SIGMOID:
        sigmoid_row(xs, out_row, work)
    elif code == ACT_ELU:
        elu_row(xs, alpha, out_row, work)
    else:
        silu_row(xs, out_row, work)


@jit_inline
def vector_rows(z, b, has_bias, code, alpha, out):
    """out = f(z), with z += b first where has_bias (b unused else), row by row through
    vector_row: each row is gathered into a float64 buffer first, so out may be z (the
    in-place kernels) without the aliasing that stops vectorisation."""
    n, m = z.shape
    xs, work = np.empty(m), np.empty((5, m))
    for i in range(n):
        for j in range(m):
            if has_bias:
                z[i, j] = np.float64(z[i, j]) + np.float64(b[j])
            xs[j] = z[i, j]
        vector_row(code, alpha, xs, out[i], work)


@jit
def bias_relu(z, b, out):
    """z += b; out = max(z, 0). The hot path of ReLU networks, kept branch-free.

    CUDA twin: bias_relu.
    """
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            v = np.float64(z[i, j]) + np.float64(b[j])
            z[i, j] = v
            out[i, j] = v if v > 0.0 else 0.0


@jit
def relu_backward(dy, z, out):
    """out = z > 0 ? dy : 0. CUDA twin: relu_bwd."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            out[i, j] = dy[i, j] if z[i, j] > 0 else 0.0


@jit
def bias_act(z, b, code, alpha, out):
    """z += b; out = f(z). CUDA twin: bias_act. The identity and Leaky ReLU get loops of
    their own (the same formula as act_scalar's): through act_scalar's switch, a call per
    value that does not vectorise, 64 x 512 values took 120-140 us instead of about 10."""
    n, m = z.shape
    if code == ACT_IDENTITY:
        for i in range(n):
            for j in range(m):
                z[i, j] = np.float64(z[i, j]) + np.float64(b[j])
                out[i, j] = z[i, j]
        return
    if vectorised(code, out):
        vector_rows(z, b, True, code, alpha, out)
        return
    if code == ACT_LEAKY_RELU:
        for i in range(n):
            for j in range(m):
                z[i, j] = np.float64(z[i, j]) + np.float64(b[j])
                v = np.float64(z[i, j])
                out[i, j] = v if v > 0.0 else alpha * v
        return
    for i in range(n):
        for j in range(m):
            v = np.float64(z[i, j]) + np.float64(b[j])
            z[i, j] = v
            out[i, j] = act_scalar(code, np.float64(z[i, j]), alpha)


@jit
def act_forward(z, code, alpha, out):
    """out = f(z) without a bias. CUDA twin: act_fwd. Leaky ReLU in a loop of its own (see
    bias_act)."""
    n, m = z.shape
    if code == ACT_LEAKY_RELU:
        for i in range(n):
            for j in range(m):
                v = np.float64(z[i, j])
                out[i, j] = v if v > 0.0 else alpha * v
        return
    if vectorised(code, out):
        vector_rows(z, z[0], False, code, alpha, out)
        return
    for i in range(n):
        for j in range(m):
            out[i, j] = act_scalar(code, np.float64(z[i, j]), alpha)


@jit
def act_backward(dy, z, y, code, alpha, out):
    """out = dy * f'(z). CUDA twin: act_bwd. Leaky ReLU, ELU, sigmoid and tanh in loops of
    their own (dact_scalar's formulas; see bias_act): they vectorise (1024 x 1024: 3.5-4.3
    ms through dact_scalar, 0.2-0.3 ms so)."""
    n, m = z.shape
    if _simple_derivative(code):
        for i in range(n):
            for j in range(m):
                out[i, j] = _dact_simple(code, np.float64(dy[i, j]), np.float64(z[i, j]),
                                         np.float64(y[i, j]), alpha)
        return
    for i in range(n):
        for j in range(m):
            out[i, j] = dact_scalar(
                code, np.float64(dy[i, j]), np.float64(z[i, j]), np.float64(y[i, j]), alpha
            )


@jit
def bias_prelu(z, b, slopes, out):
    """z += b; out = z > 0 ? z : a_j z. CUDA twin: bias_prelu."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            v = np.float64(z[i, j]) + np.float64(b[j])
            z[i, j] = v
            v = np.float64(z[i, j])
            out[i, j] = v if v > 0.0 else np.float64(slopes[j]) * v


#: Rows per partial sum of the slope gradient, as declared (Numba reads it as a constant)
PRELU_CHUNK = activations.PRELU_CHUNK


@jit
def prelu_backward(dy, z, slopes, out, dslopes):
    """out = dy * f'(z); dslopes[j] = sum_i dy min(z, 0). CUDA twin: prelu_bwd and
    prelu_dslopes. The slope gradient is summed in the order all backends share: each chunk
    of PRELU_CHUNK rows in row order, then the chunks in order."""
    n, m = z.shape
    acc = np.zeros(m, dtype=np.float64)
    part = np.zeros(m, dtype=np.float64)
    for c0 in range(0, n, PRELU_CHUNK):
        part[:] = 0.0
        for i in range(c0, min(c0 + PRELU_CHUNK, n)):
            for j in range(m):
                g = np.float64(dy[i, j])
                v = np.float64(z[i, j])
                if v > 0.0:
                    out[i, j] = g
                else:
                    out[i, j] = np.float64(slopes[j]) * g
                    part[j] += g * v
        for j in range(m):
            acc[j] += part[j]
    for j in range(m):
        dslopes[j] = acc[j]


@jit
def relu_forward(z, out):
    """out = max(z, 0) without a bias, branch-free like bias_relu (the generic act_forward's
    switch keeps the loop from vectorising). CUDA twin: act_fwd with ACT_RELU."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            v = np.float64(z[i, j])
            out[i, j] = v if v > 0.0 else 0.0


@jit
def prelu_forward(z, slopes, out):
    """out = z > 0 ? z : a_j z, no bias (z is read only). CUDA twin: prelu_fwd."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            v = np.float64(z[i, j])
            out[i, j] = v if v > 0.0 else np.float64(slopes[j]) * v


# --- in-place twins (see the module docstring) -------------------------------------------

@jit
def bias_relu_(z, b):
    """z = max(z + b, 0) in place (bias_relu with out = z)."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            v = np.float64(z[i, j]) + np.float64(b[j])
            z[i, j] = v if v > 0.0 else 0.0


@jit
def bias_act_(z, b, code, alpha):
    """z = f(z + b) in place; z + b is rounded to the storage dtype first, as in bias_act
    (the identity and Leaky ReLU in loops of their own, as there)."""
    n, m = z.shape
    if code == ACT_IDENTITY:
        for i in range(n):
            for j in range(m):
                z[i, j] = np.float64(z[i, j]) + np.float64(b[j])
        return
    if code == ACT_LEAKY_RELU:
        for i in range(n):
            for j in range(m):
                z[i, j] = np.float64(z[i, j]) + np.float64(b[j])
                v = np.float64(z[i, j])
                z[i, j] = v if v > 0.0 else alpha * v
        return
    if vectorised(code, z):
        vector_rows(z, b, True, code, alpha, z)
        return
    for i in range(n):
        for j in range(m):
            z[i, j] = np.float64(z[i, j]) + np.float64(b[j])
            z[i, j] = act_scalar(code, np.float64(z[i, j]), alpha)


@jit
def relu_forward_(z):
    """z = max(z, 0) in place (relu_forward with out = z)."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            v = np.float64(z[i, j])
            z[i, j] = v if v > 0.0 else 0.0


@jit
def act_forward_(z, code, alpha):
    """z = f(z) in place (act_forward with out = z): a Dense layer without a bias (Leaky
    ReLU in a loop of its own, as in bias_act)."""
    n, m = z.shape
    if code == ACT_LEAKY_RELU:
        for i in range(n):
            for j in range(m):
                v = np.float64(z[i, j])
                z[i, j] = v if v > 0.0 else alpha * v
        return
    if vectorised(code, z):
        vector_rows(z, z[0], False, code, alpha, z)
        return
    for i in range(n):
        for j in range(m):
            z[i, j] = act_scalar(code, np.float64(z[i, j]), alpha)


@jit
def relu_backward_(dy, z):
    """dy = z > 0 ? dy : 0 in place (relu_backward with out = dy)."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            dy[i, j] = dy[i, j] if z[i, j] > 0 else 0.0


@jit
def act_backward_(dy, z, y, code, alpha):
    """dy = dy * f'(z) in place (act_backward with out = dy); z and y may be one array."""
    n, m = z.shape
    if _simple_derivative(code):
        for i in range(n):
            for j in range(m):
                dy[i, j] = _dact_simple(code, np.float64(dy[i, j]), np.float64(z[i, j]),
                                        np.float64(y[i, j]), alpha)
        return
    for i in range(n):
        for j in range(m):
            dy[i, j] = dact_scalar(code, np.float64(dy[i, j]), np.float64(z[i, j]),
                                   np.float64(y[i, j]), alpha)


# --- activation derivative fused with the bias gradient ------------------------------------
# Dense's backward needs delta = dy * f'(z) and the bias gradient sum_i delta[i, :]. One pass
# does both. The sums start from +0.0 and add row after row in the array's dtype: the order
# and rounding of NumPy's `delta.sum(axis=0)`, so the fused and separate paths agree bit for
# bit (signed zeros included). CUDA has no twin: it runs act_backward and sum_rows.

@jit
def relu_backward_bias(dy, z, out, bgrad):
    """out = z > 0 ? dy : 0; bgrad = column sums of out."""
    n, m = z.shape
    bgrad[:] = 0.0
    for i in range(n):
        for j in range(m):
            out[i, j] = dy[i, j] if z[i, j] > 0 else 0.0
            bgrad[j] = bgrad[j] + out[i, j]


@jit
def relu_backward_bias_(dy, z, bgrad):
    """dy = z > 0 ? dy : 0 in place; bgrad = column sums of the result."""
    n, m = z.shape
    bgrad[:] = 0.0
    for i in range(n):
        for j in range(m):
            dy[i, j] = dy[i, j] if z[i, j] > 0 else 0.0
            bgrad[j] = bgrad[j] + dy[i, j]


@jit
def act_backward_bias(dy, z, y, code, alpha, out, bgrad):
    """out = dy * f'(z); bgrad = column sums of out."""
    n, m = z.shape
    bgrad[:] = 0.0
    if _simple_derivative(code):
        for i in range(n):
            for j in range(m):
                out[i, j] = _dact_simple(code, np.float64(dy[i, j]), np.float64(z[i, j]),
                                         np.float64(y[i, j]), alpha)
                bgrad[j] = bgrad[j] + out[i, j]
        return
    for i in range(n):
        for j in range(m):
            out[i, j] = dact_scalar(code, np.float64(dy[i, j]), np.float64(z[i, j]),
                                    np.float64(y[i, j]), alpha)
            bgrad[j] = bgrad[j] + out[i, j]


@jit
def act_backward_bias_(dy, z, y, code, alpha, bgrad):
    """dy = dy * f'(z) in place; bgrad = column sums of the result."""
    n, m = z.shape
    bgrad[:] = 0.0
    if _simple_derivative(code):
        for i in range(n):
            for j in range(m):
                dy[i, j] = _dact_simple(code, np.float64(dy[i, j]), np.float64(z[i, j]),
                                        np.float64(y[i, j]), alpha)
                bgrad[j] = bgrad[j] + dy[i, j]
        return
    for i in range(n):
        for j in range(m):
            dy[i, j] = dact_scalar(code, np.float64(dy[i, j]), np.float64(z[i, j]),
                                   np.float64(y[i, j]), alpha)
            bgrad[j] = bgrad[j] + dy[i, j]


stamp_with_callees((bias_act, bias_act_, act_forward, act_forward_),
                   (numba_common, vector_math_kernels))
