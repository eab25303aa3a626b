"""Helpers shared by the Numba kernels of the cpu backend. CUDA twin: kernels/common.cuh.

`jit` is the one set of options every kernel compiles with: cached on disk (see
`_numba_cache.py`), no GIL, NumPy's error model, and no `fastmath`, which would drop the
NaN/inf semantics the divergence checks rely on.
"""

from __future__ import annotations

from .._numba_cache import configure_cache

configure_cache()

import math  # noqa: E402

import numba as nb  # noqa: E402

from . import threads as _threads  # noqa: E402


def _load_scipy_blas() -> None:
    # Numba takes its BLAS from SciPy where SciPy is installed, loading SciPy's own OpenBLAS
    # while it compiles or loads a kernel; load it now, so the thread count sizes it too
    import importlib.util

    if importlib.util.find_spec("scipy") is not None:
        try:
            import scipy.linalg.cython_blas  # noqa: F401
        except ImportError:  # pragma: no cover - a broken SciPy: Numba manages without it
            pass


_load_scipy_blas()
_threads.apply(force=True)

jit = nb.njit(cache=True, nogil=True, error_model="numpy")
#: the same, inlined by Numba into each caller: a function the caller passes to it is then
#: called directly, as if written there, and the caller stays cacheable
jit_inline = nb.njit(cache=True, nogil=True, error_model="numpy", inline="always")


@jit
def sigmoid(v):
    """CUDA twin: mlpx_sigmoid in kernels/common.cuh. Both branches avoid overflow of exp."""
    if v >= 0.0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)


def stamp_with_callees(dispatchers: tuple, modules: tuple) -> None:
    """Numba keys a cached function on its own file only; a kernel that calls the kernels of
    other modules (`modules`) compiles them into itself, so its cache is kept only while none
    of those files changed either (else an edited kernel would be missing from it)."""
    import os

    stamps = []
    for module in modules:
        st = os.stat(module.__file__)
        stamps.append((st.st_mtime, st.st_size))
    for dispatcher in dispatchers:
        cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
        if cache_file is not None and hasattr(cache_file, "_source_stamp"):
            cache_file._source_stamp = (cache_file._source_stamp, tuple(stamps))
