"""oneDNN float32 GEMMs for the cpu backend (the `onednn-cpu-gomp` wheel, x86-64 Linux).

`dnnl_sgemm` from `libdnnl` (installed by the wheel in `<prefix>/lib`), called through
ctypes: row-major, transposes are flags (no copies), the product is written into the caller's
preallocated `out`. Nothing is loaded by `import mlpx`; the library is opened on the first
GEMM of the cpu backend (or when `ops.blas` is read).

Why: oneDNN's JIT kernels ran some GEMMs of the 784-1024-1024-10 training step faster than
NumPy's OpenBLAS on the benchmark machines, and with less spread between runs (its threads
split a GEMM into independent parts and meet once); on others OpenBLAS won. Which library runs
which GEMM is therefore measured on the machine at hand (mlpx.backends.gemm_routes; the
figures: docs/benchmarks.md). oneDNN has no float64 GEMM: float64 stays on NumPy's BLAS.

Threads: an OpenMP pool (GNU libgomp, the system's), sized by mlpx's thread count
(mlpx.backends.threads) when the library is loaded; threadpoolctl sees it as "openmp". GNU
OpenMP cannot run a parallel region in a process forked after it started its threads, so a
forked child (multiprocessing's default start method on Linux) uses NumPy's BLAS from then on.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any

import numpy as np

from .gemm_plumbing import (
    NO_TRANS,
    TRANS,
    aligned_empty,
    blas_operand,
    find_wheel_library,
    gemm_dims,
)

_LIB_NAMES = ("libdnnl.so.3", "libdnnl.so")
_FLAG = {NO_TRANS: b"N", TRANS: b"T"}  # blas_operand's CBLAS flags as dnnl_sgemm's
_SUCCESS = 0

_state: dict[str, Any] = {}
# A transposed right-hand operand whose rows lie a multiple of 4 KiB apart (e.g. a 1024-wide
# float32 weight matrix in dX = delta W^T) can be copied to rows 64 bytes longer first
# (`pad=True`): those strides map its rows onto the same cache sets, which slows some
# processors' kernels. Whether the copy pays, and up to which size, is measured per machine
# and shape class (mlpx.backends.gemm_routes). One scratch per thread and shape.
_PAGE = 4096
_PAD = 64
_MAX_SCRATCH = 8
_local = threading.local()


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint),
                ("gpu_runtime", ctypes.c_uint)]


def find_library() -> str | None:
    """Path of libdnnl from an installed oneDNN wheel (or MLPX_ONEDNN_LIB), else None."""
    return find_wheel_library("MLPX_ONEDNN_LIB", _LIB_NAMES)


def _forked() -> None:
    _state["forked"] = True


def load() -> ctypes.CDLL | None:
    """Open libdnnl once; None when it is not installed or cannot be opened here (e.g. no
    libgomp): the cpu backend then uses NumPy's BLAS. The reason is kept for `error()`."""
    if "lib" in _state:
        return _state["lib"]
    lib = None
    path = find_library()
    if path is not None:
        from . import threads

        threads.prime_openmp()
        try:
            lib = ctypes.CDLL(path)
            dim, vp, f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
            lib.dnnl_sgemm.argtypes = [ctypes.c_char, ctypes.c_char, dim, dim, dim, f32, vp,
                                       dim, vp, dim, f32, vp, dim]
            lib.dnnl_sgemm.restype = ctypes.c_int
            lib.dnnl_version.restype = ctypes.POINTER(_Version)
            _state["path"] = path
        except (OSError, AttributeError) as e:
            _state["error"] = f"{path}: {e}"
            lib = None
    if lib is not None and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_forked)
    _state["lib"] = lib
    if lib is not None:
        from . import threads

        threads.apply(force=True)  # libgomp may have been loaded before, with another size
    return lib


def available() -> bool:
    return load() is not None and not _state.get("forked", False)


def error() -> str | None:
    """Why an installed oneDNN could not be opened, or None."""
    load()
    return _state.get("error")


def version() -> str | None:
    """oneDNN's version, e.g. '3.2.0', or None when not loaded."""
    lib = load()
    if lib is None:
        return None
    v = lib.dnnl_version().contents
    return f"{v.major}.{v.minor}.{v.patch}"


def _padded_copy(b: np.ndarray) -> np.ndarray:
    """`b` copied into this thread's scratch, whose rows are _PAD bytes longer: a view of the
    first b.shape[1] columns (C-contiguous `b` only: the caller checked its leading dim)."""
    cache = getattr(_local, "scratch", None)
    if cache is None:
        cache = _local.scratch = {}
    buf = cache.get(b.shape)
    if buf is None:
        if len(cache) >= _MAX_SCRATCH:
            cache.clear()
        buf = cache[b.shape] = aligned_empty((b.shape[0], b.shape[1] + _PAD // 4), np.float32)
    view = buf[:, : b.shape[1]]
    np.copyto(view, b)
    return view


def gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, trans_a: bool = False,
         trans_b: bool = False, pad: bool = False) -> bool:
    """out = op(a) @ op(b) with oneDNN; False (caller falls back) when it does not apply.

    Handled: float32, 2-D, non-empty, `out` C-contiguous and writeable, `a` and `b` row- or
    column-major with any leading dimension, no operand overlapping `out`. A failed call
    (oneDNN's status) also returns False; the fallback then writes all of `out`. `pad`:
    copy a transposed `b` whose rows lie a multiple of 4 KiB apart to padded rows first.
    Which GEMMs come here at all is measured (mlpx.backends.gemm_routes).
    """
    if a.ndim != 2 or b.ndim != 2 or out.ndim != 2:
        return False
    m, n, k = gemm_dims(a, b, out, trans_a, trans_b)
    if m * n * k == 0:
        return False  # empty: NumPy writes the zeros
    lib = _state.get("lib") or load()
    if (lib is None or _state.get("forked") or out.dtype != np.float32
            or a.dtype != np.float32 or b.dtype != np.float32
            or not out.flags.c_contiguous or not out.flags.writeable):
        return False
    pa, pb = blas_operand(a, trans_a), blas_operand(b, trans_b)
    if pa is None or pb is None or np.may_share_memory(out, a) or np.may_share_memory(out, b):
        return False
    (aa, fa, lda), (bb, fb, ldb) = pa, pb
    if pad and fb == TRANS and (ldb * 4) % _PAGE == 0:
        bb = _padded_copy(bb)
        ldb = bb.strides[0] // 4
    status = lib.dnnl_sgemm(_FLAG[fa], _FLAG[fb], m, n, k, 1.0, aa.ctypes.data, lda,
                            bb.ctypes.data, ldb, 0.0, out.ctypes.data, n)
    return status == _SUCCESS
