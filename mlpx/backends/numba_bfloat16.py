"""Numba twin of the cuda backend's bfloat16 conversion. CUDA twin: kernels/bfloat16.cu.

The same integer formula as the kernel and as the reference (mlpx.backends.bfloat16): the
float32 bits rounded half to even to their upper 16 bits, NaN kept quiet with its sign. The
tests hold the three against each other bit for bit; the kernel is also run on the host
(tests/cuda_host.py). Arithmetic stays in uint64 holding 32-bit values: in Numba a uint32
mixed with a signed constant would be promoted to float64.
"""

from __future__ import annotations

import numpy as np

from .numba_common import jit

_ABS = np.uint64(0x7FFFFFFF)
_EXP = np.uint64(0x7F800000)
_QUIET = np.uint64(0x00400000)
_HALF_ULP = np.uint64(0x7FFF)
_ONE = np.uint64(1)
_S16 = np.uint64(16)


@jit
def bfloat16_bits(u):
    """bfloat16 bits (as uint64) of the float32 whose bits are `u` (uint64)."""
    if (u & _ABS) > _EXP:  # NaN: the add below could carry into the sign
        return (u | _QUIET) >> _S16
    return (u + _HALF_ULP + ((u >> _S16) & _ONE)) >> _S16


@jit
def to_bfloat16(x, out):
    """out[k] = bfloat16 bits of x[k]: `x` the uint32 view of a float32 array, `out` uint16,
    both flat and of one size."""
    for k in range(x.size):
        out[k] = np.uint16(bfloat16_bits(np.uint64(x[k])))
