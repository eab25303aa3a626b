"""Which library runs each float32 GEMM of the cpu backend, on how many threads, and whether a
page-strided operand is copied first: measured per shape class on this machine.

Which library wins a GEMM depends on the processor, the shape and the transposes (on a 2-core
AMD EPYC NumPy's OpenBLAS beat oneDNN on every GEMM of the 784-1024-1024-10 step at batch 256
and lost some at 1024, where a week earlier oneDNN had won the step; other processors rank
them otherwise), so nothing here is a constant. A shape class is the transpose case, the
size of m*n*k (a power of two), whether the smallest dimension is narrow, and whether the
right-hand operand is transposed with rows a multiple of 4 KiB apart (rows that map onto the
same cache sets, which a padded copy avoids).

One library's threads run every multi-threaded GEMM of a process (the pool library: the
default unless another ran the benchmark models' step GEMMs faster here); another library
runs a GEMM only on one thread, in the calling thread. The first GEMM of a class times its
candidate routes on operands of the same shapes (the default first; alternated rounds;
medians) and keeps another only when it is at least `MARGIN` faster. The answers are
cached per processor, thread count, library versions and class (mlpx.backends.measured), so
a later process only looks them up.

Unmeasured, a GEMM takes the default route: the pool library on all threads, or NumPy's
OpenBLAS for products it runs in the calling thread. That is also the answer while the machine
is busy (load average above twice the CPUs): a measurement then would time the other work;
the class is measured in a later process, once the machine is quiet.

Overrides: MLPX_BLAS=onednn|mkl|numpy keeps every GEMM on that library (its routes still
choose the threads and the copy); MLPX_GEMM_MEASURE=0 measures nothing and takes the
default routes.
"""

from __future__ import annotations

import functools
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import measured, numpy_blas
from .gemm_plumbing import aligned_empty

QUESTION = "gemm_routes"
#: a challenger must be at least this much faster (median against median) to replace the
#: default: a tie, or noise, keeps the default
MARGIN = 0.95
_ROUNDS = 5
_ROUNDS_LARGE = 3  # GEMMs above _LARGE_S: fewer rounds keep the first use within seconds
_LARGE_S = 0.02
_SAMPLE_S = 0.002  # each timed sample repeats the call until it lasts about this long
_MAX_REPEATS = 200
# A single thread is only tried where all of them take under this: above it the product
# outweighs waking and meeting the other threads by far, and trying would double the cost.
_ONE_THREAD_MAX_S = 0.002
_PAGE = 4096


@dataclass(frozen=True)
class Route:
    """How one GEMM runs: `path` ("onednn", "mkl" or "numpy"), one thread or all, and for
    oneDNN whether a page-strided transposed right-hand operand is copied to padded rows."""

    path: str
    one_thread: bool = False
    pad: bool = False

    @property
    def label(self) -> str:
        return self.path + (" 1-thread" if self.one_thread else "") + (" pad" if self.pad else "")

    @classmethod
    def from_label(cls, label: str) -> Route:
        words = label.split()
        return cls(words[0], "1-thread" in words[1:], "pad" in words[1:])


def page_strided(b: np.ndarray, trans_b: bool) -> bool:
    """Whether op(b) is a transposed C-contiguous operand whose rows lie a multiple of 4 KiB
    apart (e.g. a 1024-wide float32 weight in dX = delta @ W^T)."""
    return (trans_b and b.ndim == 2 and b.strides[1] == b.itemsize
            and b.strides[0] % _PAGE == 0)


def shape_class(m: int, n: int, k: int, trans_a: bool, trans_b: bool, page: bool) -> str:
    """The class a GEMM's measured route is kept under, e.g. "nt 2^28 page"."""
    case = ("t" if trans_a else "n") + ("t" if trans_b else "n")
    size = max(m * n * k, 1).bit_length() - 1
    return (f"{case} 2^{size}" + (" narrow" if min(m, n, k) <= 32 else "")
            + (" page" if page else ""))


def measuring_enabled() -> bool:
    value = os.environ.get("MLPX_GEMM_MEASURE", "1").strip().lower()
    if value not in ("0", "1", "", "false", "true", "no", "yes"):
        raise ValueError(f"MLPX_GEMM_MEASURE={value!r}: use 1 (measure, the default) or 0 "
                         "(take the default routes without measuring)")
    return value not in ("0", "false", "no")


