"""The small-batch chain (mlpx.backends.small_batch_kernels) with each wide layer's block sums
shared between Numba's threads: for a few rows of a wide layer (a weight matrix of MBs) one
core's memory bandwidth bounds the serial chain, and every thread streams its own blocks of
consecutive weight rows. The blocks and the order their sums are added are the serial chain's
(`blocks` depends on the layer's width only), so the outputs are its bits.

Compiled with parallel=True (Numba's threading layer); mlpx.backends.small_batch_split
launches it from one Python thread at a time. Importing this module imports Numba.
"""

from __future__ import annotations

import numba as nb

from .._numba_cache import configure_cache
from . import (
    norm_kernels,
    numba_activations,
    numba_common,
    proba_kernels,
    scan_kernels,
    small_batch_kernels,
    vector_math_kernels,
)
from .numba_common import stamp_with_callees
from .small_batch_kernels import (
    all_finite,
    apply_ops,
    block_bounds,
    block_sum,
    blocks,
    dense_rows,
    finish,
)

configure_cache()

#: a layer's weights below this many bytes are read in a few microseconds by one core, less
#: than waking the threads costs: its blocks are summed in the calling thread (same bits)
THREAD_MIN_BYTES = 1 << 18


@nb.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _block_sums(x, w, sums, n_blocks):
    k = x.shape[1]
    for p in nb.prange(n_blocks):
        i0, i1 = block_bounds(k, n_blocks, p)
        block_sum(x, w, sums[p], i0, i1)


@nb.njit(cache=True, nogil=True, error_model="numpy")
def _layer(x, w, b, has_bias, code, alpha, out, sums):
    n_blocks = blocks(x.shape[1])
    if n_blocks == 1 or w.size * w.itemsize < THREAD_MIN_BYTES:
        dense_rows(x, w, b, has_bias, code, alpha, out, sums)
        return
    _block_sums(x, w, sums, n_blocks)
    finish(sums, n_blocks, b, has_bias, code, alpha, out)


@nb.njit(cache=True, nogil=True, error_model="numpy")
def dense_chain_split(x, ws, bs, has_bias, codes, alphas, outs, sums, ops):
    """dense_chain with each wide layer's block sums shared between Numba's threads (the
    ops between layers in the calling thread); False (nothing trustworthy written) when x
    holds NaN or infinity."""
    if not all_finite(x):
        return False
    if ops is None:
        _layer(x, ws[0], bs[0], has_bias[0], codes[0], alphas[0], outs[0], sums[0])
        for i in range(1, len(ws)):
            _layer(outs[i - 1], ws[i], bs[i], has_bias[i], codes[i], alphas[i], outs[i],
                   sums[i])
        return True
    starts, xin = ops[0], ops[7]
    if starts[1] > starts[0]:
        xin[:, :] = x
        if not apply_ops(xin, starts[0], starts[1], ops):
            return False
        _layer(xin, ws[0], bs[0], has_bias[0], codes[0], alphas[0], outs[0], sums[0])
    else:
        _layer(x, ws[0], bs[0], has_bias[0], codes[0], alphas[0], outs[0], sums[0])
    if not apply_ops(outs[0], starts[1], starts[2], ops):
        return False
    for i in range(1, len(ws)):
        _layer(outs[i - 1], ws[i], bs[i], has_bias[i], codes[i], alphas[i], outs[i], sums[i])
        if not apply_ops(outs[i], starts[i + 1], starts[i + 2], ops):
            return False
    return True


stamp_with_callees((_block_sums, _layer, dense_chain_split),
                   (small_batch_kernels, norm_kernels, numba_activations, numba_common,
                    proba_kernels, scan_kernels, vector_math_kernels))
