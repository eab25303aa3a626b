"""One thread count for every pool the cpu backend uses.

The pools: NumPy's BLAS (OpenBLAS), MKL, oneDNN's OpenMP (GNU libgomp) and Numba's. Each sizes
itself by its own variable, or by every CPU of the machine, so on a busy or CPU-limited
machine (a container with a CPU quota, a job pinned to a few cores) they oversubscribe:
several threads per usable CPU, each waiting on the others inside every GEMM.

The count, first found wins:
  1. `mlpx.set_num_threads(n)`;
  2. the environment variable MLPX_NUM_THREADS;
  3. OMP_NUM_THREADS (the variable the BLAS and OpenMP libraries already read);
  4. the CPUs this process may use: its CPU affinity, capped by a cgroup CPU quota.

It is applied to the pools loaded so far when it is set, and to each library as the cpu
backend loads it (the first GEMM, the first fused kernel), through threadpoolctl for the BLAS
and OpenMP libraries. `mlpx info` shows the count and where it came from.
"""

from __future__ import annotations

import math
import os
import sys
import threading

_ENV = "MLPX_NUM_THREADS"
_lock = threading.Lock()
_requested: int | None = None  # set_num_threads's count
_applied: int | None = None  # the count last given to the pools loaded at the time
_omp_env_ours = False  # OMP_NUM_THREADS was set by prime_openmp, not by the user


def _positive(value: object, what: str) -> int:
    ok = not isinstance(value, bool) and isinstance(value, int) and value >= 1
    if not ok:
        raise ValueError(f"{what} must be a positive integer (a thread count), got {value!r}")
    return int(value)  # type: ignore[arg-type]


def _cgroup_quota() -> int | None:
    """CPUs a cgroup CPU quota allows (rounded up), or None without a quota."""
    try:  # cgroup v2: "<quota> <period>" or "max <period>"
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max" and int(period) > 0:
            return max(1, math.ceil(int(quota) / int(period)))
        return None
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as f:
            quota_us = int(f.read())
        with open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as f:
            period_us = int(f.read())
        if quota_us > 0 and period_us > 0:
            return max(1, math.ceil(quota_us / period_us))
    except (OSError, ValueError):
        pass
    return None


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    return max(1, min(cpus, quota) if quota else cpus)


def _env_count(var: str) -> int | None:
    value = os.environ.get(var, "").split(",")[0].strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        if var == _ENV:
            raise ValueError(
                f"{_ENV}={os.environ[var]!r} is not a thread count; set it to a positive "
                "integer, e.g. MLPX_NUM_THREADS=2, or unset it to use every usable CPU"
            )
        return None  # another library's variable: its own business
    return int(value)


def num_threads_source() -> tuple[int, str]:
    """(thread count, where it came from) — what `mlpx info` prints."""
    if _requested is not None:
        return _requested, "mlpx.set_num_threads"
    for var in (_ENV, "OMP_NUM_THREADS"):
        if var == "OMP_NUM_THREADS" and _omp_env_ours:
            continue
        n = _env_count(var)
        if n is not None:
            return n, var
    return usable_cpus(), "usable CPUs (affinity and cgroup quota)"


def applied_count() -> int | None:
    """The count last given to the pools (None: not yet): a cheap check for whoever keeps
    something sized for the thread count (no environment or cgroup lookup)."""
    return _applied


def get_num_threads() -> int:
    """The thread count mlpx gives every pool it uses (see the module's docstring)."""
    return num_threads_source()[0]


def set_num_threads(n: int) -> None:
    """Use `n` threads in every pool mlpx uses (BLAS, MKL, oneDNN's OpenMP, Numba), now and
    for the libraries it loads later."""
    global _requested
    n = _positive(n, "the thread count")
    _requested = n
    if _omp_env_ours:  # inherited by child processes: keep it saying the same
        os.environ["OMP_NUM_THREADS"] = str(n)
    apply(force=True, start_numba=True)


def apply(force: bool = False, start_numba: bool = False) -> int:
    """Give the thread count to every pool loaded now; returns it. Cheap when nothing
    changed since the last call (`force` re-applies: a library was loaded since)."""
    global _applied
    n = get_num_threads()
    if n == _applied and not force:
        return n
    with _lock:
        # Numba first: starting its OpenMP pool resets that library's count
        apply_numba(n, start=start_numba)
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # pragma: no cover - a dependency; MKL is still sized below
            pass
        else:
            threadpool_limits(n)  # OpenBLAS, MKL, libgomp/libiomp: whatever is loaded
        for name in ("mlpx.backends.gemm_routes", "mlpx.backends._bf16_gemm"):
            routes = sys.modules.get(name)
            if routes is not None and n != _applied:
                routes.forget()  # measured per thread count
        mkl = sys.modules.get("mlpx.backends._mkl")
        if mkl is not None and mkl._state.get("lib") is not None:
            mkl.set_num_threads(n)  # global, for every thread (threadpoolctl's is per thread)
        _applied = n
    return n


def prime_openmp() -> None:
    """Before an OpenMP library is loaded: OMP_NUM_THREADS, unless the user set it. OpenMP
    reads its default pool size once, at load; a size set later (omp_set_num_threads,
    threadpoolctl) holds only for the thread that set it."""
    global _omp_env_ours
    if "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(get_num_threads())
        _omp_env_ours = True


def apply_numba(n: int | None = None, start: bool = False) -> None:
    """Size Numba's pool (never past NUMBA_NUM_THREADS, the size it can start with). mlpx's
    kernels are serial, so the pool is only started here when `start` asks (an explicit
    set_num_threads): starting it costs ~0.1 s."""
    numba = sys.modules.get("numba")
    if numba is None:
        return
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if not start and not getattr(parallel, "_is_initialized", False):
        return
    n = get_num_threads() if n is None else n
    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))


def pool_threads() -> dict[str, int]:
    """Threads per loaded pool, e.g. {"openblas": 2, "openmp": 2, "numba": 2}: what the
    pools themselves report."""
    out: dict[str, int] = {}
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover
        pass
    else:
        for d in threadpool_info():
            out[d.get("internal_api", d.get("user_api", "?"))] = int(d["num_threads"])
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if getattr(parallel, "_is_initialized", False):  # reading it would start the pool
        out["numba"] = int(sys.modules["numba"].get_num_threads())
    return out