# OpenBLAS runs a product of up to 65536 * GEMM_MULTITHREAD_THRESHOLD (4) = 262,144 m*n*k in
# the calling thread: it wakes no pool and enters no OpenMP region (~8 us for oneDNN's). Its
# own rule, on any processor: the default route of such products until they are measured.
_OPENBLAS_IN_THREAD_MNK = 65536 * 4


def default_route(pool: str, libraries: Sequence[str], mnk: int) -> Route:
    """The route taken without measuring: the pool library on all threads, except products
    small enough for NumPy's OpenBLAS to run in the calling thread."""
    if pool != "numpy" and "numpy" in libraries and mnk <= _OPENBLAS_IN_THREAD_MNK:
        return Route("numpy")
    return Route(pool)


def candidates(default: Route, pool: str, others: Sequence[str], page: bool,
               one_thread: Sequence[str], threads: int) -> list[Route]:
    """The routes worth timing for one GEMM: `default` first; `pool`, the library whose
    threads run this process's multi-threaded GEMMs, on all of them and on one; each other
    library on one thread only, in the calling thread (two libraries' thread pools in one step
    made it 2-10x slower: one's idle threads spin on the cores the other needs); and oneDNN
    with the padded copy where `page`. `one_thread`: the libraries whose thread count can be
    set per call. On one thread in all, every library runs as it is."""
    routes = [default, Route(pool)]
    if threads <= 1:
        routes += [Route(lib) for lib in others]
    else:
        routes += [Route(lib, one_thread=True) for lib in (pool, *others) if lib in one_thread]
    if page and pool == "onednn":
        routes.append(Route("onednn", pad=True))
    return list(dict.fromkeys(routes))


def choose(routes: Sequence[Route], time_call: Callable[[Route, int], float],
           ) -> tuple[Route, dict[str, float]]:
    """The route to keep and each route's median seconds per call.

    `time_call(route, repeats)` runs the GEMM `repeats` times on `route` and returns the
    seconds taken. Each route is warmed up (pools started, kernels generated, pages touched),
    then timed in rounds that alternate the order; routes[0], the default, stays unless
    another's median is under MARGIN times its own. Single-thread routes are not timed
    where the default takes over _ONE_THREAD_MAX_S per call.
    """
    default = routes[0]
    time_call(default, 1)  # first use: pools started, kernels generated, pages touched
    base = time_call(default, 1)
    timed = [r for r in routes if not (r.one_thread and base > _ONE_THREAD_MAX_S)]
    if len(timed) == 1:
        return default, {default.label: base}
    for r in timed[1:]:
        time_call(r, 1)
    repeats = max(1, min(_MAX_REPEATS, int(_SAMPLE_S / max(base, 1e-7))))
    rounds = _ROUNDS_LARGE if base > _LARGE_S else _ROUNDS
    samples: dict[Route, list[float]] = {r: [] for r in timed}
    for i in range(rounds):
        for r in (timed if i % 2 == 0 else timed[::-1]):
            samples[r].append(time_call(r, repeats) / repeats)
    medians = {r: statistics.median(s) for r, s in samples.items()}
    best = min(timed, key=lambda r: medians[r])
    keep = best if medians[best] < MARGIN * medians[default] else default
    return keep, {r.label: medians[r] for r in timed}


# ------------------------------------------------------------------------- running a route
def _mlpx_threads() -> int:
    from .threads import get_num_threads

    return get_num_threads()


class _ThreadLimit:
    """Sets one library's thread count to one for the calling thread, and back; `library`:
    the file (or soname) of the library whose count it sets."""

    def __init__(self, one: Callable[[], None], back: Callable[[], None], library: str) -> None:
        self.one, self.back, self.library = one, back, library


_limits: dict[str, _ThreadLimit | None] = {}


def thread_limit(path: str) -> _ThreadLimit | None:
    """How to run `path`'s GEMM on one thread, or None where this library offers no way."""
    if path not in _limits:
        _limits[path] = _make_limit(path)
    return _limits[path]


