"""bfloat16 numerics: the rounding contract of the "mixed_bfloat16" policy.

Representation. NumPy has no bfloat16 dtype, so a bfloat16 value is held either as a float32
whose low 16 bits are zero (what the emulated products compute with: any float32 GEMM then
multiplies exactly, since the product of two 8-bit significands fits float32's 24) or as its
upper 16 bits in a uint16 array (what a native bfloat16 GEMM reads). Both come from the same
bit formula, written here for any array module (NumPy, CuPy) with no extra dependency;
`ml_dtypes.bfloat16` (installed with JAX) agrees with it bit for bit, which the tests check.

Contract, shared by every backend:
- a matrix product `out = op(a) @ op(b)` rounds both operands from float32 to bfloat16 with
  round-to-nearest-even (overflow goes to +-inf, NaN stays a quiet NaN of the same sign),
  multiplies exactly and accumulates in float32; `out` is float32;
- nothing else is rounded: bias, activation and its derivative, loss and softmax, gradient
  sums and the optimiser run in float32 on float32 arrays, as under the "float32" policy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any

_EXP_MASK = 0x7F800000
_ABS_MASK = 0x7FFFFFFF
_QUIET_BIT = 0x00400000
_HIGH_HALF = 0xFFFF0000


def _rounded_bits(x: Array, xp: Any) -> Array:
    """uint32 bits of float32 `x` rounded to bfloat16 (low 16 bits zero)."""
    u = xp.ascontiguousarray(x, dtype=xp.float32).view(xp.uint32)
    # round half to even: add 0x7FFF plus the lowest kept bit, then cut the low half
    r = u + (xp.uint32(0x7FFF) + ((u >> xp.uint32(16)) & xp.uint32(1)))
    r &= xp.uint32(_HIGH_HALF)
    nan = (u & xp.uint32(_ABS_MASK)) > xp.uint32(_EXP_MASK)
    if nan.any():  # the add could carry a NaN's payload into the exponent or the sign
        r[nan] = (u[nan] | xp.uint32(_QUIET_BIT)) & xp.uint32(_HIGH_HALF)
    return r


def round_to_bfloat16(x: Array, out: Array | None = None, xp: Any = np) -> Array:
    """`x` rounded to the nearest bfloat16 (ties to even), as float32 values."""
    r = _rounded_bits(x, xp).view(xp.float32).reshape(x.shape)
    if out is None:
        return r
    out[...] = r
    return out


def to_bfloat16_bits(x: Array, xp: Any = np) -> Array:
    """`x` rounded to bfloat16, as uint16 bit patterns (a native GEMM's operand)."""
    return (_rounded_bits(x, xp) >> xp.uint32(16)).astype(xp.uint16).reshape(x.shape)


def from_bfloat16_bits(bits: Array, xp: Any = np) -> Array:
    """float32 values of uint16 bfloat16 bit patterns (exact)."""
    wide = xp.asarray(bits, dtype=xp.uint16).astype(xp.uint32) << xp.uint32(16)
    return wide.view(xp.float32)


class MixedBFloat16Ops:
    """A backend under the "mixed_bfloat16" policy: `matmul` is the backend's `matmul_bf16`
    (the contract above), every other op is the backend's own (float32 in, float32 out)."""

    compute_dtype = "bfloat16"

    def __init__(self, wrapped: Any):
        check = getattr(wrapped, "check_bfloat16", None)
        if check is not None:  # a backend that cannot run the products says why (old GPUs)
            check()
        self.wrapped = wrapped

    def __getattr__(self, name: str) -> Any:
        if name == "wrapped":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self.wrapped, name)

    def __repr__(self) -> str:
        return f"<mlpx backend {self.wrapped.name!r}, mixed_bfloat16>"

    def matmul(self, a: Array, b: Array, out: Array, trans_a: bool = False,
               trans_b: bool = False) -> Array:
        return self.wrapped.matmul_bf16(a, b, out, trans_a, trans_b)
