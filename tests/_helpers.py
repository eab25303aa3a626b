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
