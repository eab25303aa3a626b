"""bfloat16 matrix products on the GPU: the cuda backend's `matmul_bf16` ("mixed_bfloat16").

Each product rounds both float32 operands to bfloat16 with the `to_bfloat16` kernel
(kernels/bfloat16.cu: the reference's round-to-nearest-even, bit for bit) and hands them to
one cuBLAS `cublasGemmEx` call with CUDA_R_16BF inputs, CUBLAS_COMPUTE_32F (float32
accumulation, on tensor cores) and a CUDA_R_32F output: the contract of
mlpx.backends.bfloat16. The float32 GEMMs and their TF32 opt-in are not touched.

cuBLAS is column-major and mlpx row-major: a row-major (r, c) matrix is the column-major
(c, r) matrix of the same memory, so `out = op(a) @ op(b)` runs as the column-major
`out^T = op(b)^T @ op(a)^T`, b first (`cublas_args`). The tests check that mapping on the host
against a NumPy model of GemmEx's column-major semantics.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

#: bfloat16 tensor cores (and cuBLAS's bfloat16 GEMMs) start with compute capability 8.0.
MIN_COMPUTE_CAPABILITY = 80
#: Error of one float32 addition in the products' sums, for their bound
#: |out - exact| <= K * ACCUMULATION_UNIT * (|a| @ |b|): one float32 ulp rather than half,
#: since tensor cores may truncate their float32 sums instead of rounding them.
ACCUMULATION_UNIT = 2.0**-23

# cuBLAS / CUDA enum values (cublas_api.h, library_types.h), used where CuPy lacks the name
_OP_N, _OP_T = 0, 1
_CUDA_R_32F, _CUDA_R_16BF = 0, 14
_COMPUTE_32F = 68
_GEMM_DEFAULT = -1


class GemmArgs(NamedTuple):
    """The shape arguments of one column-major GemmEx call (C = op(A) @ op(B), C is m x n)."""

    transa: int
    transb: int
    m: int
    n: int
    k: int
    lda: int
    ldb: int
    ldc: int


def product_shape(a_shape: tuple[int, ...], b_shape: tuple[int, ...], trans_a: bool,
                  trans_b: bool) -> tuple[int, int, int, int]:
    """(M, N, K, K of b) of the row-major product op(a) @ op(b)."""
    m, k = (a_shape[1], a_shape[0]) if trans_a else (a_shape[0], a_shape[1])
    kb, n = (b_shape[1], b_shape[0]) if trans_b else (b_shape[0], b_shape[1])
    return m, n, k, kb


def cublas_args(a_shape: tuple[int, ...], b_shape: tuple[int, ...], trans_a: bool = False,
                trans_b: bool = False) -> GemmArgs:
    """GemmEx arguments computing the row-major `op(a) @ op(b)` of C-contiguous a and b into
    a C-contiguous (M, N) output: the column-major out^T = op(b)^T @ op(a)^T, where b's memory
    is the column-major b^T (leading dimension: b's row length) and a's is a^T."""
    m, n, k, _ = product_shape(a_shape, b_shape, trans_a, trans_b)
    return GemmArgs(transa=_OP_T if trans_b else _OP_N, transb=_OP_T if trans_a else _OP_N,
                    m=n, n=m, k=k, lda=max(1, b_shape[1]), ldb=max(1, a_shape[1]),
                    ldc=max(1, n))


def unsupported_reason(compute_capability: str, device: str = "the GPU") -> str | None:
    """Why the mixed products cannot run on a GPU of this compute capability ("90"), or None."""
    cc = int(compute_capability)
    if cc >= MIN_COMPUTE_CAPABILITY:
        return None
    return (
        f"dtype='mixed_bfloat16' on backend='cuda' needs bfloat16 tensor cores (compute "
        f"capability 8.0 or newer: A100, H100, RTX 30 series and later); {device} has "
        f"{cc // 10}.{cc % 10}, where cuBLAS has no bfloat16 GEMM. Use dtype='float32' on "
        "this GPU, or backend='cpu' for mixed precision"
    )


def gemm(args: GemmArgs, a16: Any, b16: Any, out: Any) -> None:
    """One cublasGemmEx on the current device and stream: bfloat16 `b16` and `a16` (uint16
    CuPy arrays holding the bit patterns), float32 accumulation into float32 `out`."""
    from cupy.cuda import cublas, device

    handle = device.get_cublas_handle()
    one, zero = np.ones((), np.float32), np.zeros((), np.float32)  # host scalars
    host_mode = getattr(cublas, "CUBLAS_POINTER_MODE_HOST", 0)
    mode = cublas.getPointerMode(handle)
    if mode != host_mode:
        cublas.setPointerMode(handle, host_mode)
    bf16 = getattr(cublas, "CUDA_R_16BF", _CUDA_R_16BF)
    try:
        cublas.gemmEx(
            handle, args.transa, args.transb, args.m, args.n, args.k,
            one.ctypes.data, b16.data.ptr, bf16, args.lda, a16.data.ptr, bf16, args.ldb,
            zero.ctypes.data, out.data.ptr, getattr(cublas, "CUDA_R_32F", _CUDA_R_32F),
            args.ldc, getattr(cublas, "CUBLAS_COMPUTE_32F", _COMPUTE_32F),
            getattr(cublas, "CUBLAS_GEMM_DEFAULT", _GEMM_DEFAULT),
        )
    except cublas.CUBLASError as e:
        raise RuntimeError(
            f"cuBLAS refused the bfloat16 product ({e}) for {args}: this CUDA/cuBLAS build "
            "may lack bfloat16 GEMMs; use dtype='float32' on the GPU, or backend='cpu' for "
            "mixed precision"
        ) from e
    finally:
        if mode != host_mode:
            cublas.setPointerMode(handle, mode)


def describe(backend: Any) -> str:
    """One line for `mlpx info` / `mlpx bench`: how the cuda backend runs the mixed products
    on its GPU, or why it cannot."""
    cc = str(backend.compute_capability)
    reason = unsupported_reason(cc, f"GPU {backend.device_id}")
    if reason:
        return f"not available: {reason}"
    return (f"native: cuBLAS GemmEx, bfloat16 operands rounded on the GPU, float32 accumulation "
            f"on tensor cores (compute capability {cc[:-1]}.{cc[-1]})")
