"""bfloat16 GEMMs from the libraries made for them, for the cpu backend's mixed products.

`dnnl_gemm_bf16bf16f32` (oneDNN, the `onednn-cpu-gomp` wheel) and `cblas_gemm_bf16bf16f32`
(MKL, the `mkl` wheel) take uint16 bfloat16 operands (mlpx.backends.bfloat16's bits) and
accumulate in float32: the contract's product, fed the same rounded operands. They pay off on
processors with bfloat16 instructions (cpu flags avx512_bf16 or amx_bf16); elsewhere the
libraries emulate them no faster than the float32 GEMM on rounded operands (the "emulated"
route, exact too: a product of two bfloat16 values is a float32), so the cpu backend keeps
that route there.

Where the instructions exist, which route runs a product is measured per shape class, like
the float32 GEMMs' routes (mlpx.backends.gemm_routes), and cached per processor, thread count
and library versions. Nothing is assumed of a vendor: on a 2-core AMD EPYC with avx512_bf16
oneDNN ran the 784-1024-1024-10 model's products at 390-440 GFLOP/s against MKL's 130-180 and
the float32 GEMM's 195, while both libraries took 3.8 ms for the 1024 x 1024 x 10 product the
float32 GEMM runs in 0.26 ms; another processor ranks them otherwise. One library takes part
per process (`libraries`: two OpenMP runtimes' idle threads starve each other).

MLPX_BF16_GEMM picks the path: "auto" (default: measured per shape class between the library
that shares the float32 GEMMs' threads, if it agrees with the contract here, checked once,
and the emulated route), "mkl", "onednn" (that library for every product, wherever it runs)
or "emulated". MLPX_GEMM_MEASURE=0 takes the default routes without measuring: the library,
the emulated route for narrow products (a dimension of 32 or less), and the "rows" route for
products of up to ROWS_MAX rows (mlpx.backends.bf16_rows_kernels: both operands rounded as
they are read, which spares a few-row forward pass a rounded copy of each weight matrix; on
any CPU).
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _mkl, _onednn, measured
from .gemm_plumbing import (
    ROW_MAJOR,
    TRANS,
    aligned_empty,
    blas_operand,
    gemm_dims,
    thread_scratch,
)

LIBRARIES = ("onednn", "mkl")  # the default route: the first that agrees with the contract
CHOICES = ("auto", "emulated", *LIBRARIES)
QUESTION = "bf16_gemm_routes"
NATIVE_FLAGS = ("avx512_bf16", "amx_bf16")
_FUNCTIONS = {"mkl": "MKL cblas_gemm_bf16bf16f32", "onednn": "oneDNN dnnl_gemm_bf16bf16f32"}
_state: dict[str, Any] = {}


def cpu_bf16_flags() -> list[str]:
    """The processor's bfloat16 instruction flags (Linux /proc/cpuinfo; [] elsewhere)."""
    from .._compat import cpu_flags

    return cpu_flags(NATIVE_FLAGS)


def _mkl_fn() -> Any:
    try:
        lib = _mkl.load()
        fn = lib.cblas_gemm_bf16bf16f32 if lib is not None else None
    except (OSError, AttributeError):
        return None
    if fn is not None:
        i, vp, f32 = ctypes.c_int, ctypes.c_void_p, ctypes.c_float
        fn.argtypes = [i] * 6 + [f32, vp, i, vp, i, f32, vp, i]
        fn.restype = None
    return fn


def _onednn_fn() -> Any:
    lib = _onednn.load()
    fn = getattr(lib, "dnnl_gemm_bf16bf16f32", None) if lib is not None else None
    if fn is not None:
        dim, vp, f32 = ctypes.c_int64, ctypes.c_void_p, ctypes.c_float
        fn.argtypes = [ctypes.c_char, ctypes.c_char, dim, dim, dim, f32, vp, dim, vp, dim, f32,
                       vp, dim]
        fn.restype = ctypes.c_int
    return fn


