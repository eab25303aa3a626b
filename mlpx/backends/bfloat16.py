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
- the derivative of sigmoid, tanh, ELU, GELU, SiLU and softplus reads the saved activations
  (z and y) rounded to bfloat16, as kept when they are stored in bfloat16
  (mlpx.layers.bf16_chain); it is computed in float32 (or wider) from those values;
- nothing else is rounded: bias, activation, the other derivatives, loss and softmax,
  gradient sums and the optimiser run in float32 on float32 arrays, as under "float32".

The derivative's rounded input moves it by at most |dy| * 2**-8 (|dy| * alpha * 2**-8 for
ELU): for each of these f, |f'(v') - f'(v)| <= 2**-8 where v' is v rounded to bfloat16
(tests/test_bfloat16.py checks it on a dense grid).
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any

_EXP_MASK = 0x7F800000
_ABS_MASK = 0x7FFFFFFF
_QUIET_BIT = 0x00400000
_HIGH_HALF = 0xFFFF0000


def _derivative_codes() -> frozenset[int]:
    from .. import activations

    return frozenset(c.code for c in (activations.Sigmoid, activations.Tanh, activations.ELU,
                                      activations.GELU, activations.SiLU, activations.Softplus))


#: activations whose derivative reads bfloat16 saved activations under the policy
ROUNDED_DERIVATIVE = _derivative_codes()


def _rounded_bits(x: Array, xp: Any) -> Array:
    """uint32 bits of float32 `x` rounded to bfloat16 (low 16 bits zero)."""
    u = xp.ascontiguousarray(x, dtype=xp.float32).view(xp.uint32)
    # round half to even: add 0x7FFF plus the lowest kept bit, then cut the low half
    r = u + (xp.uint32(0x7FFF) + ((u >> xp.uint32(16)) & xp.uint32(1)))
    r &= xp.uint32(_HIGH_HALF)
    nan = (u & xp.uint32(_ABS_MASK)) > xp.uint32(_EXP_MASK)
    # the add could carry a NaN's payload into the exponent or the sign
    quiet = (u | xp.uint32(_QUIET_BIT)) & xp.uint32(_HIGH_HALF)
    if xp is not np:  # no data-dependent branch: on a GPU it would wait for the device
        return xp.where(nan, quiet, r)
    if nan.any():
        r[nan] = quiet[nan]
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

    def act_backward(self, dy: Array, z: Array, y: Array, act: Any, out: Array,
                     slopes: Array | None = None) -> Array:
        z, y = self._saved(act, z, y)
        return self.wrapped.act_backward(dy, z, y, act, out, slopes)

    def act_backward_bias_grad(self, dy: Array, z: Array, y: Array, act: Any, out: Array,
                               bias_grad: Array) -> Array:
        z, y = self._saved(act, z, y)
        return self.wrapped.act_backward_bias_grad(dy, z, y, act, out, bias_grad)

    def _saved(self, act: Any, z: Array, y: Array) -> tuple[Array, Array]:
        """z and y as the derivative reads them: rounded to bfloat16 for ROUNDED_DERIVATIVE
        (copies: z and y stay as the forward pass left them)."""
        from ..activations import scalar_kernel

        if scalar_kernel(act) not in ROUNDED_DERIVATIVE:
            return z, y
        rounded = self.wrapped.rounded_bf16  # the cpu backend's is one compiled pass
        zr = rounded(z)
        return zr, (zr if y is z else rounded(y))
