"""bfloat16 GEMMs from the libraries made for them, for the cpu backend's mixed products.

`cblas_gemm_bf16bf16f32` (MKL, the `mkl` wheel) and `dnnl_gemm_bf16bf16f32` (oneDNN, the
`onednn-cpu-gomp` wheel) take uint16 bfloat16 operands (mlpx.backends.bfloat16's bits) and
accumulate in float32: the contract's product, fed the same rounded operands. They pay off on
processors with bfloat16 instructions (cpu flags avx512_bf16 or amx_bf16); elsewhere the
libraries emulate them no faster than the float32 GEMM on rounded operands, so the cpu backend
keeps that emulated path there.

MLPX_BF16_GEMM picks the path: "auto" (default: a library when the processor has bfloat16
instructions, MKL first, each checked once against the emulated product), "mkl", "onednn"
(that library wherever it runs) or "emulated".
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import numpy as np

from . import _mkl, _onednn
from .gemm_plumbing import ROW_MAJOR, TRANS, blas_operand, gemm_dims

LIBRARIES = ("mkl", "onednn")
CHOICES = ("auto", "emulated", *LIBRARIES)
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
    """The bfloat16 GEMM path here: "mkl", "onednn" or "emulated" (see the module notes)."""
    if "choice" in _state:
        return _state["choice"]
    asked = os.environ.get("MLPX_BF16_GEMM", "auto").strip().lower() or "auto"
    if asked not in CHOICES:
        raise ValueError(f"MLPX_BF16_GEMM must be one of {', '.join(CHOICES)}, got {asked!r}")
    if asked == "emulated" or (asked == "auto" and not cpu_bf16_flags()):
        picked = "emulated"
    else:
        wanted = LIBRARIES if asked == "auto" else (asked,)
        picked = next((lib for lib in wanted if agrees_with_contract(lib)), "emulated")
    _state["choice"] = picked
    return picked


def describe() -> str:
    """One line for `mlpx info` / `mlpx bench`: native or emulated bfloat16, and why."""
    flags = cpu_bf16_flags()
    path = choice()
    if path == "emulated":
        why = ("no avx512_bf16/amx_bf16 on this CPU" if not flags
               else "no bfloat16 GEMM library agreed with the contract")
        return f"emulated ({why}): float32 GEMMs on rounded operands, slower than float32"
    how = ", ".join(flags) if flags else "no bfloat16 instructions: emulated by the library"
    return f"native: {_FUNCTIONS[path]} ({how})"


def gemm(a: np.ndarray, b: np.ndarray, out: np.ndarray, trans_a: bool = False,
         trans_b: bool = False) -> bool:
    """The cpu backend's mixed product through the chosen library; False on "emulated"
    (the caller rounds the operands and runs its float32 GEMM)."""
    library = choice()
    if library == "emulated" or a.ndim != 2 or b.ndim != 2:
        return False
    from .bfloat16 import to_bfloat16_bits

    return library_gemm(library, to_bfloat16_bits(a), to_bfloat16_bits(b), out, trans_a,
                        trans_b)