def _make_limit(path: str) -> _ThreadLimit | None:
    import ctypes

    if path == "onednn":  # an OpenMP region takes the calling thread's count
        try:
            gomp = ctypes.CDLL("libgomp.so.1")
        except OSError:
            return None
        gomp.omp_set_num_threads.argtypes = [ctypes.c_int]
        return _ThreadLimit(lambda: gomp.omp_set_num_threads(1),
                            lambda: gomp.omp_set_num_threads(_mlpx_threads()), gomp._name)
    if path == "mkl":
        from . import _mkl

        lib = _mkl.load()
        local = getattr(lib, "MKL_Set_Num_Threads_Local", None)
        if local is None:
            return None
        local.argtypes = [ctypes.c_int]
        return _ThreadLimit(lambda: local(1), lambda: local(0), lib._name)
    # NumPy's own OpenBLAS: SciPy's, which Numba loads too, runs none of np.matmul's GEMMs
    blas = numpy_blas.controller()
    if blas is None:
        return None
    return _ThreadLimit(lambda: blas.set_num_threads(1),
                        lambda: blas.set_num_threads(_mlpx_threads()), blas.filepath)


def numpy_gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, trans_a: bool,
               trans_b: bool) -> None:
    """out = op(a) @ op(b) with NumPy's BLAS (the reference backend's matmul)."""
    np.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)


Gemm = Callable[[np.ndarray, np.ndarray, np.ndarray, bool, bool], None]


@functools.cache
def runner(route: Route) -> Gemm:
    """`gemm(a, b, out, trans_a, trans_b)` along `route`; NumPy's BLAS where the library
    declines a call (a layout it does not read, a forked child for oneDNN)."""
    library: Callable[..., bool] | None = None
    if route.path == "onednn":
        from ._onednn import gemm as onednn_gemm

        library = functools.partial(onednn_gemm, pad=True) if route.pad else onednn_gemm
    elif route.path == "mkl":
        from ._mkl import gemm as library
    limit = thread_limit(route.path) if route.one_thread else None

    if limit is None:
        def gemm(a, b, out, trans_a, trans_b):  # type: ignore[no-untyped-def]
            if library is None or not library(a, b, out, trans_a, trans_b):
                numpy_gemm(a, b, out, trans_a, trans_b)
        return gemm

    one, back = limit.one, limit.back

    def gemm_one_thread(a, b, out, trans_a, trans_b):  # type: ignore[no-untyped-def]
        one()
        try:
            if library is None or not library(a, b, out, trans_a, trans_b):
                numpy_gemm(a, b, out, trans_a, trans_b)
        finally:
            back()
    return gemm_one_thread


# --------------------------------------------------------------------- the route of a call
#: per process: (libraries, shapes, strides, flags) -> (route, its gemm); emptied when the
#: thread count changes (forget)
_memo: dict[tuple, tuple[Route, Gemm]] = {}


#: shape class -> (route label, how it was chosen), for the routes this process took
_chosen: dict[str, tuple[str, str]] = {}


#: how many times the routes were forgotten: whoever keeps routes of its own (the compiled
#: step and forward pass) looks them up again when it changes
generation = 0


def forget() -> None:
    """Look the routes up again (the thread count, part of their cache key, changed)."""
    global generation
    generation += 1
    _memo.clear()
    _keys.clear()
    _pools.clear()
    _chosen.clear()


def chosen() -> dict[str, str]:
    """The routes this process's GEMMs took, by shape class, and whether each was measured
    now, read from the cache of an earlier measurement, or the default (not measured)."""
    return {cls: f"{label} ({how})" for cls, (label, how) in sorted(_chosen.items())}


def _library_versions(libraries: Sequence[str]) -> list[str]:
    from threadpoolctl import threadpool_info

    out = [f"numpy {np.__version__}"]
    # NumPy's own OpenBLAS only: SciPy's, loaded later by Numba in some processes and not in
    # others, would give one machine two keys
    out += sorted({f"{d.get('internal_api')} {d.get('version')}" for d in threadpool_info()
                   if d.get("internal_api") == "openblas"
                   and numpy_blas.bundled_with_numpy(d.get("filepath"))})
    if "onednn" in libraries:
        from . import _onednn

        out.append(f"onednn {_onednn.version()}")
    if "mkl" in libraries:
        from . import _mkl

        out.append(f"mkl {_mkl.version()}")
    return out


_keys: dict[tuple[str, ...], str] = {}  # routes_key's answers, emptied with _memo


def routes_key(libraries: Sequence[str]) -> str:
    """The cache key prefix of the routes measured here for `libraries` (the first is the
    default)."""
    libraries = tuple(libraries)
    if libraries not in _keys:  # threadpool_info walks every loaded library: once
        _keys[libraries] = measured.machine_key(f"paths {'/'.join(libraries)}",
                                                *_library_versions(libraries))
    return _keys[libraries]


