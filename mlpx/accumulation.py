"""Gradient accumulation: several backward passes, one optimiser step.

In a hand-written loop a second `model.backward` before `opt.step()` adds its gradients to
the pending ones (PyTorch's behaviour). In `fit(..., gradient_accumulation_steps=k)` every k
consecutive mini-batches form a group: each batch's loss gradient is scaled by its share of
the group's rows (or sample weight), the gradients are summed, and one optimiser step
follows. For a mean loss that step equals, to float rounding, one step on the group's
batches joined into one, while only one mini-batch's activations are ever held in memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def check_accumulation_steps(value: Any) -> int:
    """`gradient_accumulation_steps` as a positive int, or a ValueError saying what it takes."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(
            "gradient_accumulation_steps must be a positive integer (1: a step per batch; "
            f"k: one step per k batches), got {value!r}"
        )
    return int(value)


class GradientStash:
    """Copies of the parameters' gradients, taken before a backward that would overwrite
    them and added back after it (buffers allocated once, on the parameters' device)."""

    def __init__(self) -> None:
        self._saved: list[Any] = []

    def save(self, params: Sequence[Any]) -> None:
        if len(self._saved) != len(params) or any(
                type(s) is not type(p.grad) or s.shape != p.grad.shape
                or s.dtype != p.grad.dtype
                for s, p in zip(self._saved, params, strict=False)):
            self._saved = [p.grad.copy() for p in params]
            return
        for s, p in zip(self._saved, params, strict=True):
            s[...] = p.grad

    def add_back(self, params: Sequence[Any]) -> None:
        for s, p in zip(self._saved, params, strict=True):
            p.grad += s


class Accumulation:
    """fit's grouping of an epoch's mini-batches into optimiser steps of `k` batches each;
    the last group of an epoch may be shorter (it is then averaged over its own rows)."""

    def __init__(self, k: int, n: int, batch_size: int) -> None:
        self.k, self.n, self.batch_size = k, n, batch_size
        self.steps = -(-n // batch_size)
        self._weights: np.ndarray | None = None

    @property
    def active(self) -> bool:
        return self.k > 1

    def first(self, step: int) -> bool:
        """Whether `step` (counted from 0 in the epoch) starts a group."""
        return step % self.k == 0

    def last(self, step: int) -> bool:
        """Whether `step` ends a group: the optimiser steps after it."""
        return (step + 1) % self.k == 0 or step == self.steps - 1

    def boundary(self, done: int) -> bool:
        """Whether `done` completed steps leave no group half accumulated."""
        return done % self.k == 0 or done >= self.steps

    def _rows(self, step: int) -> tuple[int, int, int, int]:
        lo = step * self.batch_size
        hi = min(lo + self.batch_size, self.n)
        g_lo = (step - step % self.k) * self.batch_size
        g_hi = min(g_lo + self.k * self.batch_size, self.n)
        return lo, hi, g_lo, g_hi

    def begin_epoch(self, weights: np.ndarray | None, order: np.ndarray | None) -> None:
        """Take the epoch's sample weights (host, one per row; None: unweighted) in the
        epoch's batch order, so that groups are weighted like one joined batch."""
        self._weights = None
        if weights is not None and self.active:
            self._weights = weights if order is None else weights[order]

    def share(self, step: int) -> float:
        """The factor for the loss gradient of `step`'s batch: its rows (or, with sample
        weights, its weight) over the whole group's."""
        lo, hi, g_lo, g_hi = self._rows(step)
        weights = self._weights
        if weights is None:
            return (hi - lo) / (g_hi - g_lo)
        group = float(weights[g_lo:g_hi].sum())
        return float(weights[lo:hi].sum()) / group if group > 0 else 0.0
