"""Numba kernels of small-batch inference (mlpx.backends.small_batch): a chain of Dense
layers, each a matrix-vector style product with its bias and activation, in one call.

For a few rows a GEMM library's blocking, packing and threading cost more than the product;
here each weight row is read once and applied to every input row while it sits in L1, in the
calling thread, with no other pool woken. The bias and activation are the reference's
(`bias_act`: z + b rounded to the dtype, then f(z) in float64, rounded once).

The summation order, one contract for the serial chain here and the threaded one
(mlpx.backends.small_batch_split_kernels): a layer's inputs are cut into `blocks(k)` blocks of
consecutive inputs (one for narrow layers, up to 8 for wide ones); each block sums its
products one by one in input order, in the dtype, and the block sums are added in block
order. The block count depends only on the layer's width, so the bits are the same on one
thread or several; they differ from a BLAS GEMM's only in summation order, within the
documented GEMM tolerance.

Importing this module imports Numba; mlpx.backends.small_batch does so on first use only.
"""

from __future__ import annotations

import numpy as np

from . import (
    inference_ops,
    norm_kernels,
    numba_activations,
    numba_common,
    proba_kernels,
    scan_kernels,
    vector_math_kernels,
)
from .norm_kernels import batchnorm_inference, layernorm_forward
from .numba_activations import (
    ACT_IDENTITY,
    ACT_RELU,
    act_scalar,
    prelu_forward,
    vector_row,
    vectorised,
)
from .numba_common import jit, jit_inline, stamp_with_callees
from .proba_kernels import softmax_rows
from .scan_kernels import flat_all_finite


@jit
def all_finite(x):
    """True when no value of x (C-contiguous) is NaN or infinite: the vectorised scan of
    mlpx.backends.scan_kernels (about 8x faster than testing value by value, which was a
    tenth of a 64-row prediction)."""
    flat = x.reshape(-1)
    return flat.size == 0 or flat_all_finite(flat)


#: the fewest inputs per block: a block sum costs a pass over the outputs, and narrower
#: blocks would not give a thread enough of the weights to be worth waking it
BLOCK_MIN = 256
#: the most blocks per layer (the most threads a layer is shared between)
BLOCKS_MAX = 8


@jit
def blocks(k):
    """Blocks of a layer with k inputs: the largest power of two up to k // BLOCK_MIN (at
    least 1, at most BLOCKS_MAX), so that 1, 2, 4 or 8 threads share them evenly."""
    n = 1
    while n * 2 <= BLOCKS_MAX and n * 2 * BLOCK_MIN <= k:
        n *= 2
    return n