def gemm_for(libraries: tuple[str, ...], a: np.ndarray, b: np.ndarray, out: np.ndarray,
             trans_a: bool, trans_b: bool) -> Gemm:
    """The gemm function of this float32 GEMM's route: remembered per shape, else cached per
    class, else measured now (or the default where MLPX_GEMM_MEASURE=0)."""
    memo_key = (libraries, a.shape, b.shape, a.strides, b.strides, trans_a, trans_b)
    found = _memo.get(memo_key)
    if found is None:
        route = route_for(libraries, a, b, out, trans_a, trans_b)
        found = _memo[memo_key] = (route, runner(route))
    return found[1]


def route_for(libraries: tuple[str, ...], a: np.ndarray, b: np.ndarray, out: np.ndarray,
              trans_a: bool, trans_b: bool) -> Route:
    """The route of this float32 GEMM: cached per class, else measured now (or the default
    where MLPX_GEMM_MEASURE=0)."""
    if a.ndim != 2 or b.ndim != 2 or out.ndim != 2:
        return Route(libraries[0])
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    if m * n * k == 0:
        return Route(libraries[0])
    page = page_strided(b, trans_b)
    cls = shape_class(m, n, k, trans_a, trans_b, page)
    if not measuring_enabled():
        route = default_route(libraries[0], libraries, m * n * k)
        _chosen[cls] = (route.label, "default: MLPX_GEMM_MEASURE=0")
        return route
    pool = pool_library(libraries)
    default = default_route(pool, libraries, m * n * k)
    key = f"{routes_key(libraries)} | {cls}"
    entry = measured.lookup(QUESTION, key)
    if entry is not None and isinstance(entry.get("route"), str):
        route = Route.from_label(entry["route"])
        if route.path in libraries and (route == default or _one_pool(route, pool)):
            _chosen[cls] = (route.label, f"measured {entry.get('measured', 'earlier')}")
            return route
    if measured.busy():  # a measurement now would time the other work, and cost more
        _chosen[cls] = (default.label, "default: machine busy, measured once it is quiet")
        return default
    others = [lib for lib in libraries if lib != pool]
    one = [lib for lib in libraries if thread_limit(lib) is not None]
    routes = candidates(default, pool, others, page, one, _mlpx_threads())
    if len(routes) == 1:
        _chosen[cls] = (routes[0].label, "default: nothing else to try")
        return routes[0]
    timer = _operand_timer(a, b, out, trans_a, trans_b)
    route, medians = choose(routes, timer)
    entry = measured.store(QUESTION, key, {"route": route.label, "shape": [m, n, k],
                                           "median_ms": {lb: round(s * 1e3, 4)
                                                         for lb, s in medians.items()}})
    _chosen[cls] = (route.label, f"measured {entry['measured']}")
    return route


#: the training steps whose GEMMs decide the pool library: (layer sizes, batch)
_POOL_STEPS = (((784, 1024, 1024, 10), 256), ((784, 1024, 1024, 10), 1024),
               ((784, 256, 128, 10), 64))
_pools: dict[tuple[str, ...], str] = {}  # pool_library's answers in this process


def pool_library(libraries: tuple[str, ...]) -> str:
    """The one library whose threads run this process's multi-threaded float32 GEMMs: the
    first of `libraries` unless another ran the GEMMs of the benchmark models' training steps
    faster here (the geometric mean of its time ratios under MARGIN); measured once and
    cached like the routes."""
    if len(libraries) == 1 or not measuring_enabled():
        return libraries[0]
    if libraries in _pools:
        return _pools[libraries]
    key = f"{routes_key(libraries)} | pool"
    entry = measured.lookup(QUESTION, key)
    if entry is not None and entry.get("route") in libraries:
        pool, how = entry["route"], f"measured {entry.get('measured', 'earlier')}"
    elif measured.busy():  # the default for this process; measured once the machine is quiet
        pool, how = libraries[0], "default: machine busy, measured once it is quiet"
    else:
        ratios = pool_ratios(libraries, _step_timer(libraries))
        score = {lib: statistics.geometric_mean(r) for lib, r in ratios.items()}
        best = min(score, key=lambda lib: score[lib])
        pool = best if score[best] < MARGIN else libraries[0]
        entry = measured.store(QUESTION, key, {"route": pool, "time_ratio": {
            lib: [round(x, 4) for x in r] for lib, r in ratios.items()}})
        how = f"measured {entry['measured']}"
    _pools[libraries] = pool
    _chosen["thread pool"] = (pool, how)
    return pool


