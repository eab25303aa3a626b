"""Numba dropout kernels of the cpu backend. CUDA twin: kernels/random.cu.

`dropout_mask` computes Philox-4x32-10 exactly as `mlpx.random.philox4x32` does (same counter
and key layout), in one compiled loop instead of ~100 NumPy calls per mask; the masks are
bit-identical (tested). All arithmetic stays in uint64 holding 32-bit values: in Numba a
uint64 mixed with a signed integer would be promoted to float64, so every constant is uint64.
"""

from __future__ import annotations

import numpy as np

from .numba_common import jit

_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_LO = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


@jit
def dropout_mask(key0, key1, stream, step_lo, step_hi, threshold, offset, mask):
    """mask[k] = word_(offset + k) >= threshold for the flattened uint8 `mask` (1 = kept).

    Word j is word j % 4 of Philox-4x32-10(counter=(j // 4, stream, step_lo, step_hi),
    key=(key0, key1)). Reference: Backend.dropout_mask via mlpx.random.random_bits.
    """
    n = mask.size
    for b in range(offset // 4, (offset + n + 3) // 4):
        c0 = np.uint64(b)
        c1 = stream
        c2 = step_lo
        c3 = step_hi
        k0 = key0
        k1 = key1
        for r in range(10):
            if r > 0:
                k0 = (k0 + _W0) & _LO
                k1 = (k1 + _W1) & _LO
            p0 = c0 * _M0
            p1 = c2 * _M1
            c0, c1, c2, c3 = (p1 >> _S32) ^ c1 ^ k0, p1 & _LO, (p0 >> _S32) ^ c3 ^ k1, p0 & _LO
        base = 4 * b - offset  # element of word 4b; may be negative in the first block
        if base >= 0:
            mask[base] = 1 if c0 >= threshold else 0
        if 0 <= base + 1 < n:
            mask[base + 1] = 1 if c1 >= threshold else 0
        if 0 <= base + 2 < n:
            mask[base + 2] = 1 if c2 >= threshold else 0
        if base + 3 < n:
            mask[base + 3] = 1 if c3 >= threshold else 0


@jit
def dropout_apply(x, mask, scale, out):
    """out = x * scale where mask else 0, in float64, rounded once. Reference: dropout_apply."""
    xf = x.reshape(-1)
    mf = mask.reshape(-1)
    of = out.reshape(-1)
    for i in range(xf.size):
        of[i] = np.float64(xf[i]) * scale if mf[i] != 0 else 0.0
