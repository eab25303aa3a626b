"""The small-batch chain (mlpx.backends.small_batch_kernels) with each layer's output columns
split between Numba's threads: for a few rows of a wide layer (a weight matrix of MBs) one
core's memory bandwidth bounds the serial chain, and every thread streams its own share of
the weights. Each column is computed by `dense_cols`, exactly as the serial chain computes
it, so the outputs are the serial chain's bit for bit.

Compiled with parallel=True (Numba's threading layer); mlpx.backends.small_batch_split
launches it from one Python thread at a time. Importing this module imports Numba.
"""

from __future__ import annotations

import numba as nb

from .._numba_cache import configure_cache
from .small_batch_kernels import all_finite, dense_cols

configure_cache()

_ALIGN = 16  # columns per 64-byte cache line of float32: no two threads write one line


@nb.njit(cache=True, nogil=True, error_model="numpy", parallel=True)
def _layer(x, w, b, has_bias, code, alpha, out, parts):
    n = w.shape[1]
    step = -(-n // parts)
    step = -(-step // _ALIGN) * _ALIGN
    for p in nb.prange(parts):
        j0 = min(n, p * step)
        j1 = min(n, j0 + step)
        if j0 < j1:
            dense_cols(x, w, b, has_bias, code, alpha, out, j0, j1)


@nb.njit(cache=True, nogil=True, error_model="numpy")
def dense_chain_split(x, ws, bs, has_bias, codes, alphas, outs, parts):
    """dense_chain with each layer's columns in `parts` shares (Numba's threads take them);
    False (nothing trustworthy written) when x holds NaN or infinity."""
    if not all_finite(x):
        return False
    _layer(x, ws[0], bs[0], has_bias[0], codes[0], alphas[0], outs[0], parts)
    for i in range(1, len(ws)):
        _layer(outs[i - 1], ws[i], bs[i], has_bias[i], codes[i], alphas[i], outs[i], parts)
    return True


