"""Optional Intel MKL GEMMs for the cpu backend (`pip install mlpx[mkl]`).

`cblas_sgemm`/`cblas_dgemm` from `libmkl_rt` (shipped by the `mkl` wheel in `<prefix>/lib`),
called through ctypes: transposes are BLAS flags (no copies) and the product is written into
the caller's preallocated `out`. Nothing here is imported or loaded by `import mlpx`; the
library is opened on the first GEMM of the cpu backend (or when `ops.blas` is read).

Which GEMMs run where is chosen by `MLPX_BLAS` (or `ops.blas = ...`):
  numpy (default) NumPy's BLAS (OpenBLAS in the PyPI wheels);
  mkl   MKL, and an error saying how to install it when it is missing;
  auto  MKL when the library is found, else NumPy's BLAS.
OpenBLAS is the default because it won on the 2-core AMD EPYC benchmark machines (MKL ran
the 784-1024-1024-10 step's GEMMs 6-19 % slower, its width-10 ones 3-5x slower); MKL may win
on Intel CPUs: measure with `MLPX_BLAS=mkl mlpx bench`.

Threads: MKL's pool is sized like NumPy's (MKL_NUM_THREADS, else OMP_NUM_THREADS, else
OPENBLAS_NUM_THREADS, else the CPUs this process may run on), and `set_num_threads` changes it
at run time; threadpoolctl also sees the library once it is loaded. The threading layer is
MKL's default (Intel OpenMP) unless MKL_THREADING_LAYER says otherwise.
"""

from __future__ import annotations

import ctypes
import os
import sys
import sysconfig
from typing import Any

import numpy as np

# CBLAS enums
_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_LIB_NAMES = ("libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so", "libmkl_rt.dylib",
              "mkl_rt.2.dll", "mkl_rt.dll")

_state: dict[str, Any] = {}


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


def find_library() -> str | None:
    """Path of libmkl_rt from an installed `mkl` wheel (or MLPX_MKL_LIB), else None."""
    explicit = os.environ.get("MLPX_MKL_LIB")
    if explicit:
        return explicit
    for d in _candidate_dirs():
        for name in _LIB_NAMES:
            path = os.path.join(d, name)
            if os.path.exists(path):
                return path
    return None


def _default_threads() -> int:
    for var in ("MKL_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        value = os.environ.get(var, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def load() -> ctypes.CDLL | None:
    """Open libmkl_rt once and size its thread pool; None when no library is found.

    Raises OSError (with the path) when a library is found but cannot be opened.
    """
    if "lib" in _state:
        return _state["lib"]
    path = find_library()
    lib = None
    if path is not None:
        lib = ctypes.CDLL(path)
        c_int, vp = ctypes.c_int, ctypes.c_void_p
        c_float, c_double = ctypes.c_float, ctypes.c_double
        head = [c_int, c_int, c_int, c_int, c_int, c_int]  # layout, ta, tb, m, n, k
        lib.cblas_sgemm.argtypes = head + [c_float, vp, c_int, vp, c_int, c_float, vp, c_int]
        lib.cblas_dgemm.argtypes = head + [c_double, vp, c_int, vp, c_int, c_double, vp, c_int]
        lib.cblas_sgemm.restype = lib.cblas_dgemm.restype = None
        lib.MKL_Set_Num_Threads.argtypes = [c_int]
        lib.MKL_Get_Max_Threads.restype = c_int
        lib.MKL_Set_Num_Threads(_default_threads())
        _state["path"] = path
    _state["lib"] = lib
    return lib


def available() -> bool:
    try:
        return load() is not None
    except OSError:
        return False


def set_num_threads(n: int) -> None:
    """Size MKL's thread pool (like threadpoolctl does for NumPy's BLAS)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"thread count must be a positive integer, got {n!r}")
    lib = load()
    if lib is None:
        raise RuntimeError("MKL is not installed: `pip install mkl` (or mlpx[mkl])")
    lib.MKL_Set_Num_Threads(int(n))


def get_num_threads() -> int:
    lib = load()
    return int(lib.MKL_Get_Max_Threads()) if lib is not None else 0


def version() -> str | None:
    """MKL's version string, e.g. '2025.0.1', or None when not loaded."""
    lib = load()
    if lib is None:
        return None
    buf = ctypes.create_string_buffer(256)
    try:
        lib.MKL_Get_Version_String(buf, len(buf))
    except AttributeError:  # pragma: no cover - very old MKL
        return "unknown"
    text = buf.value.decode(errors="replace")
    for word in text.split():
        if word[:1].isdigit():
            return word.rstrip(",").split("-")[0]
    return text.strip()


def _ld(a: np.ndarray) -> int | None:
    """Leading dimension of a row-major matrix whose rows may be strided (None: unusable)."""
    s0, s1 = a.strides
    item = a.itemsize
    if s1 != item or s0 % item or s0 < 0:
        return None
    return max(s0 // item, a.shape[1], 1)


def _operand(a: np.ndarray, trans: bool) -> tuple[np.ndarray, int, int] | None:
    """(array, flag, ld) for op(a) without copying, when BLAS can read a's layout."""
    ld = _ld(a)
    if ld is not None:
        return a, _TRANS if trans else _NO_TRANS, ld
    t = a.T  # a column-major array is the transpose of a row-major one
    ld = _ld(t)
    if ld is not None:
        return t, _NO_TRANS if trans else _TRANS, ld
    return None


def gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, trans_a: bool = False,
         trans_b: bool = False) -> bool:
    """out = op(a) @ op(b) with MKL; False (nothing written) when the arrays don't fit.

    Handled: float32 or float64, all three of one dtype, 2-D, `out` C-contiguous, `a` and
    `b` row- or column-major with any leading dimension, and no operand overlapping `out`.
    Anything else is left to the caller's NumPy fallback.
    """
    lib = _state.get("lib") or load()
    dt = out.dtype
    if (lib is None or a.ndim != 2 or b.ndim != 2 or out.ndim != 2
            or a.dtype != dt or b.dtype != dt or not out.flags.c_contiguous
            or not out.flags.writeable):
        return False
    if dt == np.float32:
        fn, scalar = lib.cblas_sgemm, ctypes.c_float
    elif dt == np.float64:
        fn, scalar = lib.cblas_dgemm, ctypes.c_double
    else:
        return False
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != kb or out.shape != (m, n):
        raise ValueError(
            f"matmul shapes do not match: op(a) is {(m, k)}, op(b) is {(kb, n)}, "
            f"out is {out.shape}; out must be ({m}, {n}) and the inner sizes equal"
        )
    if m == 0 or n == 0:
        return True
    if k == 0:
        out[...] = 0
        return True
    pa, pb = _operand(a, trans_a), _operand(b, trans_b)
    if pa is None or pb is None or np.may_share_memory(out, a) or np.may_share_memory(out, b):
        return False
    (aa, fa, lda), (bb, fb, ldb) = pa, pb
    fn(_ROW_MAJOR, fa, fb, m, n, k, scalar(1.0), aa.ctypes.data, lda, bb.ctypes.data, ldb,
       scalar(0.0), out.ctypes.data, n)
    return True
