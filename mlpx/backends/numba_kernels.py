"""Numba kernels of the cpu backend.

Each kernel computes exactly the expression of the reference backend (`base.py`,
`mlpx/activations.py`): elementwise values are loaded as float64, computed, and rounded once
on store. The CUDA twins live in `kernels/*.cu` and name these functions in their headers.
No `fastmath`: it would drop the NaN/inf semantics the divergence checks rely on.

Importing this module imports Numba (~0.25 s); the cpu backend does so on first use only.
Compiled code is cached on disk (see `_numba_cache.py`).
"""

from __future__ import annotations

from .._numba_cache import configure_cache

configure_cache()

import math  # noqa: E402

import numba as nb  # noqa: E402
import numpy as np  # noqa: E402

from .. import activations as A  # noqa: E402

_jit = nb.njit(cache=True, nogil=True, error_model="numpy")

ACT_IDENTITY, ACT_STEP, ACT_SIGMOID = A.ACT_IDENTITY, A.ACT_STEP, A.ACT_SIGMOID
ACT_TANH = A.ACT_TANH
ACT_RELU, ACT_LEAKY_RELU, ACT_ELU, ACT_GELU = A.ACT_RELU, A.ACT_LEAKY_RELU, A.ACT_ELU, A.ACT_GELU
ACT_SILU, ACT_SOFTPLUS = A.ACT_SILU, A.ACT_SOFTPLUS
_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


@_jit
def _sigmoid(v):
    if v >= 0.0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


@_jit
def act_scalar(code, v, alpha):
    """f(v) for one float64 value. CUDA twin: act_forward() in kernels/activations.cu."""
    if code == ACT_RELU:
        return v if v > 0.0 else 0.0
    if code == ACT_IDENTITY:
        return v
    if code == ACT_LEAKY_RELU:
        return v if v > 0.0 else alpha * v
    if code == ACT_SIGMOID:
        return _sigmoid(v)
    if code == ACT_TANH:
        return math.tanh(v)
    if code == ACT_STEP:
        return 1.0 if v >= 0.0 else 0.0
    if code == ACT_ELU:
        return v if v > 0.0 else alpha * math.expm1(min(v, 0.0))
    if code == ACT_GELU:
        return 0.5 * v * (1.0 + math.erf(v * _SQRT_HALF))
    if code == ACT_SILU:
        return v * _sigmoid(v)
    if code == ACT_SOFTPLUS:
        return max(v, 0.0) + math.log1p(math.exp(-abs(v)))
    return math.nan


@_jit
def dact_scalar(code, g, v, y, alpha):
    """g * f'(v) given the output y = f(v). CUDA twin: act_backward() in activations.cu."""
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
        s = _sigmoid(v)
        return g * (s * (1.0 + v * (1.0 - s)))
    if code == ACT_SOFTPLUS:
        return g * _sigmoid(v)
    return math.nan


@_jit
def bias_relu(z, b, out):
    """z += b; out = max(z, 0). The hot path of ReLU networks, kept branch-free.

    CUDA twin: bias_relu in kernels/activations.cu.
    """
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            v = np.float64(z[i, j]) + np.float64(b[j])
            z[i, j] = v
            out[i, j] = v if v > 0.0 else 0.0


@_jit
def relu_backward(dy, z, out):
    """out = z > 0 ? dy : 0. CUDA twin: relu_bwd in kernels/activations.cu."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            out[i, j] = dy[i, j] if z[i, j] > 0 else 0.0


@_jit
def bias_act(z, b, code, alpha, out):
    """z += b; out = f(z). CUDA twin: bias_act in kernels/activations.cu."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            v = np.float64(z[i, j]) + np.float64(b[j])
            z[i, j] = v
            out[i, j] = act_scalar(code, np.float64(z[i, j]), alpha)


