"""Gradient clipping, applied by `fit` after backpropagation and before the optimiser step:

- `clip_norm=c`: if the global L2 norm of all gradients (every parameter together) exceeds c,
  scale every gradient by c / (norm + 1e-6), as torch.nn.utils.clip_grad_norm_;
- `clip_value=v`: clamp every gradient element to [-v, v], as clip_grad_value_.

With both, the norm is clipped first. `fit` records the global gradient norm before
clipping of each epoch's last step as History "grad_norm" (computed on the device, read once
per epoch; without clip_norm it is computed on that step only, since a norm costs a pass
over every gradient: its cost is in docs/benchmarks.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .backends.base import Backend
from .preconditions import as_float


def _limit(value: Any, name: str) -> float | None:
    if value is None:
        return None
    v = as_float(value, name, "a positive number or None")
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a positive finite number or None, got {value!r}")
    return v


class GradientClipper:
    """Computes the global gradient norm and clips the gradients in place."""

    def __init__(self, clip_norm: float | None = None, clip_value: float | None = None):
        self.clip_norm = _limit(clip_norm, "clip_norm")
        self.clip_value = _limit(clip_value, "clip_value")

    def __call__(self, ops: Backend, params: Sequence[Any], need_norm: bool = True) -> Any:
        """Clip the gradients of `params`; return their global norm before clipping as a
        0-d float64 device array (None when neither clip_norm nor `need_norm` asks for it).
        """
        grads = [p.grad for p in params]
        norm = None
        if need_norm or self.clip_norm is not None:
            norm = ops.global_norm(grads)
        if self.clip_norm is not None:
            scale = ops.clip_scale(norm, self.clip_norm)
            for g in grads:
                ops.scale_(g, scale)
        if self.clip_value is not None:
            for g in grads:
                ops.clip_(g, -self.clip_value, self.clip_value)
        return norm

    def __repr__(self) -> str:
        return f"GradientClipper(clip_norm={self.clip_norm}, clip_value={self.clip_value})"
