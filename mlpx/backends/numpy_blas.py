"""Which loaded library is NumPy's own BLAS: the OpenBLAS its wheel bundles (numpy.libs/, or
numpy/.libs/ in older wheels).

Where SciPy is installed Numba loads SciPy's OpenBLAS beside it; that one runs none of
np.matmul's GEMMs. The compiled step binds the GEMMs and thread-count setter of this library
(mlpx.backends.compiled_step) and a one-thread GEMM route sets its thread count
(mlpx.backends.gemm_routes): both take it from here, so they act on the same file.
"""

from __future__ import annotations

import functools
import re
from typing import Any

#: where NumPy wheels keep their bundled libraries (numpy.libs/, or numpy/.libs/)
_NUMPY_LIBS = re.compile(r"[/\\]numpy(\.libs|[/\\]\.libs)[/\\]")


def bundled_with_numpy(filepath: str | None) -> bool:
    """Whether `filepath` is a library that NumPy's wheel bundles."""
    return bool(_NUMPY_LIBS.search(filepath or ""))


@functools.cache
def controller() -> Any | None:
    """threadpoolctl's controller of NumPy's own OpenBLAS, or None where there is not exactly
    one OpenBLAS from NumPy's wheel loaded (a NumPy built against another BLAS, say). NumPy
    loads it on import, so the answer holds for the whole process."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - a dependency
        return None
    found = [c for c in ThreadpoolController().lib_controllers
             if c.internal_api == "openblas" and bundled_with_numpy(c.filepath)]
    return found[0] if len(found) == 1 else None


def path() -> str | None:
    """The file of NumPy's own OpenBLAS as this process loaded it, or None (see
    `controller`)."""
    blas = controller()
    return None if blas is None else blas.filepath
