"""Optional Intel MKL GEMMs for the cpu backend (`pip install mlpx[mkl]`).

`cblas_sgemm`/`cblas_dgemm` from `libmkl_rt` (shipped by the `mkl` wheel in `<prefix>/lib`),
called through ctypes: transposes are BLAS flags (no copies) and the product is written into
the caller's preallocated `out`. Nothing here is imported or loaded by `import mlpx`; the
library is opened on the first GEMM of the cpu backend (or when `ops.blas` is read).

Which GEMMs run where is chosen by `MLPX_BLAS` (or `ops.blas = ...`):
  auto  (default) oneDNN where its wheel is installed, or NumPy's BLAS where measured
        faster (per GEMM shape: mlpx.backends.gemm_routes); else the
        faster of MKL and NumPy's BLAS on this machine: measured once (the GEMMs of a
        784-1024-1024-10 training step at batches 256 and 1024, alternated, best of 3) and
        cached per processor, thread count and library versions in
        <cache dir>/blas_choice.json (mlpx.backends.measured); NumPy's BLAS without MKL, or
        unless MKL is at least 3 % faster;
  onednn, mkl, numpy  that library (an error saying how to install it when it is missing).
Which library wins depends on the processor: MKL lost to OpenBLAS on the AMD EPYC benchmark
machines and won on an Intel Xeon (the figures: docs/benchmarks.md), hence the measurement.

Threads: MKL's pool gets mlpx's thread count when it is loaded (mlpx.backends.threads:
`mlpx.set_num_threads`, MLPX_NUM_THREADS, OMP_NUM_THREADS, else the usable CPUs), and
`set_num_threads` here changes it at run time; threadpoolctl also sees the library once it is
loaded. The threading layer is
MKL's default (Intel OpenMP) unless MKL_THREADING_LAYER says otherwise.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from . import measured
from .gemm_plumbing import ROW_MAJOR, blas_operand, find_wheel_library, gemm_dims
from .threads import get_num_threads as _mlpx_threads

_LIB_NAMES = ("libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so", "libmkl_rt.dylib",
              "mkl_rt.2.dll", "mkl_rt.dll")

_state: dict[str, Any] = {}


def find_library() -> str | None:
    """Path of libmkl_rt from an installed `mkl` wheel (or MLPX_MKL_LIB), else None."""
    return find_wheel_library("MLPX_MKL_LIB", _LIB_NAMES)


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
        _state["path"] = path
    _state["lib"] = lib
    if lib is not None:
        _size_pool(lib, _mlpx_threads())
    return lib


def _size_pool(lib: ctypes.CDLL, n: int) -> None:
    lib.MKL_Set_Num_Threads(int(n))
    # a thread-local count (threadpoolctl sets one) would hide the global one in this thread
    local = getattr(lib, "MKL_Set_Num_Threads_Local", None)
    if local is not None:
        local.argtypes = [ctypes.c_int]
        local(0)


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
    _size_pool(lib, int(n))


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
    m, n, k = gemm_dims(a, b, out, trans_a, trans_b)
    if m == 0 or n == 0:
        return True
    if k == 0:
        out[...] = 0
        return True
    pa, pb = blas_operand(a, trans_a), blas_operand(b, trans_b)
    if pa is None or pb is None or np.may_share_memory(out, a) or np.may_share_memory(out, b):
        return False
    (aa, fa, lda), (bb, fb, ldb) = pa, pb
    fn(ROW_MAJOR, fa, fb, m, n, k, scalar(1.0), aa.ctypes.data, lda, bb.ctypes.data, ldb,
       scalar(0.0), out.ctypes.data, n)
    return True


# ------------------------------------------------------------------ MLPX_BLAS=auto, measured
_AUTO_SIZES = (784, 1024, 1024, 10)
_AUTO_BATCHES = (256, 1024)
_AUTO_MARGIN = 0.97  # MKL must be at least 3 % faster: ties keep the default, NumPy's BLAS


_QUESTION = "blas_choice"


def choice_key() -> str:
    """What the measured choice depends on: processor, threads and both libraries."""
    return measured.machine_key(f"mkl {version()}", f"numpy {np.__version__}")


def cached_choice() -> dict[str, Any] | None:
    """The cached measurement for this machine (what `mlpx bench` records), or None."""
    if not available():
        return None
    return measured.lookup(_QUESTION, choice_key())


def _time_paths() -> tuple[float, float]:
    """Seconds of one pass over the benchmark step's GEMMs with NumPy's BLAS and with MKL:
    the best of 3 rounds, the two libraries alternated within each round."""
    import time

    rng = np.random.default_rng(0)
    calls = []
    for batch in _AUTO_BATCHES:
        for fan_in, fan_out in zip(_AUTO_SIZES[:-1], _AUTO_SIZES[1:], strict=True):
            x = rng.standard_normal((batch, fan_in), dtype=np.float32)
            w = rng.standard_normal((fan_in, fan_out), dtype=np.float32)
            d = rng.standard_normal((batch, fan_out), dtype=np.float32)
            calls.append((x, w, np.empty((batch, fan_out), np.float32), False, False))
            calls.append((x, d, np.empty((fan_in, fan_out), np.float32), True, False))
            calls.append((d, w, np.empty((batch, fan_in), np.float32), False, True))

    def numpy_pass() -> None:
        for a, b, o, ta, tb in calls:
            np.matmul(a.T if ta else a, b.T if tb else b, out=o)

    def mkl_pass() -> None:
        for a, b, o, ta, tb in calls:
            gemm(a, b, o, ta, tb)

    best = [float("inf"), float("inf")]
    numpy_pass()
    mkl_pass()  # warm-up: thread pools started, pages touched
    for _ in range(3):
        for i, fn in enumerate((numpy_pass, mkl_pass)):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best[0], best[1]


def measured_choice() -> str:
    """"mkl" or "numpy": the faster GEMM library here, measured on first use and cached.

    Without MKL the answer is "numpy" and nothing is measured. A cache that cannot be read
    is measured again; one that cannot be written only costs the measurement next time."""
    if not available():
        return "numpy"
    key = choice_key()
    entry = measured.lookup(_QUESTION, key)
    if entry is not None and entry.get("choice") in ("mkl", "numpy"):
        return entry["choice"]
    numpy_s, mkl_s = _time_paths()
    choice = "mkl" if mkl_s < _AUTO_MARGIN * numpy_s else "numpy"
    measured.store(_QUESTION, key, {"choice": choice, "numpy_s": numpy_s, "mkl_s": mkl_s})
    return choice
