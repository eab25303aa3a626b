"""Preconditions on arguments, checked before any kernel: each error names the problem and
the fix."""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

#: DLPack device types (dlpack.h): host memory, CUDA memory, pinned host memory, managed
_DL_CPU, _DL_CUDA, _DL_CUDA_HOST, _DL_CUDA_MANAGED = 1, 2, 3, 13


def _dlpack_device(x: Any) -> int | None:
    """The DLPack device type of a foreign array (None for NumPy and non-DLPack objects)."""
    fn = getattr(x, "__dlpack_device__", None)
    if fn is None or isinstance(x, np.ndarray) or isinstance(x, type):
        return None
    try:
        return int(fn()[0])
    except Exception:  # noqa: BLE001 - a foreign object's failure means "not DLPack"
        return None


def is_device_array(x: Any) -> bool:
    """True for arrays in CUDA memory (CuPy, PyTorch and JAX GPU arrays, anything with
    `__cuda_array_interface__` or a CUDA DLPack device): they are checked on the device."""
    return hasattr(x, "__cuda_array_interface__") or _dlpack_device(x) in (
        _DL_CUDA, _DL_CUDA_MANAGED)


def _detached(x: Any) -> Any:
    """A PyTorch tensor that requires grad, detached (same memory): mlpx only reads it."""
    if getattr(x, "requires_grad", False) is True and callable(getattr(x, "detach", None)):
        return x.detach()
    return x


def _pandas_numbers(x: Any, name: str) -> Any:
    """A pandas DataFrame or Series of numbers as a NumPy array of their common type: also
    columns of pandas' nullable dtypes (Int64, Float64, boolean: what `convert_dtypes()`
    gives) and mixes such as int and bool, which NumPy would turn into an object array. A
    missing value (pd.NA) has no number to stand for it: that is an error naming the column.
    Anything else (not pandas, text, categories) comes back unchanged."""
    if not type(x).__module__.startswith("pandas") or not hasattr(x, "isna"):
        return x
    dtypes = list(x.dtypes) if hasattr(x, "columns") else [getattr(x, "dtype", None)]
    if not dtypes or not all(getattr(d, "kind", "O") in "biuf" for d in dtypes):
        return x  # text or categories: NumPy's conversion and the dtype check say so
    nullable = not all(isinstance(d, np.dtype) for d in dtypes)
    missing = x.isna() if nullable else None  # NaN in NumPy columns: check_features says so
    if missing is not None and bool(np.asarray(missing).any()):
        where = ""
        if hasattr(x, "columns"):
            cols = [str(c) for c, n in missing.sum().items() if n]
            where = f" in column(s) {', '.join(cols[:5])}" + (" ..." if len(cols) > 5 else "")
        count = int(np.asarray(missing).sum())
        raise ValueError(
            f"{name} holds {count} missing value(s) (pd.NA){where}; impute or drop them "
            "first, e.g. df.fillna(value) or df.dropna()"
        )
    numpy_dtypes = [getattr(d, "numpy_dtype", d) for d in dtypes]
    return x.to_numpy(dtype=np.result_type(*numpy_dtypes))


def as_host_or_device(x: Any, name: str) -> Any:
    """NumPy array for host data, CuPy array for CUDA data, sharing the caller's memory
    wherever the layout allows (no copy):

    - CUDA arrays: CuPy's own, anything with `__cuda_array_interface__` (PyTorch, Numba,
      JAX) and CUDA DLPack tensors are wrapped by CuPy;
    - host arrays with DLPack (PyTorch CPU tensors, JAX CPU arrays, ...) through
      `np.from_dlpack`; everything else through `np.asarray` (`__array__`, lists, pandas).
    """
    x = _detached(x)
    if is_device_array(x):
        try:
            import cupy
        except ImportError:
            raise TypeError(
                f"{name} is a GPU array, but CuPy is not installed; copy it to the host first "
                '(e.g. tensor.cpu().numpy()) or install CuPy: pip install "mlpx[cuda12]"'
            ) from None
        if isinstance(x, cupy.ndarray):
            return x
        if hasattr(x, "__cuda_array_interface__"):
            return cupy.asarray(x)  # a view of the same device memory
        return cupy.from_dlpack(x)
    if isinstance(x, np.ndarray):
        return x
    x = _pandas_numbers(x, name)
    if _dlpack_device(x) in (_DL_CPU, _DL_CUDA_HOST):
        try:
            return np.from_dlpack(x)
        except (BufferError, TypeError, RuntimeError, ValueError):
            pass  # e.g. a dtype NumPy lacks (bfloat16): __array__ below names the problem
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError, RuntimeError) as e:
        hint = " (convert it first, e.g. tensor.float())" if "Type" in str(e) else ""
        raise TypeError(f"{name} could not be converted to a numeric array: {e}{hint}") \
            from None
    if arr.dtype == object and hasattr(x, "__dlpack__"):
        try:  # a foreign tensor that np.asarray could not read directly
            arr = np.from_dlpack(x)
        except (BufferError, TypeError, RuntimeError):
            pass  # keep the object array: the dtype check names the problem
    return arr


