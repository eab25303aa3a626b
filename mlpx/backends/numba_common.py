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

# importing Numba loads SciPy (and its own BLAS) where SciPy is installed: size that pool too
_threads.apply(force=True)

jit = nb.njit(cache=True, nogil=True, error_model="numpy")


@jit
def sigmoid(v):
    """CUDA twin: mlpx_sigmoid in kernels/common.cuh. Both branches avoid overflow of exp."""
    if v >= 0.0:
        return 1.0 / (1.0 + math.exp(-v))
    e = math.exp(v)
    return e / (1.0 + e)