def library_gemm(library: str, a16: np.ndarray, b16: np.ndarray, out: np.ndarray,
                 trans_a: bool = False, trans_b: bool = False) -> bool:
    """out = op(a16) @ op(b16) for uint16 bfloat16 operands, float32 `out`, with `library`;
    False (nothing usable written) when the library is missing or refuses the call."""
    key = f"fn_{library}"
    if key not in _state:
        _state[key] = _mkl_fn() if library == "mkl" else _onednn_fn()
    fn = _state[key]
    if (fn is None or a16.dtype != np.uint16 or b16.dtype != np.uint16
            or out.dtype != np.float32 or not out.flags.c_contiguous):
        return False
    m, n, k = gemm_dims(a16, b16, out, trans_a, trans_b)
    if m == 0 or n == 0 or k == 0:
        out[...] = 0
        return True
    pa, pb = blas_operand(a16, trans_a), blas_operand(b16, trans_b)
    if pa is None or pb is None:
        return False
    (aa, fa, lda), (bb, fb, ldb) = pa, pb
    if library == "mkl":
        fn(ROW_MAJOR, fa, fb, m, n, k, 1.0, aa.ctypes.data, lda, bb.ctypes.data, ldb, 0.0,
           out.ctypes.data, n)
        return True
    flag = {True: b"T", False: b"N"}
    status = fn(flag[fa == TRANS], flag[fb == TRANS], m, n, k, 1.0, aa.ctypes.data, lda,
                bb.ctypes.data, ldb, 0.0, out.ctypes.data, n)
    return status == 0


def agrees_with_contract(library: str, seed: int = 0) -> bool:
    """Whether `library` computes the contract's product on this machine: the float64 product
    of the rounded operands within float32 accumulation error, in every transpose."""
    from .bfloat16 import round_to_bfloat16, to_bfloat16_bits

    rng = np.random.default_rng(seed)
    m, n, k = 33, 17, 129
    for ta, tb in ((False, False), (True, False), (False, True)):
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
        out = np.full((m, n), np.nan, np.float32)
        if not library_gemm(library, to_bfloat16_bits(a), to_bfloat16_bits(b), out, ta, tb):
            return False
        ra = round_to_bfloat16(a).astype(np.float64)
        rb = round_to_bfloat16(b).astype(np.float64)
        ra, rb = (ra.T if ta else ra), (rb.T if tb else rb)
        bound = k * 2.0**-24 * (np.abs(ra) @ np.abs(rb))
        if not (np.abs(out - ra @ rb) <= bound).all():
            return False
    return True


def choice() -> str:
    """The bfloat16 GEMM policy here: "emulated" (every product: MLPX_BF16_GEMM=emulated),
    "mkl" or "onednn" (that library for every product: MLPX_BF16_GEMM asked for it), or
    "measured" (per shape class among `libraries()`, the emulated route and, for a few rows,
    the "rows" route; see the module notes)."""
    if "choice" in _state:
        return _state["choice"]
    asked = os.environ.get("MLPX_BF16_GEMM", "auto").strip().lower() or "auto"
    if asked not in CHOICES:
        raise ValueError(f"MLPX_BF16_GEMM must be one of {', '.join(CHOICES)}, got {asked!r}")
    if asked in ("emulated", "auto"):
        picked = "measured" if asked == "auto" else "emulated"
    else:
        picked = asked if agrees_with_contract(asked) else "emulated"
    _state["choice"] = picked
    return picked


def libraries() -> list[str]:
    """The bfloat16 GEMM library the measured routes choose beside the emulated one: one per
    process, that of the float32 GEMMs' thread pool where it computes the contract here (MKL
    under MLPX_BLAS=mkl, else oneDNN), else the other. Two OpenMP runtimes in one process
    starve each other: after each MKL call its idle threads spin for 200 ms on the cores
    oneDNN's need (a 4.5 ms oneDNN product then took 24 ms). None without bfloat16
    instructions: the libraries then emulate them, no faster than the emulated route."""
    if "libraries" not in _state:
        picked: list[str] = []
        if cpu_bf16_flags():
            blas = os.environ.get("MLPX_BLAS", "auto").strip().lower()
            order = ("mkl", "onednn") if blas == "mkl" else ("onednn", "mkl")
            picked = next(([lib] for lib in order if agrees_with_contract(lib)), [])
        _state["libraries"] = picked
    return _state["libraries"]


def emulated_gemm(fallback: Callable[..., Any]) -> Callable[..., Any]:
    """The float32 GEMM of the emulated route: the bfloat16 library's own, on its threads,
    where one takes part (a product on another library's threads, e.g. OpenBLAS's when the
    float32 routes chose it, left their idle threads spinning on the cores the library's
    next product needed: oneDNN's 1024 x 1024 x 1024 took 24-26 ms instead of 5); else
    `fallback`, the backend's float32 GEMM."""
    libs = libraries()
    if not libs or choice() != "measured":
        return fallback
    from .gemm_routes import Route, runner

    return runner(Route(libs[0]))


