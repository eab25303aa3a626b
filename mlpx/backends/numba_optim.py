"""Numba optimiser, penalty and clipping kernels of the cpu backend.

CUDA twin: kernels/optim.cu.

Each kernel is the one-pass form of the reference op of the same name in `base.py`: values
are loaded as float64, the new state is used unrounded in the same step's update, and every
store rounds once to the array's dtype. Arrays are C-contiguous and of the parameter's shape
(the cpu backend checks). Each CUDA twin has the same name.
"""

from __future__ import annotations

import math

import numpy as np

from .numba_common import jit


@jit
def sgd_update(p, g, lr):
    """p = p - lr g (float64, rounded once). CUDA twin: sgd_update."""
    pf = p.ravel()
    gf = g.ravel()
    for k in range(pf.size):
        pf[k] = np.float64(pf[k]) - lr * np.float64(gf[k])


@jit
def sgd_momentum_update(p, g, buf, lr, momentum, dampening, nesterov, weight_decay):
    """SGD with weight decay and (Nesterov) momentum. `buf` is untouched when momentum == 0."""
    pf = p.ravel()
    gf = g.ravel()
    bf = buf.ravel()
    for k in range(pf.size):
        w = np.float64(pf[k])
        d = np.float64(gf[k])
        if weight_decay != 0.0:
            d = d + weight_decay * w
        if momentum != 0.0:
            b = momentum * np.float64(bf[k]) + (1.0 - dampening) * d
            bf[k] = b
            if nesterov:
                d = d + momentum * b
            else:
                d = b
        pf[k] = w - lr * d


@jit
def adagrad_update(p, g, sum_sq, clr, weight_decay, eps):
    """AdaGrad: sum_sq += g^2; p -= clr g / (sqrt(sum_sq) + eps)."""
    pf = p.ravel()
    gf = g.ravel()
    sf = sum_sq.ravel()
    for k in range(pf.size):
        w = np.float64(pf[k])
        d = np.float64(gf[k])
        if weight_decay != 0.0:
            d = d + weight_decay * w
        s = np.float64(sf[k]) + d * d
        sf[k] = s
        pf[k] = w - clr * d / (math.sqrt(s) + eps)


@jit
def rmsprop_update(p, g, square_avg, grad_avg, buf, lr, alpha, eps, weight_decay, momentum,
                   centered):
    """RMSProp (optionally centered, with momentum). Unused state arrays are untouched."""
    pf = p.ravel()
    gf = g.ravel()
    sqf = square_avg.ravel()
    gaf = grad_avg.ravel()
    bf = buf.ravel()
    if not centered and momentum <= 0.0:
        # the default configuration as its own simple loop (measured several times faster
        # than the general loop below with its branches)
        for k in range(pf.size):
            w = np.float64(pf[k])
            d = np.float64(gf[k])
            if weight_decay != 0.0:
                d = d + weight_decay * w
            sq = alpha * np.float64(sqf[k]) + (1.0 - alpha) * d * d
            sqf[k] = sq
            pf[k] = w - lr * (d / (math.sqrt(sq) + eps))
        return
    for k in range(pf.size):
        w = np.float64(pf[k])
        d = np.float64(gf[k])
        if weight_decay != 0.0:
            d = d + weight_decay * w
        sq = alpha * np.float64(sqf[k]) + (1.0 - alpha) * d * d
        sqf[k] = sq
        if centered:
            ga = alpha * np.float64(gaf[k]) + (1.0 - alpha) * d
            gaf[k] = ga
            avg = math.sqrt(sq - ga * ga) + eps
        else:
            avg = math.sqrt(sq) + eps
        step = d / avg
        if momentum > 0.0:
            step = momentum * np.float64(bf[k]) + step
            bf[k] = step
        pf[k] = w - lr * step


@jit
def adam_update(p, g, m, v, lr, beta1, beta2, eps, weight_decay, step, decoupled):
    """Adam (L2 added to the gradient) or AdamW (decoupled decay), bias-corrected."""
    pf = p.ravel()
    gf = g.ravel()
    mf = m.ravel()
    vf = v.ravel()
    step_size = lr / (1.0 - beta1**step)
    bc2_sqrt = math.sqrt(1.0 - beta2**step)
    for k in range(pf.size):
        w = np.float64(pf[k])
        d = np.float64(gf[k])
        if weight_decay != 0.0:
            if decoupled:
                w = w * (1.0 - lr * weight_decay)
            else:
                d = d + weight_decay * w
        mm = beta1 * np.float64(mf[k]) + (1.0 - beta1) * d
        vv = beta2 * np.float64(vf[k]) + (1.0 - beta2) * d * d
        mf[k] = mm
        vf[k] = vv
        pf[k] = w - step_size * mm / (math.sqrt(vv) / bc2_sqrt + eps)


@jit
def sum_abs(x):
    """sum(|x|) in float64."""
    xf = x.ravel()
    total = 0.0
    for k in range(xf.size):
        total += abs(np.float64(xf[k]))
    return total


@jit
def add_penalty_grad(p, g, l1, l2):
    """g += l1 sign(p) + l2 p (sign(0) = 0)."""
    pf = p.ravel()
    gf = g.ravel()
    for k in range(pf.size):
        w = np.float64(pf[k])
        s = 0.0
        if w > 0.0:
            s = 1.0
        elif w < 0.0:
            s = -1.0
        elif w != w:
            s = w  # NaN propagates, as np.sign does
        gf[k] = np.float64(gf[k]) + l1 * s + l2 * w


@jit
def scale_(x, factor):
    """x *= factor (float64, rounded once)."""
    xf = x.ravel()
    for k in range(xf.size):
        xf[k] = np.float64(xf[k]) * factor


@jit
def clip_(x, lo, hi):
    """x = min(max(x, lo), hi); NaN stays NaN."""
    xf = x.ravel()
    for k in range(xf.size):
        v = xf[k]
        if v < lo:
            xf[k] = lo
        elif v > hi:
            xf[k] = hi


@jit
def sum_squares(x):
    """sum(x^2) in float64, four interleaved partial sums (a fixed order: deterministic)."""
    xf = x.ravel()
    n = xf.size
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    k = 0
    while k + 4 <= n:
        v0 = np.float64(xf[k])
        v1 = np.float64(xf[k + 1])
        v2 = np.float64(xf[k + 2])
        v3 = np.float64(xf[k + 3])
        a0 += v0 * v0
        a1 += v1 * v1
        a2 += v2 * v2
        a3 += v3 * v3
        k += 4
    while k < n:
        v0 = np.float64(xf[k])
        a0 += v0 * v0
        k += 1
    return (a0 + a1) + (a2 + a3)
