"""Test utilities shared by several test modules (imported as `from _helpers import ...`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np


def central_differences(
    f: Callable[[np.ndarray], float],
    x: np.ndarray,
    h: float = 1e-6,
    indices: Iterable[tuple[int, ...]] | None = None,
) -> np.ndarray:
    """(f(x + h e_i) - f(x - h e_i)) / 2h for every element i of `x` (or those in `indices`).

    `x` (float64) is perturbed in place, one element at a time, and restored: `f` sees the
    perturbed array and may read it through a closure.
    """
    fd = np.zeros_like(x)
    for idx in np.ndindex(x.shape) if indices is None else indices:
        old = x[idx]
        x[idx] = old + h
        up = f(x)
        x[idx] = old - h
        down = f(x)
        x[idx] = old
        fd[idx] = (up - down) / (2 * h)
    return fd


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Number of representable values between a and b (same dtype; +0 == -0)."""
    assert a.dtype == b.dtype
    itype = np.int64 if a.dtype == np.float64 else np.int32
    mask = np.iinfo(itype).max

    def ordered(x):
        i = x.view(itype).astype(np.int64)
        return np.where(i < 0, -(i & mask), i)

    return np.abs(ordered(a) - ordered(b))


def assert_ulp(a, b, max_ulp: int, scale: np.ndarray | None = None) -> None:
    assert np.isfinite(a).all() == np.isfinite(b).all()
    if scale is None:
        d = ulp_distance(a, b)
        assert d.max() <= max_ulp, f"{d.max()} ULP apart (allowed {max_ulp})"
    else:  # cancellation: the error is relative to the terms, not to the small result
        bound = max_ulp * np.spacing(np.maximum(np.abs(scale), np.abs(b)).astype(a.dtype))
        excess = np.abs(a.astype(np.float64) - b.astype(np.float64)) - bound
        assert excess.max() <= 0


def loss_targets_data(n: int, n_in: int, n_out: int, loss: str, dtype, seed: int = 0):
    """Random inputs and targets of the kind each loss takes: class labels for
    cross_entropy, 0/1 rows for bce, real values otherwise."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in)).astype(dtype)
    if loss == "cross_entropy":
        y = rng.integers(0, n_out, n)
    elif loss == "bce":
        y = (rng.random((n, n_out)) > 0.5).astype(dtype)
    else:
        y = rng.standard_normal((n, n_out)).astype(dtype)
    return X, y


def library_threads() -> tuple[int | None, int]:
    """(NumPy's OpenBLAS thread count as threadpoolctl reads it, libgomp's
    omp_get_max_threads in this thread): what a one-thread GEMM route must set back."""
    import ctypes
    import re

    from threadpoolctl import threadpool_info

    numpy_blas = [d["num_threads"] for d in threadpool_info()
                  if d.get("internal_api") == "openblas"
                  and re.search(r"numpy[/\\.]", d.get("filepath") or "")]
    return (numpy_blas[0] if numpy_blas else None,
            ctypes.CDLL("libgomp.so.1").omp_get_max_threads())


def threads_back(path: str, before: tuple[int | None, int]) -> tuple[int | None, int]:
    """What library_threads() must read after GEMMs on a one-thread route of `path`
    ("numpy" or "onednn"): that library at mlpx's count, the other as it was `before`
    (another library in the process, PyTorch's OpenMP for one, may have set it)."""
    import mlpx

    threads = mlpx.get_num_threads()
    return (threads, before[1]) if path == "numpy" else (before[0], threads)


def with_statistics(model, seed: int = 3):
    """`model` with BatchNorm running statistics and norm/PReLU parameters (gamma, beta,
    slopes) away from their initial values, which would hide a wrong formula."""
    from mlpx.layers import BatchNorm

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, BatchNorm):
            layer.running_mean[...] = rng.standard_normal(layer.running_mean.shape)
            layer.running_var[...] = rng.uniform(0.3, 3.0, layer.running_var.shape)
        for p in layer.parameters():
            if p.name in ("gamma", "beta", "slopes"):
                p.data[...] = rng.uniform(-1.5, 1.5, p.data.shape)
    return model
