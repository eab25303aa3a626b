"""What the ctypes GEMM bindings (`_mkl`, `_onednn`) share: finding a wheel's shared library,
reading a NumPy array as a BLAS operand without copying it, checking GEMM shapes, and the
aligned allocation their scratch buffers and the cpu backend's arrays use.

A leaf module: it imports no other backend module, so the bindings and the cpu backend can
all import it without a circle.
"""

from __future__ import annotations

import math
import os
import sys
import sysconfig
from typing import Any

import numpy as np

# CBLAS enums (the operand flags of `blas_operand`)
ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112

#: byte alignment of the arrays the cpu backend allocates: a cache line (and an AVX-512
#: register). NumPy's allocator gives 16; OpenBLAS packs aligned panels faster (the step's
#: figures: docs/benchmarks.md, "Figures behind choices in the code").
ALIGNMENT = 64
# Below this size alignment buys nothing measurable and the padding would be most of the array.
_ALIGN_MIN_BYTES = 4096


def thread_scratch(local: Any, slot: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """The calling thread's aligned work array of `shape` in `local` (a threading.local)
    under `slot`: one flat array per slot, grown when a larger shape asks, kept for the next
    call (a view of its first elements otherwise)."""
    size = math.prod(shape)
    held = getattr(local, slot, None)
    if held is None or held.dtype != dtype or held.size < size:
        held = aligned_empty(size, dtype)
        setattr(local, slot, held)
    return held[:size].reshape(shape)


def aligned_empty(shape: tuple[int, ...] | int, dtype: Any) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on an ALIGNMENT-byte boundary.

    A view into a slightly larger byte buffer: NumPy has no aligned allocation of its own.
    """
    dt = np.dtype(dtype)
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    nbytes = dt.itemsize * math.prod(shape)  # math.prod: np.prod costs microseconds here
    if nbytes < _ALIGN_MIN_BYTES:
        return np.empty(shape, dt)
    shape = tuple(int(s) for s in shape)
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes].view(dt).reshape(shape)


def _candidate_dirs() -> list[str]:
    dirs = [os.path.join(p, "lib") for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)]
    dirs.append(os.path.join(sys.prefix, "Library", "bin"))  # Windows wheels
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        dirs.append(libdir)
    seen: list[str] = []
    for d in dirs:
        if d not in seen and os.path.isdir(d):
            seen.append(d)
    return seen


def find_wheel_library(env_var: str, names: tuple[str, ...]) -> str | None:
    """Path of a shared library a wheel installed in `<prefix>/lib` (the first of `names`
    found), or the path in `env_var` when that is set; None when neither."""
    explicit = os.environ.get(env_var)
    if explicit:
        return explicit
    for d in _candidate_dirs():
        for name in names:
            path = os.path.join(d, name)
            if os.path.exists(path):
                return path
    return None


def _leading_dim(a: np.ndarray) -> int | None:
    """Leading dimension of a row-major matrix whose rows may be strided (None: unusable)."""
    s0, s1 = a.strides
    item = a.itemsize
    if s1 != item or s0 % item or s0 < 0:
        return None
    return max(s0 // item, a.shape[1], 1)


def blas_operand(a: np.ndarray, trans: bool) -> tuple[np.ndarray, int, int] | None:
    """(array, NO_TRANS or TRANS, ld) for op(a) without copying, when BLAS can read a's
    layout (row- or column-major, any leading dimension); None otherwise."""
    ld = _leading_dim(a)
    if ld is not None:
        return a, TRANS if trans else NO_TRANS, ld
    t = a.T  # a column-major array is the transpose of a row-major one
    ld = _leading_dim(t)
    if ld is not None:
        return t, NO_TRANS if trans else TRANS, ld
    return None


def gemm_dims(a: np.ndarray, b: np.ndarray, out: np.ndarray, trans_a: bool,
              trans_b: bool) -> tuple[int, int, int]:
    """(m, n, k) of out = op(a) @ op(b) for 2-D operands; ValueError when they don't fit."""
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != kb or out.shape != (m, n):
        raise ValueError(
            f"matmul shapes do not match: op(a) is {(m, k)}, op(b) is {(kb, n)}, "
            f"out is {out.shape}; out must be ({m}, {n}) and the inner sizes equal"
        )
    return m, n, k
