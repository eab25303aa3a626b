"""Counter-based random numbers (Philox-4x32-10) for dropout masks.

Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011) maps a
128-bit counter and a 64-bit key to 128 random bits with ten rounds of 32x32->64-bit
multiplies, XORs and a Weyl sequence on the key. Nothing is carried from one call to the next,
so any element of any mask can be computed on its own, in any order, on any device: the same
(seed, stream, step) gives the same bits on the CPU (NumPy) and on the GPU (CuPy, or a CUDA
kernel computing the same integer expressions).

The code below uses only `xp` integer operations on uint64 arrays holding 32-bit values, so it
runs unchanged with `xp=numpy` and `xp=cupy`.

Layout used by mlpx (the CUDA kernels must use the same):
    key     = (seed mod 2**32, seed // 2**32 mod 2**32)
    counter = (block, stream, step mod 2**32, step // 2**32)
Block `b` yields the 32-bit words of elements 4b, 4b+1, 4b+2, 4b+3 of the flattened
(row-major) mask; a mask may start at any element (`offset`), so each process of a
data-parallel run draws the part of the global batch's mask that covers its rows. `stream` is
the layer's position in the model (depth first) and `step` the layer's own count of training
forward passes.
"""

from __future__ import annotations

from typing import Any

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9  # golden ratio
PHILOX_W1 = 0xBB67AE85  # sqrt(3) - 1
_MASK32 = 0xFFFFFFFF
ROUNDS = 10


def philox4x32(xp: Any, counter: tuple[Any, Any, Any, Any], key: tuple[int, int]) -> list[Any]:
    """Philox-4x32-10 of a counter (four arrays or ints of 32-bit values) under a 64-bit key.

    Returns four uint64 arrays holding 32-bit words (the same shape as the broadcast counter).
    """
    m32 = xp.uint64(_MASK32)
    c0, c1, c2, c3 = (xp.asarray(c, dtype=xp.uint64) & m32 for c in counter)
    k0, k1 = int(key[0]) & _MASK32, int(key[1]) & _MASK32
    m0, m1, s32 = xp.uint64(PHILOX_M0), xp.uint64(PHILOX_M1), xp.uint64(32)
    for r in range(ROUNDS):
        if r:
            # the key schedule is a Weyl sequence: host integers, identical everywhere
            k0 = (k0 + PHILOX_W0) & _MASK32
            k1 = (k1 + PHILOX_W1) & _MASK32
        p0 = c0 * m0  # 32x32 -> 64 bits: exact in uint64
        p1 = c2 * m1
        c0, c1, c2, c3 = (
            (p1 >> s32) ^ c1 ^ xp.uint64(k0),
            p1 & m32,
            (p0 >> s32) ^ c3 ^ xp.uint64(k1),
            p0 & m32,
        )
    return [c0, c1, c2, c3]


def random_bits(xp: Any, n: int, seed: int, stream: int, step: int, offset: int = 0) -> Any:
    """Words `offset .. offset + n - 1` of (seed, stream, step) as uint32, in mlpx's layout
    (see the module docstring). A data-parallel shard whose rows start at row r of the global
    batch takes `offset = r * features`: the words a single process would give those rows."""
    if n < 0 or offset < 0:
        raise ValueError(f"n and offset must be non-negative, got n={n}, offset={offset}")
    first, end = offset // 4, -(-(offset + n) // 4)
    if end > 2**32:
        raise ValueError(f"at most 2**34 random words per mask, asked for {offset + n}")
    ctr = (
        xp.arange(first, end, dtype=xp.uint64),
        int(stream) & _MASK32,
        int(step) & _MASK32,
        (int(step) >> 32) & _MASK32,
    )
    words = philox4x32(xp, ctr, (int(seed) & _MASK32, (int(seed) >> 32) & _MASK32))
    # word j of block b is element 4b + j
    skip = offset - 4 * first
    out = xp.stack(words, axis=1).reshape(-1)[skip : skip + n]
    return out.astype(xp.uint32)


def drop_threshold(p: float) -> int:
    """The integer t with P(word < t) = t / 2**32 closest to `p`: a unit is dropped iff word < t.

    Comparing integers (never floats) keeps the decision identical on every device.
    """
    return min(int(round(float(p) * 2.0**32)), 2**32 - 1)


def uniform(xp: Any, n: int, seed: int, stream: int, step: int) -> Any:
    """`n` float64 uniforms in [0, 1) with 32 random bits each (word / 2**32)."""
    return random_bits(xp, n, seed, stream, step).astype(xp.float64) * (1.0 / 2.0**32)


__all__ = ["philox4x32", "random_bits", "uniform", "drop_threshold", "ROUNDS"]

