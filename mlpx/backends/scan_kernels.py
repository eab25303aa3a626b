"""Numba kernels that read a whole input array once, without temporaries: the finite-input
check, and in the same pass the per-feature statistics of the unscaled-input warning on a
strided sample of rows (mlpx.preconditions, mlpx.input_scale).

`fit` pays this on every new array, so it runs at memory speed: np.isfinite(X).all() writes a
boolean array as large as X first and reads it again, about twice this scan's time, and the
statistics of the sampled rows cost nothing more while each row passes by.

Importing this module imports Numba; the callers import it for large float arrays only.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from .numba_common import jit, nb  # nb: Numba, imported after its cache directory is set
from .threads import get_num_threads

#: values from which a second thread pays for itself (its hand-off costs ~50 us): one core
#: does not reach the memory's bandwidth (16384x784 float32 on a 2-core AMD EPYC: 2.7 ms on
#: one thread, 1.8 ms on two)
PARALLEL_MIN = 1 << 21
#: values summed between two looks at the running total (an early exit on the first NaN)
_CHUNK = 1 << 15


# `reassoc` alone lets LLVM vectorise the sum; without `nnan`/`ninf` it keeps v - v, which is
# NaN exactly for NaN and +-inf, and it keeps the total's NaN test
@nb.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def flat_all_finite(flat):
    n = flat.size
    total = flat[0] - flat[0]
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        for i in range(start, stop):
            v = flat[i]
            total += v - v
        if total != total:
            return False
    return True


@nb.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc"})
def _row_finite(row):
    total = row[0] - row[0]
    for j in range(row.size):
        v = row[j]
        total += v - v
    return total == total


@jit
def _scan_rows(x, start, stop, step, sum_sq, top):
    """Rows start..stop-1 of x: False at the first NaN or infinity; on the way, the sum of
    squares and max |value| per feature (float64) of the rows whose index is a multiple of
    `step`."""
    for r in range(start, stop):
        row = x[r]
        if r % step == 0:
            for j in range(row.size):
                v = np.float64(row[j])
                sum_sq[j] += v * v
                a = abs(v)
                top[j] = a if a > top[j] else top[j]
        if not _row_finite(row):
            return False
    return True


class Scan(NamedTuple):
    """What one pass over an array found: whether every value is finite, and the root mean
    square and max |value| per feature of every `step`-th row (meaningful when finite)."""

    finite: bool
    rms: np.ndarray
    top: np.ndarray


def scan(x: np.ndarray, step: int) -> Scan:
    """One pass over the 2-D float array x (any layout; rows shared between mlpx's threads
    from PARALLEL_MIN values on)."""
    n, d = x.shape
    sampled = -(-n // step)
    if n == 0 or d == 0:
        return Scan(True, np.zeros(d), np.zeros(d))
    if not x.flags.c_contiguous:  # rows are not contiguous: NumPy's passes
        rows = np.asarray(x[::step], np.float64)
        return Scan(bool(np.isfinite(x).all()), np.sqrt((rows * rows).mean(axis=0)),
                    np.abs(rows).max(axis=0))
    parts = min(get_num_threads(), x.size // PARALLEL_MIN + 1, n)
    bounds = np.linspace(0, n, parts + 1).astype(np.intp)
    sums = np.zeros((parts, d))
    tops = np.zeros((parts, d))
    pool = _pool(parts - 1) if parts > 1 else None
    others = [pool.submit(_scan_rows, x, bounds[i], bounds[i + 1], step, sums[i], tops[i])
              for i in range(1, parts)]
    finite = bool(_scan_rows(x, 0, bounds[1], step, sums[0], tops[0]))
    finite = all([f.result() for f in others]) and finite
    return Scan(finite, np.sqrt(sums.sum(axis=0) / sampled), tops.max(axis=0))


def all_finite(x: np.ndarray) -> bool:
    """Whether no value of the float array x is NaN or infinite (any layout)."""
    if x.size == 0:
        return True
    if not x.flags.c_contiguous and not x.flags.f_contiguous:
        return bool(np.isfinite(x).all())
    flat = x.ravel(order="K")
    parts = min(get_num_threads(), flat.size // PARALLEL_MIN + 1)
    if parts < 2:
        return bool(flat_all_finite(flat))
    bounds = np.linspace(0, flat.size, parts + 1).astype(np.intp)
    pool = _pool(parts - 1)
    others = [pool.submit(flat_all_finite, flat[a:b])
              for a, b in zip(bounds[1:-1], bounds[2:], strict=True)]
    mine = bool(flat_all_finite(flat[: bounds[1]]))
    return all([f.result() for f in others]) and mine


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def _pool(workers: int) -> ThreadPoolExecutor:
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = _pools[workers] = ThreadPoolExecutor(workers, "mlpx-scan")
        return pool
