"""Numba loss kernels of the cpu backend. CUDA twin: kernels/losses.cu.

Each kernel returns the mean loss and, when asked, writes its gradient in the same pass:
the expressions of the reference losses (`backends/base.py`), evaluated in float64 and
rounded once on store.
"""

from __future__ import annotations

import math

import numpy as np

from .numba_common import jit, sigmoid


@jit
def softmax_xent(z, labels, grad, write_grad):
    """Mean softmax cross-entropy and its gradient in one pass over each row.

    CUDA twin: softmax_xent.
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


@jit
def bce_logits(x, t, grad, write_grad):
    """Mean binary cross-entropy on logits. CUDA twin: bce_logits."""
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
            gf[k] = (sigmoid(v) - tt) / size
    return total / size


@jit
def mse(y, t, grad, write_grad):
    """Mean squared error and 2 (y - t) / size. CUDA twin: mse."""
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


@jit
def l1(y, t, grad, write_grad):
    """Mean absolute error and sign(y - t) / size. CUDA twin: l1."""
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