def to_host(x: Any, name: str) -> np.ndarray:
    """Any array (host, CUDA, DLPack, `__array__`) as a NumPy array; no copy for host data
    whose layout allows it."""
    x = as_host_or_device(x, name)
    return x.get() if is_device_array(x) else x


def check_features(
    X: Any, n_features: int | None, name: str = "X", expected_by: str = "the model expects"
) -> Any:
    """Validate a 2-D numeric, non-empty, finite feature matrix with the model's width.

    ``expected_by`` names who fixed the width, for the error message (a model's input_dim,
    or the data a Standardizer or Perceptron was fitted on).
    """
    X = as_host_or_device(X, name)
    kind = X.dtype.kind
    if kind not in "biuf":
        raise TypeError(
            f"{name} must be numeric (int or float), got dtype {X.dtype}; convert strings or "
            "categories to numbers first (e.g. mlpx.one_hot for class columns)"
        )
    if X.ndim == 1:
        raise ValueError(
            f"{name} must be 2-D (n_samples, n_features), got a 1-D array of shape {X.shape}; "
            "use X.reshape(-1, 1) for a single feature or X.reshape(1, -1) for one sample"
        )
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 samples); pass at least one sample")
    if n_features is not None and X.shape[1] != n_features:
        where = " (its input_dim)" if expected_by == "the model expects" else " features"
        raise ValueError(f"{name} has {X.shape[1]} features, but {expected_by} {n_features}{where}")
    if kind == "f":
        # device arrays are CuPy arrays here (as_host_or_device); CuPy < 14 arrays have no
        # __array_namespace__, so ask the module
        xp = sys.modules["cupy"] if is_device_array(X) else np
        if xp is np:
            ok = _all_finite(X)
        else:
            ok = bool(xp.isfinite(X).all())
        n_bad = 0 if ok else int(X.size - int(xp.isfinite(X).sum()))
        if n_bad:
            raise ValueError(
                f"{name} contains {n_bad} NaN or infinite value(s); impute or drop them "
                "before training (e.g. with a Standardizer fitted on clean data)"
            )
    return X


def _all_finite(X: np.ndarray) -> bool:
    """Whether no value of the float array X is NaN or infinite: for a large array, one
    compiled pass that also gathers the unscaled-input warning's statistics (both
    remembered: mlpx.array_memo)."""
    from .array_memo import MIN_ELEMENTS, input_scan

    if X.size < MIN_ELEMENTS or X.dtype not in (np.float32, np.float64) or X.ndim != 2:
        return bool(np.isfinite(X).all())
    return input_scan(X).finite


def check_same_length(X: Any, y: Any, xname: str = "X", yname: str = "y") -> None:
    if len(X) != len(y):
        raise ValueError(
            f"{xname} and {yname} have different numbers of samples: {len(X)} and {len(y)}"
        )


def check_positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def as_float(value: Any, name: str, expected: str = "a number") -> float:
    """`float(value)`, or a TypeError naming the argument and what it should be."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be {expected}, got {value!r}") from None


def check_float(
    value: Any, name: str, lo: float = 0.0, hi: float | None = None, hi_open: bool = True
) -> float:
    """`value` as a finite float in [lo, hi) (or [lo, hi] with hi_open=False)."""
    v = as_float(value, name)
    bad = not math.isfinite(v) or v < lo
    if hi is not None:
        bad = bad or (v >= hi if hi_open else v > hi)
    if bad:
        upper = "" if hi is None else (f" and < {hi:g}" if hi_open else f" and <= {hi:g}")
        raise ValueError(f"{name} must be a finite number >= {lo:g}{upper}, got {value!r}")
    return v