@jit
def block_bounds(k, n_blocks, block):
    """Inputs [i0, i1) of block `block` of `n_blocks`: equal shares rounded up to the
    unrolled step of four, the last one shorter."""
    step = -(-k // n_blocks)
    step = -(-step // 4) * 4
    i0 = min(k, block * step)
    return i0, min(k, i0 + step)


@jit_inline
def add_products(x, xi, w, wi, count, out):
    """out[r] += x[r, xi + q] * w[wi + q] for q in 0..count-1, each value adding its products
    one at a time in that order. Four weight rows at a time, applied to every input row while
    they sit in L1: each output value is loaded and stored once per four products instead of
    once per product, which bounded the loop (1.1-2.2x faster on 1-16 rows of 784-1024 wide
    layers). Shared by block_sum and the bfloat16 rows product (bf16_rows_kernels)."""
    m = x.shape[0]
    n = w.shape[1]
    q = 0
    while q + 4 <= count:
        w0, w1, w2, w3 = w[wi + q], w[wi + q + 1], w[wi + q + 2], w[wi + q + 3]
        i = xi + q
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
        q += 4
    while q < count:  # the last count % 4
        wq = w[wi + q]
        for r in range(m):
            xq = x[r, xi + q]
            o = out[r]
            for j in range(n):
                o[j] += xq * wq[j]
        q += 1


@jit
def block_sum(x, w, out, i0, i1):
    """out = x[:, i0:i1] @ w[i0:i1], each value summed one product at a time in input order
    (add_products)."""
    out[:, :] = 0
    add_products(x, i0, w, i0, i1 - i0, out)


@jit
def finish(sums, n_blocks, b, has_bias, code, alpha, out):
    """out = f(sum of the block sums + b): the block sums added in block order (the first
    one may be out itself), then the bias and activation as the cpu backend's bias_act
    (ReLU and the identity inline, tanh/sigmoid/ELU/SiLU of float32 through its vectorised
    rows: not a C library call per value, 20 us per 1024-wide row of tanh)."""
    m, n = out.shape
    vector = vectorised(code, out)
    if vector:
        xs, work = np.empty(n), np.empty((5, n))
    for r in range(m):
        o = out[r]
        for p in range(n_blocks):
            s = sums[p, r]
            if p == 0:
                for j in range(n):
                    o[j] = s[j]
            else:
                for j in range(n):
                    o[j] += s[j]
        for j in range(n):
            v = np.float64(o[j]) + np.float64(b[j]) if has_bias else np.float64(o[j])
            o[j] = v  # rounded to the dtype, as the reference's z
        if code == ACT_RELU:
            for j in range(n):
                v = np.float64(o[j])
                o[j] = v if v > 0.0 else 0.0
        elif vector:
            for j in range(n):
                xs[j] = o[j]
            vector_row(code, alpha, xs, o, work)
        elif code != ACT_IDENTITY:
            for j in range(n):
                o[j] = act_scalar(code, np.float64(o[j]), alpha)


@jit
def dense_rows(x, w, b, has_bias, code, alpha, out, sums):
    """out = f(x @ w + b) for a few rows x (m, k), w (k, n) C-contiguous, in the blocks'
    order (see the module); `sums` (blocks(k), m, n) holds the block sums of a layer of
    several blocks (unused for one)."""
    k = x.shape[1]
    n_blocks = blocks(k)
    if n_blocks == 1:
        block_sum(x, w, out, 0, k)
        finish(sums, 0, b, has_bias, code, alpha, out)
        return
    for p in range(n_blocks):
        i0, i1 = block_bounds(k, n_blocks, p)
        block_sum(x, w, sums[p], i0, i1)
    finish(sums, n_blocks, b, has_bias, code, alpha, out)


#: the ops applied in place to a Dense layer's output (or to a copy of the input), each the
#: layer's own kernel with its bits (mlpx.backends.inference_ops)
OP_BATCHNORM, OP_LAYERNORM, OP_PRELU, OP_SOFTMAX = (
    inference_ops.OP_BATCHNORM, inference_ops.OP_LAYERNORM, inference_ops.OP_PRELU,
    inference_ops.OP_SOFTMAX)


@jit
def apply_ops(y, first, last, ops):
    """Ops first..last-1 of `ops` (dense_chain) on y: kinds[q] with its arrays p0[q]..p3[q]
    (gamma, beta, running mean, running variance; PReLU's slopes as p0) and eps[q]. Each op
    reads one array and writes another (y, then the scratch ops[8], in turn; y holds the
    result at the end): called with its output aliasing its input, a kernel's loop fails
    LLVM's overlap check and runs scalar (a PReLU of 64 x 512 right after a GEMM took 170 us
    instead of 10). Inference alone: no xhat or rstd is stored. Returns False, with y
    unspecified, where a softmax met NaN or infinity (the layers' path then computes)."""
    if first == last:
        return True
    _, kinds, p0, p1, p2, p3, eps, _, scratch = ops
    rows, n = y.shape
    tmp = scratch[: rows * n].reshape((rows, n))
    src, dst = y, tmp
    for q in range(first, last):
        kind = kinds[q]
        if kind == OP_BATCHNORM:
            batchnorm_inference(src, p0[q], p1[q], p2[q], p3[q], eps[q], dst, None)
        elif kind == OP_LAYERNORM:
            layernorm_forward(src, p0[q], p1[q], eps[q], dst, None, None)
        elif kind == OP_SOFTMAX:
            if not softmax_rows(src, dst):
                return False
        else:
            prelu_forward(src, p0[q], dst)
        src, dst = dst, src
    if (last - first) % 2 == 1:
        y[:, :] = tmp
    return True


@jit
def dense_chain(x, ws, bs, has_bias, codes, alphas, outs, sums, ops):
    """Every layer of the chain; outs[i] receives layer i's output (the last: the result),
    sums[i] its block sums (dense_rows). `ops` is None for Dense layers alone (compiled
    without the ops), else (starts, kinds, p0, p1, p2, p3, eps, xin, scratch), the ops
    between the layers (apply_ops; mlpx.backends.inference_ops): those in
    starts[0]..starts[1]-1 on a copy of x in xin, those in starts[i+1]..starts[i+2]-1 on
    outs[i]. Returns False (nothing trustworthy written) when x holds NaN or infinity, or
    where a softmax op met them (apply_ops)."""
    if not all_finite(x):
        return False
    if ops is None:
        # the first layer apart: x (perhaps read-only) and the buffers are different types
        dense_rows(x, ws[0], bs[0], has_bias[0], codes[0], alphas[0], outs[0], sums[0])
        for i in range(1, len(ws)):
            dense_rows(outs[i - 1], ws[i], bs[i], has_bias[i], codes[i], alphas[i], outs[i],
                       sums[i])
        return True
    starts, xin = ops[0], ops[7]
    if starts[1] > starts[0]:
        xin[:, :] = x
        if not apply_ops(xin, starts[0], starts[1], ops):
            return False
        dense_rows(xin, ws[0], bs[0], has_bias[0], codes[0], alphas[0], outs[0], sums[0])
    else:
        dense_rows(x, ws[0], bs[0], has_bias[0], codes[0], alphas[0], outs[0], sums[0])
    if not apply_ops(outs[0], starts[1], starts[2], ops):
        return False
    for i in range(1, len(ws)):
        dense_rows(outs[i - 1], ws[i], bs[i], has_bias[i], codes[i], alphas[i], outs[i],
                   sums[i])
        if not apply_ops(outs[i], starts[i + 1], starts[i + 2], ops):
            return False
    return True


stamp_with_callees((all_finite, blocks, block_bounds, block_sum, finish, dense_rows, apply_ops,
                    dense_chain),
                   (norm_kernels, numba_activations, numba_common, proba_kernels, scan_kernels,
                    vector_math_kernels))