#: the most rows the "rows" route serves (mlpx.backends.bf16_rows_kernels)
ROWS_MAX = 16


def _rows_route(m: int, trans_a: bool, trans_b: bool) -> bool:
    return m <= ROWS_MAX and not trans_a and not trans_b


# ------------------------------------------------------------ the measured route of a shape
_routes: dict[tuple, str] = {}  # per process: (m, n, k, trans_a, trans_b) -> route
#: shape class -> (route, how it was chosen), for the products this process ran
_chosen: dict[str, tuple[str, str]] = {}
_lock = threading.Lock()


def _routes_key() -> str:
    versions = [f"onednn {_onednn.version()}" if "onednn" in libraries() else "",
                f"mkl {_mkl.version()}" if "mkl" in libraries() else ""]
    return measured.machine_key("bf16", *[v for v in versions if v])


def default_route(m: int, n: int, k: int, trans_a: bool = False, trans_b: bool = False) -> str:
    """The route taken without measuring: "rows" for a few rows, else the first agreeing
    library, but the emulated one for a narrow product (a dimension of 32 or less: the
    libraries' packing outweighs it)."""
    if _rows_route(m, trans_a, trans_b):
        return "rows"
    libs = libraries()
    return "emulated" if not libs or min(m, n, k) <= 32 else libs[0]


def route(m: int, n: int, k: int, trans_a: bool, trans_b: bool,
          float32_gemm: Callable[..., Any]) -> str:
    """"emulated" or the library that runs op(a) @ op(b) of these dimensions: the forced
    choice, else cached per shape class, else measured now. `float32_gemm(a, b, out,
    trans_a, trans_b)`: the backend's float32 GEMM, the emulated route's, timed against the
    libraries."""
    picked = choice()
    if picked != "measured":
        return picked
    key = (m, n, k, trans_a, trans_b)
    found = _routes.get(key)
    if found is not None:
        return found
    with _lock:  # one thread measures a class; the others wait for its answer
        found = _routes.get(key)
        if found is None:
            found = _routes[key] = _measured_route(m, n, k, trans_a, trans_b,
                                                   emulated_gemm(float32_gemm))
    return found


def _measured_route(m: int, n: int, k: int, trans_a: bool, trans_b: bool,
                    float32_gemm: Callable[..., Any]) -> str:
    from . import gemm_routes

    cls = gemm_routes.shape_class(m, n, k, trans_a, trans_b, False)
    default = default_route(m, n, k, trans_a, trans_b)
    if m * n * k == 0:
        return "emulated"
    if not gemm_routes.measuring_enabled():
        _chosen[cls] = (default, "default: MLPX_GEMM_MEASURE=0")
        return default
    others = ["emulated", *libraries()] + (["rows"] if _rows_route(m, trans_a, trans_b) else [])
    candidates = [default] + [r for r in others if r != default]
    # the routes timed are part of the key: one added later is measured, not overlooked
    key = f"{_routes_key()} | {cls} | among {'/'.join(sorted(candidates))}, converted"
    entry = measured.lookup(QUESTION, key)
    if entry is not None and entry.get("route") in candidates:
        _chosen[cls] = (entry["route"], f"measured {entry.get('measured', 'earlier')}")
        return entry["route"]
    if measured.busy():  # a measurement now would time the other work
        _chosen[cls] = (default, "default: machine busy, measured once it is quiet")
        return default
    best, medians = gemm_routes.choose(
        [gemm_routes.Route(r) for r in candidates],
        _timer(m, n, k, trans_a, trans_b, float32_gemm))
    entry = measured.store(QUESTION, key, {
        "route": best.path, "shape": [m, n, k],
        "median_ms": {label: round(sec * 1e3, 4) for label, sec in medians.items()}})
    _chosen[cls] = (best.path, f"measured {entry['measured']}")
    return best.path


