"""Numba kernels that read and write bfloat16 (uint16 bit patterns) for the cpu backend.

They serve Dense stacks under the "mixed_bfloat16" policy whose saved activations are kept
in bfloat16 (mlpx.layers.bf16_chain): the bias + activation kernels write the output's
bfloat16 copy (and the pre-activation's, for an f' that reads z), the derivative kernels read
them, and the GEMM operands are expanded from (or
rounded into) float32 work arrays without temporaries. The rounding is
mlpx.backends.bfloat16's, bit for bit: round-to-nearest-even on the float32 bits, NaN kept
quiet with its sign, overflow to infinity.

`to_bfloat16` is the Numba twin of the cuda backend's operand conversion, the same integer
formula (CUDA twin: kernels/bfloat16.cu); the tests hold the kernel (also run on the
host, tests/cuda_host.py), this twin and the reference against each other bit for bit. Its
arithmetic stays in uint64 holding 32-bit values: in Numba a uint32 mixed with a signed
constant would be promoted to float64.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .numba_activations import ACT_IDENTITY, ACT_RELU, act_scalar, dact_scalar
from .numba_common import jit


@intrinsic
def _f32_bits(typingctx, x):
    """The uint32 bit pattern of a float32 (a reinterpretation, not a conversion)."""
    sig = types.uint32(types.float32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return sig, codegen


@intrinsic
def _bits_f32(typingctx, u):
    """The float32 whose bit pattern is the uint32 `u`."""
    sig = types.float32(types.uint32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


@intrinsic
def rounded(typingctx, x):
    """float32 `x` rounded to bfloat16, as a float32 (low 16 bits zero): the contract's
    formula (to_bf16) in 32-bit integer lanes. Numba widens uint32 arithmetic to 64 bits,
    which halves the lanes of a vectorised loop; this stays in i32."""
    sig = types.float32(types.float32)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)

        def c(v: int) -> ir.Constant:
            return ir.Constant(i32, v)

        u = builder.bitcast(args[0], i32)
        lsb = builder.and_(builder.lshr(u, c(16)), c(1))
        near = builder.and_(builder.add(builder.add(u, c(0x7FFF)), lsb), c(0xFFFF0000))
        nan = builder.icmp_unsigned(">", builder.and_(u, c(0x7FFFFFFF)), c(0x7F800000))
        quiet = builder.and_(builder.or_(u, c(0x00400000)), c(0xFFFF0000))
        return builder.bitcast(builder.select(nan, quiet, near), ir.FloatType())

    return sig, codegen


@jit
def to_bf16(v):
    """float32 `v` rounded to bfloat16, as its uint16 bits (the contract's formula)."""
    u = np.int64(_f32_bits(np.float32(v)))
    if (u & 0x7FFFFFFF) > 0x7F800000:  # NaN: stays a quiet NaN of the same sign
        return np.uint16(((u | 0x00400000) >> 16) & 0xFFFF)
    return np.uint16(((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF)


@jit
def from_bf16(h):
    """The float32 value of bfloat16 bits `h` (exact). CUDA twin: mlpx_bfloat16_float in
    kernels/common.cuh."""
    return _bits_f32(np.uint32(np.uint32(h) << np.uint32(16)))


@jit
def bias_act_bits(z, b, code, alpha, bits):
    """bits = bfloat16(f(z + b)); z is read only (the float32 output of the GEMM).
    CUDA twin: bias_act_bf16 in kernels/activations.cu."""
    n, m = z.shape
    # ReLU and the identity in loops of their own, in float32 (z + b rounded once, as the
    # float64 sum rounded to float32 is): a per-element branch on `code` keeps the compiler
    # from vectorising the loop (2.6 ms against 0.3 ms for 1024 x 1024)
    if code == ACT_RELU:
        for i in range(n):
            for j in range(m):
                v = z[i, j] + b[j]
                bits[i, j] = to_bf16(v if v > np.float32(0.0) else np.float32(0.0))
        return
    if code == ACT_IDENTITY:
        for i in range(n):
            for j in range(m):
                bits[i, j] = to_bf16(z[i, j] + b[j])
        return
    for i in range(n):
        for j in range(m):
            v = np.float64(z[i, j]) + np.float64(b[j])
            v = np.float64(np.float32(v))  # z + b as the float32 path stores it
            bits[i, j] = to_bf16(np.float32(act_scalar(code, v, alpha)))


@jit
def act_bits(z, code, alpha, bits):
    """bits = bfloat16(f(z)): bias_act_bits for a layer without bias."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            bits[i, j] = to_bf16(np.float32(act_scalar(code, np.float64(z[i, j]), alpha)))


@jit
def sign_backward_bits_(dy, bits, code, alpha, bgrad, with_bias):
    """dy = bfloat16(dy * f'(z)) in place, for an f' that needs only the sign of z, read
    from the output's bfloat16 bits (y > 0 exactly where z > 0 for ReLU and LeakyReLU with a
    slope >= 0); with_bias: bgrad = column sums of the unrounded dy * f'(z), in
    `sum_rows`' order and dtype. The rounded result is all the GEMMs that follow read.
    CUDA twin: act_bwd_bf16 in kernels/activations.cu, given the y bits as z's."""
    n, m = dy.shape
    if with_bias:
        bgrad[:] = 0.0
    if code == ACT_RELU or code == ACT_IDENTITY:
        # loops of their own (see bias_act_bits): f' is 1 or 0, so d is dy or zero exactly
        relu = code == ACT_RELU
        for i in range(n):
            for j in range(m):
                h = bits[i, j]
                d = dy[i, j] if (0 < h <= 0x7F80 or not relu) else np.float32(0.0)
                if with_bias:
                    bgrad[j] = bgrad[j] + d
                dy[i, j] = from_bf16(to_bf16(d))
        return
    for i in range(n):
        for j in range(m):
            h = bits[i, j]
            # positive: +0 < y <= +inf; a NaN y counts as z <= 0, as `z > 0` is false for NaN
            sign = 1.0 if 0 < h <= 0x7F80 else -1.0
            d = np.float32(dact_scalar(code, np.float64(dy[i, j]), sign, sign, alpha))
            if with_bias:
                bgrad[j] = bgrad[j] + d
            dy[i, j] = from_bf16(to_bf16(d))


@jit
def bias_act_z_bits(z, b, code, alpha, with_bias, zbits, ybits):
    """zbits = bfloat16(z + b), ybits = bfloat16(f(z + b)): for an f' that reads z (GELU,
    SiLU, softplus); z + b and f(z + b) are the float32 values the float32 path stores.
    with_bias False: no b (it is not read). CUDA twin: bias_act_z_bf16 in
    kernels/activations.cu."""
    n, m = z.shape
    for i in range(n):
        for j in range(m):
            v = np.float64(z[i, j])
            if with_bias:
                v = np.float64(np.float32(v + np.float64(b[j])))
            zbits[i, j] = to_bf16(np.float32(v))
            ybits[i, j] = to_bf16(np.float32(act_scalar(code, v, alpha)))


@jit
def act_backward_bits_(dy, zbits, ybits, code, alpha, bgrad, with_bias):
    """dy = bfloat16(dy * f'(z)) in place, f' evaluated at the bfloat16 z and y kept by the
    forward pass (zbits may be ybits: sigmoid, tanh and ELU read y only, ELU its sign too);
    with_bias: bgrad = column sums of the unrounded dy * f'(z), in `sum_rows`' order and
    dtype. The float32 path's numbers under the policy, whose derivative reads those
    rounded values (mlpx.backends.bfloat16). CUDA twin: act_bwd_bf16 in
    kernels/activations.cu, which leaves delta unrounded (the product rounds it) and leaves
    the bias gradient to sum_rows."""
    n, m = dy.shape
    if with_bias:
        bgrad[:] = 0.0
    for i in range(n):
        for j in range(m):
            v = np.float64(from_bf16(zbits[i, j]))
            y = np.float64(from_bf16(ybits[i, j]))
            d = np.float32(dact_scalar(code, np.float64(dy[i, j]), v, y, alpha))
            if with_bias:
                bgrad[j] = bgrad[j] + d
            dy[i, j] = from_bf16(to_bf16(d))


@jit
def expand_bits(bits, out):
    """out = the float32 values of bfloat16 bits (what an emulated GEMM multiplies)."""
    n, m = bits.shape
    for i in range(n):
        for j in range(m):
            out[i, j] = from_bf16(bits[i, j])


@jit
def to_bits_into(x, out):
    """out = bfloat16 bits of float32 `x` (2-D, any strides; `out` uint16 of its shape): a
    native GEMM's operand in one pass (NumPy's formula takes several, with temporaries)."""
    n, m = x.shape
    for i in range(n):
        for j in range(m):
            out[i, j] = to_bf16(x[i, j])


@jit
def round_into(x, out):
    """out = x rounded to bfloat16, as float32 values (no temporaries)."""
    n, m = x.shape
    for i in range(n):
        for j in range(m):
            out[i, j] = rounded(x[i, j])


# ----------------------------------------------------- twin of kernels/bfloat16.cu
_ABS = np.uint64(0x7FFFFFFF)
_EXP = np.uint64(0x7F800000)
_QUIET = np.uint64(0x00400000)
_HALF_ULP = np.uint64(0x7FFF)
_ONE = np.uint64(1)
_S16 = np.uint64(16)


@jit
def bfloat16_bits(u):
    """bfloat16 bits (as uint64) of the float32 whose bits are `u` (uint64). CUDA twin:
    mlpx_bfloat16_bits in kernels/common.cuh."""
    if (u & _ABS) > _EXP:  # NaN: the add below could carry into the sign
        return (u | _QUIET) >> _S16
    return (u + _HALF_ULP + ((u >> _S16) & _ONE)) >> _S16


@jit
def to_bfloat16(x, out):
    """out[k] = bfloat16 bits of x[k]: `x` the uint32 view of a float32 array, `out` uint16,
    both flat and of one size."""
    for k in range(x.size):
        out[k] = np.uint16(bfloat16_bits(np.uint64(x[k])))
