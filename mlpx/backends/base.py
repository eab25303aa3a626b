"""The reference backend: every op once, in plain array (`xp`) code.

This class is the readable definition of what each op computes and the fallback every
accelerated backend inherits. Subclasses (`cpu`, `cuda`) override only the ops they run
faster with fused kernels and must produce the same numbers (see the README's parity table).

Conventions shared by all ops:
- arrays are batch-major: activations `(batch, features)`, Dense weights `(in, out)`;
- `out=` arguments are preallocated by the caller and written in place (no allocation in the
  training step);
- elementwise formulas are evaluated in float64 and rounded once to the storage dtype;
- losses use mean reduction, return a 0-d array on the backend's device (reading it is the
  only host synchronisation) and, when `grad` is given, write dLoss/dInput into it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import activations as A

Array = Any


class Backend:
    """Reference backend on NumPy. Subclasses set `xp` to another array module."""

    name: str = "reference"
    xp: Any = np

    def __init__(self) -> None:
        self.device = "cpu"

    def __repr__(self) -> str:
        return f"<mlpx backend {self.name!r}>"

    # ------------------------------------------------------------------ arrays and transfer
    def asarray(self, x: Any, dtype: Any = None) -> Array:
        """`x` as a C-contiguous array of this backend (no copy when it already is one)."""
        return self.xp.ascontiguousarray(self.xp.asarray(x, dtype=dtype))

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Array:
        return self.xp.empty(shape, dtype=dtype)

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> Array:
        return self.xp.zeros(shape, dtype=dtype)

    def copy(self, x: Array) -> Array:
        return x.copy()

    def copy_into(self, dst: Array, src: Array) -> None:
        dst[...] = src

    def take_rows(self, src: Array, idx: Array, out: Array) -> Array:
        """out[k] = src[idx[k]]: gathers a shuffled mini-batch without allocating."""
        self.xp.take(src, idx, axis=0, out=out)
        return out

    def to_float(self, x: Array) -> float:
        """Read a 0-d device value on the host (the one place a GPU backend synchronises)."""
        return float(x)

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on the CPU)."""

    def erf(self, x: Array) -> Array:
        try:
            from scipy.special import erf
        except ImportError:  # pragma: no cover - scipy is present wherever tests run
            return np.vectorize(math.erf, otypes=[np.float64])(x)
        return erf(x)

    # ------------------------------------------------------------------------------- GEMM
    def matmul(
        self, a: Array, b: Array, out: Array, trans_a: bool = False, trans_b: bool = False
    ) -> Array:
        """out = op(a) @ op(b), op = transpose where asked (a BLAS flag, never a copy)."""
        self.xp.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)
        return out

    def sum_rows(self, x: Array, out: Array) -> Array:
        """out[j] = sum_i x[i, j]: the bias gradient."""
        x.sum(axis=0, out=out)
        return out

    # ------------------------------------------------------------------------ activations
    def _f64(self, x: Array) -> Array:
        return x.astype(self.xp.float64, copy=False)

    def bias_act(
        self, z: Array, b: Array | None, act: A.Activation, out: Array, slopes: Array | None = None
    ) -> Array:
        """z += b (in place, z is kept for the backward pass), then out = act(z).

        `out` may be `z` itself for the identity. `slopes` are PReLU's per-unit slopes.
        """
        if b is not None:
            z += b
        if act.code == A.ACT_IDENTITY:
            if out is not z:
                out[...] = z
            return out
        zz = self._f64(z)
        if act.code == A.ACT_PRELU:
            out[...] = act.formula(self, zz, self._f64(slopes))
        else:
            out[...] = act.formula(self, zz)
        return out

    def act_backward(
        self,
        dy: Array,
        z: Array,
        y: Array,
        act: A.Activation,
        out: Array,
        slopes: Array | None = None,
    ) -> Array:
        """out = dL/dz = dy * f'(z) (row-wise Jacobian product for softmax/log_softmax)."""
        if act.code == A.ACT_IDENTITY:
            if out is not dy:
                out[...] = dy
            return out
        args = (self, self._f64(dy), self._f64(z), self._f64(y))
        if act.code == A.ACT_PRELU:
            out[...] = act.derivative(*args, slopes=self._f64(slopes))
        else:
            out[...] = act.derivative(*args)
        return out

    def prelu_backward(
        self, dy: Array, z: Array, slopes: Array, out: Array, dslopes: Array
    ) -> Array:
        """out = dy * f'(z) and dslopes[j] = sum_i dy[i, j] * min(z[i, j], 0) (PReLU)."""
        xp = self.xp
        g, zz = self._f64(dy), self._f64(z)
        out[...] = xp.where(zz > 0, g, self._f64(slopes) * g)
        dslopes[...] = (g * xp.where(zz > 0, 0.0, zz)).sum(axis=0)
        return out

    # ----------------------------------------------------------------------------- losses
    # Each returns the mean loss as a 0-d float64 array and, if `grad` is given, writes
    # dLoss/dInput (already divided by the mean's denominator) into it.

    def softmax_cross_entropy(self, logits: Array, labels: Array, grad: Array | None = None):
        """Cross-entropy of logits against integer labels; stable log-sum-exp."""
        xp = self.xp
        z = self._f64(logits)
        n = z.shape[0]
        m = z.max(axis=1, keepdims=True)
        lse = m + xp.log(xp.exp(z - m).sum(axis=1, keepdims=True))
        rows = xp.arange(n)
        loss = (lse[:, 0] - z[rows, labels]).sum() / n
        if grad is not None:
            g = xp.exp(z - lse)
            g[rows, labels] -= 1.0
            grad[...] = g / n
        return loss

    def softmax_cross_entropy_soft(self, logits: Array, targets: Array, grad: Array | None = None):
        """Cross-entropy of logits against one-hot or probability targets (rows of `targets`)."""
        xp = self.xp
        z = self._f64(logits)
        t = self._f64(targets)
        n = z.shape[0]
        m = z.max(axis=1, keepdims=True)
        lse = m + xp.log(xp.exp(z - m).sum(axis=1, keepdims=True))
        loss = (t * (lse - z)).sum() / n
        if grad is not None:
            grad[...] = (xp.exp(z - lse) * t.sum(axis=1, keepdims=True) - t) / n
        return loss

    def bce_with_logits(self, logits: Array, targets: Array, grad: Array | None = None):
        """Binary cross-entropy on logits: max(x,0) - x t + log1p(exp(-|x|)), mean."""
        xp = self.xp
        x = self._f64(logits)
        t = self._f64(targets)
        loss = (xp.maximum(x, 0.0) - x * t + xp.log1p(xp.exp(-xp.abs(x)))).sum() / x.size
        if grad is not None:
            grad[...] = (A.Sigmoid().formula(self, x) - t) / x.size
        return loss

    def mse(self, y: Array, t: Array, grad: Array | None = None):
        d = self._f64(y) - self._f64(t)
        loss = (d * d).sum() / d.size
        if grad is not None:
            grad[...] = (2.0 / d.size) * d
        return loss

    def l1(self, y: Array, t: Array, grad: Array | None = None):
        d = self._f64(y) - self._f64(t)
        loss = self.xp.abs(d).sum() / d.size
        if grad is not None:
            grad[...] = self.xp.sign(d) / d.size
        return loss

    def nll(self, logp: Array, labels: Array, grad: Array | None = None):
        """Negative log-likelihood of log-probabilities at integer labels."""
        xp = self.xp
        n = logp.shape[0]
        rows = xp.arange(n)
        loss = -self._f64(logp)[rows, labels].sum() / n
        if grad is not None:
            grad[...] = 0.0
            grad[rows, labels] = -1.0 / n
        return loss

    # ------------------------------------------------------------------------- optimisers
    def sgd_update(self, param: Array, grad: Array, lr: float) -> Array:
        """param = param - lr * grad, in place (evaluated in float64, rounded once)."""
        param[...] = self._f64(param) - lr * self._f64(grad)
        return param

    # ---------------------------------------------------------------------------- helpers
    def sum_squares(self, x: Array):
        """sum(x**2) as a 0-d float64 array (for gradient norms)."""
        v = self._f64(x).ravel()
        return v @ v

    def all_finite(self, x: Array) -> bool:
        return bool(self.xp.isfinite(x).all())