def _timer(m: int, n: int, k: int, trans_a: bool, trans_b: bool,
           float32_gemm: Callable[..., Any]) -> Callable[..., float]:
    """A `time_call` for gemm_routes.choose: each route on fresh float32 operands of these
    shapes, their conversion included (bits for a library, rounded copies for the emulated
    route; "rows" rounds as it reads): what a product from float32 operands costs, as
    `gemm` runs it. (A training step converts its weights and delta once for two products:
    for the shapes where that matters the product outweighs the conversion.)"""
    import time

    from .bf16_rows_kernels import product as rows_product
    from .numba_bfloat16 import round_into, to_bits_into

    rng = np.random.default_rng(0)

    def filled(shape: tuple[int, int]) -> np.ndarray:
        x = aligned_empty(shape, np.float32)
        x[...] = rng.standard_normal(shape, dtype=np.float32)
        return x

    a = filled((k, m) if trans_a else (m, k))
    b = filled((n, k) if trans_b else (k, n))
    a16, b16 = np.empty(a.shape, np.uint16), np.empty(b.shape, np.uint16)
    ra, rb = np.empty_like(a), np.empty_like(b)
    out = aligned_empty((m, n), np.float32)

    def time_call(r: Any, repeats: int) -> float:
        t0 = time.perf_counter()
        for _ in range(repeats):
            if r.path == "rows":
                rows_product(a, b, out)
                continue
            if r.path != "emulated":
                to_bits_into(a, a16)
                to_bits_into(b, b16)
                if library_gemm(r.path, a16, b16, out, trans_a, trans_b):
                    continue
            round_into(a, ra)
            round_into(b, rb)
            float32_gemm(ra, rb, out, trans_a, trans_b)
        return time.perf_counter() - t0

    return time_call


def chosen() -> dict[str, str]:
    """The routes this process's bfloat16 products took, by shape class, and how each was
    chosen (measured now or earlier, or the default)."""
    return {cls: f"{r} ({how})" for cls, (r, how) in sorted(_chosen.items())}


def forget() -> None:
    """Look the routes up again (the thread count, part of their cache key, changed)."""
    _routes.clear()
    _chosen.clear()


def describe() -> str:
    """One line for `mlpx info` / `mlpx bench`: native or emulated bfloat16, and why."""
    flags = cpu_bf16_flags()
    path = choice()
    taken = chosen()
    routes = ("; routes: " + ", ".join(f"{c} {r}" for c, r in taken.items())) if taken else ""
    if path == "emulated" or not libraries():
        why = ("MLPX_BF16_GEMM=emulated" if path == "emulated"
               else "no avx512_bf16/amx_bf16 on this CPU" if not flags
               else "no bfloat16 GEMM library agreed with the contract")
        return (f"emulated ({why}): float32 GEMMs on rounded operands, slower than float32"
                + routes)
    how = ", ".join(flags)
    if path != "measured":
        return f"native: {_FUNCTIONS[path]} ({how})"
    names = " or ".join(_FUNCTIONS[lib] for lib in libraries())
    return (f"native: {names}, or float32 GEMMs on rounded operands, measured per shape "
            f"class ({how}){routes}")


_scratch = threading.local()


def bits_of(x: np.ndarray, slot: str) -> np.ndarray:
    """`x` (float32) rounded to bfloat16 bits by one compiled pass, into this thread's
    `slot` array (valid until the next call with that slot)."""
    if x.ndim != 2 or x.dtype != np.float32:
        from .bfloat16 import to_bfloat16_bits

        return to_bfloat16_bits(x)
    from .numba_bfloat16 import to_bits_into

    out = thread_scratch(_scratch, slot, x.shape, np.uint16)
    to_bits_into(x, out)
    return out


def gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, trans_a: bool = False,
         trans_b: bool = False, float32_gemm: Callable[..., Any] | None = None) -> bool:
    """The cpu backend's mixed product through the library its shape's route names; False
    on the emulated route (the caller rounds the operands and runs its float32 GEMM)."""
    if a.ndim != 2 or b.ndim != 2 or out.ndim != 2:
        return False
    m, n = out.shape
    k = a.shape[0] if trans_a else a.shape[1]
    library = route(m, n, k, trans_a, trans_b, float32_gemm or _numpy_gemm)
    if library == "emulated":
        return False
    if library == "rows":
        if a.dtype != np.float32 or b.dtype != np.float32 or not out.flags.c_contiguous:
            return False
        from .bf16_rows_kernels import product

        product(a, b, out)
        return True
    return library_gemm(library, bits_of(a, "a"), bits_of(b, "b"), out, trans_a, trans_b)


def _numpy_gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, trans_a: bool,
                trans_b: bool) -> None:
    np.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)
