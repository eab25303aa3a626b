"""Output probabilities of a few rows in one compiled call (mlpx.backends.proba_kernels):
what `Loss.proba` (softmax, sigmoid) and scikit-learn's output functions (softmax, expit)
compute in float64 NumPy, without their temporaries (a float64 copy, the shifted values,
their exponentials, the row sums: ~15 us on 64 rows of 10 classes, more than the forward pass
of a small model).

Each function returns None where it does not apply (a loss with another `proba`, outputs that
hold NaN or infinity): the caller's NumPy formula then gives the result, or its error.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np


@functools.cache  # the import machinery once, not on every call
def _kernels() -> Any:
    from . import proba_kernels

    return proba_kernels


@functools.cache
def _transforms() -> dict[type, str]:
    """Loss type -> the kernel of its `proba`, for the built-in losses whose proba is the
    float64 softmax or sigmoid (a subclass that overrides proba is not in it)."""
    from ..losses import BCEWithLogitsLoss, CrossEntropyLoss

    return {CrossEntropyLoss: "softmax_rows", BCEWithLogitsLoss: "sigmoid_rows"}


def loss_proba_in_place(loss: Any, out: np.ndarray) -> np.ndarray | None:
    """`loss.proba(ops, out)` written over `out` (a 2-D float32/float64 NumPy array the caller
    owns), equal to it bit for bit where NumPy's exp is the C library's; None where the loss
    has another proba or out holds NaN or infinity."""
    name = _transforms().get(type(loss))
    if name is None or out.ndim != 2 or out.dtype not in (np.float32, np.float64):
        return None
    return out if getattr(_kernels(), name)(out, out) else None


def softmax64(z: np.ndarray) -> np.ndarray | None:
    """The float64 softmax of each row of z (any float dtype), as
    `e = np.exp(z64 - z64.max(axis=1, keepdims=True)); e / e.sum(axis=1, keepdims=True)`
    computes it; None where z holds NaN or infinity."""
    out = np.empty(z.shape, np.float64)
    return out if _kernels().softmax_rows(z, out) else None


def expit64(z: np.ndarray) -> np.ndarray | None:
    """SciPy's `expit(z.astype(float64))` for a 2-D float z; None where z holds NaN."""
    out = np.empty(z.shape, np.float64)
    return out if _kernels().expit_rows(z, out) else None
