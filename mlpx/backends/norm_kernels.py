"""Numba kernels of the cpu backend's normalisation ops (batchnorm_inference, layernorm_forward).

Each computes the reference's NumPy expression (mlpx/backends/base.py) with the same float64
operations in the same order, without its float64 temporaries: values are loaded as float64,
every store rounds once to the array's dtype, and a row's mean is NumPy's `mean`: the row's
sum taken as NumPy's `add.reduce` sums a contiguous row (proba_kernels.pairwise_sum), then
divided by the count. So the results are the reference's bits. On a few rows the NumPy
expression's temporaries and calls cost far more than the arithmetic (a LayerNorm of one
512-wide row: 64 µs); here it is one pass.

CPU only: the CUDA backend runs the reference's expressions through CuPy (fused there by its
elementwise and reduction kernels). Importing this module imports Numba; the cpu backend does
so on first use only.
"""

from __future__ import annotations

import math

import numpy as np

from . import numba_common, proba_kernels
from .numba_common import jit, stamp_with_callees
from .proba_kernels import pairwise_sum_with


@jit
def batchnorm_inference(x, gamma, beta, mean, var, eps, out, xhat):
    """xhat = (x - mean) / sqrt(var + eps); out = gamma xhat + beta (xhat unrounded). `xhat`
    may be None (inference alone: compiled without its stores)."""
    n, d = x.shape
    scale = np.empty(d, np.float64)
    for j in range(d):
        scale[j] = math.sqrt(np.float64(var[j]) + eps)
    for i in range(n):
        for j in range(d):
            xh = (np.float64(x[i, j]) - np.float64(mean[j])) / scale[j]
            if xhat is not None:
                xhat[i, j] = xh
            out[i, j] = np.float64(gamma[j]) * xh + np.float64(beta[j])


@jit
def layernorm_forward(x, gamma, beta, eps, out, xhat, rstd):
    """Per row: d = x - mean(x); r = 1 / sqrt(mean(d d) + eps); xhat = d r;
    out = gamma xhat + beta (xhat unrounded); rstd = r. `xhat` and `rstd` may be None
    (inference alone)."""
    n, k = x.shape
    dev = np.empty(k, np.float64)
    sq = np.empty(k, np.float64)
    stack = np.empty((3, 128), np.int64)  # the pairwise sums' work arrays, once per call
    vals = np.empty(128, np.float64)
    for i in range(n):
        for j in range(k):
            dev[j] = np.float64(x[i, j])
        mu = pairwise_sum_with(dev, k, stack, vals) / k
        for j in range(k):
            dev[j] = dev[j] - mu
            sq[j] = dev[j] * dev[j]
        r = 1.0 / math.sqrt(pairwise_sum_with(sq, k, stack, vals) / k + eps)
        for j in range(k):
            xh = dev[j] * r
            if xhat is not None:
                xhat[i, j] = xh
            out[i, j] = np.float64(gamma[j]) * xh + np.float64(beta[j])
        if rstd is not None:
            rstd[i] = r


stamp_with_callees((batchnorm_inference, layernorm_forward), (proba_kernels, numba_common))