#: seconds to wait, after one library's multi-threaded GEMMs, before timing another's: the
#: first's idle threads spin a while before they sleep, on the cores the second needs (on a
#: 2-core Zen 4 EPYC OpenBLAS's made oneDNN's passes look 30 % slower, and the pool went to
#: OpenBLAS, whose GEMMs alone ran 5-10 % slower there)
_SETTLE_S = 0.2


def pool_ratios(libraries: Sequence[str], time_pass: Callable[[str, int], float],
                rounds: int = _ROUNDS, settle: float = _SETTLE_S) -> dict[str, list[float]]:
    """Per library, its median time over the default's (libraries[0]) for each step of
    _POOL_STEPS; `time_pass(library, step)` times one pass over that step's GEMMs. Rounds
    alternate the order; each library is warmed up first, and timed `settle` seconds after
    the other's last pass."""
    for lib in libraries:
        for step in range(len(_POOL_STEPS)):
            time_pass(lib, step)
    samples = {(lib, step): [] for lib in libraries for step in range(len(_POOL_STEPS))}
    for i in range(rounds):
        for lib in (libraries if i % 2 == 0 else libraries[::-1]):
            if len(libraries) > 1 and settle > 0:
                time.sleep(settle)
            for step in range(len(_POOL_STEPS)):
                samples[lib, step].append(time_pass(lib, step))
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {lib: [med[lib, step] / med[libraries[0], step] for step in range(len(_POOL_STEPS))]
            for lib in libraries}


def _step_timer(libraries: Sequence[str]) -> Callable[[str, int], float]:
    """A `time_pass` for pool_ratios: the forward, dX and dW GEMMs of each step in
    _POOL_STEPS on fresh operands, all threads of one library."""
    rng = np.random.default_rng(0)

    def filled(shape: tuple[int, int]) -> np.ndarray:
        x = aligned_empty(shape, np.float32)
        x[...] = rng.standard_normal(shape, dtype=np.float32)
        return x

    passes = []
    for sizes, batch in _POOL_STEPS:
        calls = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            x, w, d = filled((batch, fan_in)), filled((fan_in, fan_out)), filled((batch, fan_out))
            calls.append((x, w, filled((batch, fan_out)), False, False))
            calls.append((d, w, filled((batch, fan_in)), False, True))
            calls.append((x, d, filled((fan_in, fan_out)), True, False))
        passes.append(calls)

    def time_pass(library: str, step: int) -> float:
        gemm = runner(Route(library))
        t0 = time.perf_counter()
        for a, b, out, ta, tb in passes[step]:
            gemm(a, b, out, ta, tb)
        return time.perf_counter() - t0

    return time_pass


def _operand_timer(a: np.ndarray, b: np.ndarray, out: np.ndarray, trans_a: bool,
                   trans_b: bool) -> Callable[[Route, int], float]:
    """A `time_call` for `choose`: fresh operands of the call's shapes and layouts (the
    caller's arrays are neither read nor written)."""
    rng = np.random.default_rng(0)

    def like(x: np.ndarray) -> np.ndarray:
        y = aligned_empty(x.shape, np.float32)
        y[...] = rng.standard_normal(x.shape, dtype=np.float32)
        return y if x.flags.c_contiguous else np.asfortranarray(y)

    ta, tb, to = like(a), like(b), aligned_empty(out.shape, np.float32)

    def time_call(route: Route, repeats: int) -> float:
        gemm = runner(route)
        t0 = time.perf_counter()
        for _ in range(repeats):
            gemm(ta, tb, to, trans_a, trans_b)
        return time.perf_counter() - t0

    return time_call


def _one_pool(route: Route, pool: str) -> bool:
    """Whether `route` keeps to one thread pool: the pool library's, or one thread."""
    return route.path == pool or route.one_thread or _mlpx_threads() <= 1


def measured_routes(libraries: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The routes measured on this machine for `libraries`, by shape class."""
    head = routes_key(libraries) + " | "
    return {key[len(head):]: entry for key, entry in measured.read_all(QUESTION).items()
            if key.startswith(head) and isinstance(entry, dict)}