@_jit
def act_forward(z, code, alpha, out):
    """out = f(z) without a bias. CUDA twin: act_fwd in kernels/activations.cu."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            out[i, j] = act_scalar(code, np.float64(z[i, j]), alpha)


@_jit
def act_backward(dy, z, y, code, alpha, out):
    """out = dy * f'(z). CUDA twin: act_bwd in kernels/activations.cu."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            out[i, j] = dact_scalar(
                code, np.float64(dy[i, j]), np.float64(z[i, j]), np.float64(y[i, j]), alpha
            )


@_jit
def bias_prelu(z, b, slopes, out):
    """z += b; out = z > 0 ? z : a_j z. CUDA twin: bias_prelu in kernels/activations.cu."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            v = np.float64(z[i, j]) + np.float64(b[j])
            z[i, j] = v
            v = np.float64(z[i, j])
            out[i, j] = v if v > 0.0 else np.float64(slopes[j]) * v


#: Rows per partial sum of the slope gradient: base.PRELU_CHUNK and PRELU_CHUNK in
#: kernels/activations.cu (a test checks they agree).
PRELU_CHUNK = 64


@_jit
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


@_jit
def softmax_xent(z, labels, grad, write_grad):
    """Mean softmax cross-entropy and its gradient in one pass over each row.

    CUDA twin: softmax_xent in kernels/losses.cu.
    """
    n, m = z.shape
    total = 0.0
    inv_n = 1.0 / n
    for i in range(n):
        mx = -math.inf
        for j in range(m):
            mx = max(mx, np.float64(z[i, j]))
        s = 0.0
        for j in range(m):
            s += math.exp(np.float64(z[i, j]) - mx)
        lse = mx + math.log(s)
        k = labels[i]
        total += lse - np.float64(z[i, k])
        if write_grad:
            for j in range(m):
                p = math.exp(np.float64(z[i, j]) - lse)
                if j == k:
                    p -= 1.0
                grad[i, j] = p * inv_n
    return total * inv_n


@_jit
def bce_logits(x, t, grad, write_grad):
    """Mean binary cross-entropy on logits. CUDA twin: bce_logits in kernels/losses.cu."""
    xf = x.ravel()
    tf = t.ravel()
    gf = grad.ravel()
    size = xf.size
    total = 0.0
    for k in range(size):
        v = np.float64(xf[k])
        tt = np.float64(tf[k])
        total += max(v, 0.0) - v * tt + math.log1p(math.exp(-abs(v)))
        if write_grad:
            gf[k] = (_sigmoid(v) - tt) / size
    return total / size


@_jit
def mse(y, t, grad, write_grad):
    """Mean squared error and 2 (y - t) / size. CUDA twin: mse in kernels/losses.cu."""
    yf = y.ravel()
    tf = t.ravel()
    gf = grad.ravel()
    size = yf.size
    total = 0.0
    for k in range(size):
        d = np.float64(yf[k]) - np.float64(tf[k])
        total += d * d
        if write_grad:
            gf[k] = (2.0 / size) * d
    return total / size


@_jit
def l1(y, t, grad, write_grad):
    """Mean absolute error and sign(y - t) / size. CUDA twin: l1 in kernels/losses.cu."""
    yf = y.ravel()
    tf = t.ravel()
    gf = grad.ravel()
    size = yf.size
    total = 0.0
    for k in range(size):
        d = np.float64(yf[k]) - np.float64(tf[k])
        total += abs(d)
        if write_grad:
            s = 0.0
            if d > 0.0:
                s = 1.0
            elif d < 0.0:
                s = -1.0
            gf[k] = s / size
    return total / size


@_jit
def sgd_update(p, g, lr):
    """p = p - lr g (float64, rounded once). CUDA twin: sgd_update in kernels/optim.cu."""
    pf = p.ravel()
    gf = g.ravel()
    for k in range(pf.size):
        pf[k] = np.float64(pf[k]) - lr * np.float64(gf[k])
