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

from .. import activations

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

    def fits_on_device(self, nbytes: int) -> bool:
        """Whether `nbytes` of data should be copied to the device whole (host backends: the
        data already is in host memory, so always)."""
        return True

    def batch_source(
        self, X: Any, y: Any, batch_size: int, dtype: Any, stream: bool | None = None
    ) -> Any:
        """The training batches of (X, y): an object with the epoch's cuts (`n`, `steps`,
        `batch_size`, `last_rows`, `rows(s, part)`: mlpx.backends.batches.EpochCuts),
        `streamed`, `epoch(order)` (yields (x, y) batches of rows `order`, or in order when
        None) and `close()`. See mlpx.backends.batches. Host backends ignore `stream`."""
        from .batches import ResidentBatches

        return ResidentBatches(self, X, y, batch_size, dtype)

    def to_float(self, x: Array) -> float:
        """Read a 0-d device value on the host (the one place a GPU backend synchronises)."""
        return float(x)

    def synchronize(self) -> None:
        """Wait for queued device work (no-op on the CPU)."""

    def warmup(self, dtypes: tuple = (np.float32, np.float64)) -> None:
        """Compile (or load from the disk cache) the backend's kernels ahead of first use.

        Nothing to compile for the reference backend; `cpu` and `cuda` override it.
        """

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

    def matmul_bf16(
        self, a: Array, b: Array, out: Array, trans_a: bool = False, trans_b: bool = False
    ) -> Array:
        """out = op(a) @ op(b) under the "mixed_bfloat16" policy: float32 operands rounded to
        bfloat16 (round-to-nearest-even), exact products, float32 accumulation, float32 out.

        The reference rounds into float32 copies and runs the float32 GEMM, which multiplies
        bfloat16 values exactly (see mlpx.backends.bfloat16 for the contract).
        """
        from .bfloat16 import round_to_bfloat16

        ra = round_to_bfloat16(a, xp=self.xp)
        rb = round_to_bfloat16(b, xp=self.xp)
        return self.matmul(ra, rb, out, trans_a, trans_b)

    def rounded_bf16(self, x: Array) -> Array:
        """A new float32 array of `x` rounded to bfloat16 (round-to-nearest-even, the
        contract's bits): what the "mixed_bfloat16" policy's derivatives read."""
        from .bfloat16 import round_to_bfloat16

        return round_to_bfloat16(x, xp=self.xp)

    def check_bfloat16(self) -> None:
        """Raise (saying why) when this backend cannot run `matmul_bf16`; a model checks
        before it computes under "mixed_bfloat16". The reference runs it anywhere."""

    def sum_rows(self, x: Array, out: Array) -> Array:
        """out[j] = sum_i x[i, j]: the bias gradient."""
        x.sum(axis=0, out=out)
        return out

    # ------------------------------------------------------------------------ activations
    def _f64(self, x: Array) -> Array:
        return x.astype(self.xp.float64, copy=False)

    def bias_act(
        self, z: Array, b: Array | None, act: activations.Activation, out: Array,
        slopes: Array | None = None
    ) -> Array:
        """z += b (in place, z is kept for the backward pass), then out = act(z).

        `out` may be `z` itself for the identity. `slopes` are PReLU's per-unit slopes.
        """
        if b is not None:
            z += b
        if activations.is_identity(act):
            if out is not z:
                out[...] = z
            return out
        zz = self._f64(z)
        if act.has_parameters and slopes is not None:
            out[...] = act.formula(self, zz, self._f64(slopes))
        else:
            out[...] = act.formula(self, zz)
        return out

    def act_backward(
        self,
        dy: Array,
        z: Array,
        y: Array,
        act: activations.Activation,
        out: Array,
        slopes: Array | None = None,
    ) -> Array:
        """out = dL/dz = dy * f'(z) (row-wise Jacobian product for softmax/log_softmax)."""
        if activations.is_identity(act):
            if out is not dy:
                out[...] = dy
            return out
        args = (self, self._f64(dy), self._f64(z), self._f64(y))
        if act.has_parameters and slopes is not None:
            out[...] = act.derivative(*args, slopes=self._f64(slopes))
        else:
            out[...] = act.derivative(*args)
        return out

    def act_backward_bias_grad(
        self, dy: Array, z: Array, y: Array, act: activations.Activation, out: Array,
        bias_grad: Array
    ) -> Array:
        """`act_backward`, then bias_grad = `sum_rows(out)`: a Dense layer's delta and dL/db.

        Backends may fuse the two into one pass over the batch (the cpu backend does, with
        the very sums of `sum_rows`); this is the two-op form.
        """
        self.act_backward(dy, z, y, act, out)
        self.sum_rows(out, bias_grad)
        return out

    def prelu_backward(
        self, dy: Array, z: Array, slopes: Array, out: Array, dslopes: Array
    ) -> Array:
        """out = dy * f'(z) and dslopes[j] = sum_i dy[i, j] * min(z[i, j], 0) (PReLU).

        The slope gradient is summed in a fixed order that every backend shares (so it is
        bitwise the same everywhere): each chunk of activations.PRELU_CHUNK rows from 0.0 in
        row order, then the chunks' sums from 0.0 in chunk order. The order is written out as one
        elementwise add per row and per chunk rather than left to `xp.cumsum`, which is a
        parallel scan on CuPy (another order, other rounding)."""
        xp = self.xp
        g, zz = self._f64(dy), self._f64(z)
        out[...] = xp.where(zz > 0, g, self._f64(slopes) * g)
        n, m = zz.shape
        chunks = max(1, -(-n // activations.PRELU_CHUNK))
        rows = xp.zeros((chunks * activations.PRELU_CHUNK, m))
        rows[:n] = g * xp.where(zz > 0, 0.0, zz)
        rows = rows.reshape(chunks, activations.PRELU_CHUNK, m)
        parts = xp.zeros((chunks, m))
        for i in range(activations.PRELU_CHUNK):  # every chunk's i-th row at once
            parts += rows[:, i]
        total = xp.zeros(m)
        for c in range(chunks):
            total += parts[c]
        dslopes[...] = total
        return out

    # ----------------------------------------------------------------------------- losses
    # Each returns the mean loss as a 0-d float64 array and, if `grad` is given, writes
    # dLoss/dInput (already divided by the mean's denominator) into it.

    def softmax_cross_entropy(
        self, logits: Array, labels: Array, grad: Array | None = None
    ) -> Array:
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

    def softmax_cross_entropy_soft(
        self, logits: Array, targets: Array, grad: Array | None = None
    ) -> Array:
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

    def bce_with_logits(
        self, logits: Array, targets: Array, grad: Array | None = None
    ) -> Array:
        """Binary cross-entropy on logits: max(x,0) - x t + log1p(exp(-|x|)), mean."""
        xp = self.xp
        x = self._f64(logits)
        t = self._f64(targets)
        loss = (xp.maximum(x, 0.0) - x * t + xp.log1p(xp.exp(-xp.abs(x)))).sum() / x.size
        if grad is not None:
            grad[...] = (activations.Sigmoid().formula(self, x) - t) / x.size
        return loss

    def mse(self, y: Array, t: Array, grad: Array | None = None) -> Array:
        d = self._f64(y) - self._f64(t)
        loss = (d * d).sum() / d.size
        if grad is not None:
            grad[...] = (2.0 / d.size) * d
        return loss

    def l1(self, y: Array, t: Array, grad: Array | None = None) -> Array:
        d = self._f64(y) - self._f64(t)
        loss = self.xp.abs(d).sum() / d.size
        if grad is not None:
            grad[...] = self.xp.sign(d) / d.size
        return loss

    def nll(self, logp: Array, labels: Array, grad: Array | None = None) -> Array:
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

    # Stateful optimiser steps (PyTorch's formulas). Each op makes one pass: it reads param,
    # grad and the state arrays (same shape and dtype as param), evaluates in float64, and
    # stores param and state rounded once. A new state value is used unrounded in the same
    # step's update. State arrays a configuration does not use may be None and are neither
    # read nor written. Scalars are Python floats/ints/bools computed by the optimiser.

    def sgd_momentum_update(
        self, param: Array, grad: Array, buf: Array | None, lr: float, momentum: float,
        dampening: float, nesterov: bool, weight_decay: float,
    ) -> Array:
        """SGD with L2 weight decay and (Nesterov) momentum, as torch.optim.SGD:

            g = grad + weight_decay * param
            buf = momentum * buf + (1 - dampening) * g      (only if momentum != 0)
            d = g + momentum * buf if nesterov else buf      (d = g if momentum == 0)
            param = param - lr * d

        PyTorch's first step sets buf = g; the caller passes dampening=0 on the first step
        with buf zeroed, which gives the same value.
        """
        p = self._f64(param)
        g = self._f64(grad)
        if weight_decay != 0.0:
            g = g + weight_decay * p
        if momentum != 0.0:
            b = momentum * self._f64(buf) + (1.0 - dampening) * g
            buf[...] = b
            g = g + momentum * b if nesterov else b
        param[...] = p - lr * g
        return param

    def adagrad_update(
        self, param: Array, grad: Array, sum_sq: Array, clr: float, weight_decay: float,
        eps: float,
    ) -> Array:
        """AdaGrad, as torch.optim.Adagrad (`clr` = lr / (1 + (step - 1) * lr_decay)):

            g = grad + weight_decay * param
            sum_sq = sum_sq + g * g
            param = param - clr * g / (sqrt(sum_sq) + eps)
        """
        xp = self.xp
        p = self._f64(param)
        g = self._f64(grad)
        if weight_decay != 0.0:
            g = g + weight_decay * p
        s = self._f64(sum_sq) + g * g
        sum_sq[...] = s
        param[...] = p - clr * g / (xp.sqrt(s) + eps)
        return param

    def rmsprop_update(
        self, param: Array, grad: Array, square_avg: Array, grad_avg: Array | None,
        buf: Array | None, lr: float, alpha: float, eps: float, weight_decay: float,
        momentum: float, centered: bool,
    ) -> Array:
        """RMSProp, as torch.optim.RMSprop:

            g = grad + weight_decay * param
            square_avg = alpha * square_avg + (1 - alpha) * g * g
            grad_avg = alpha * grad_avg + (1 - alpha) * g           (centered only)
            avg = sqrt(square_avg - grad_avg**2) + eps if centered else sqrt(square_avg) + eps
            buf = momentum * buf + g / avg; param -= lr * buf       (momentum > 0)
            param -= lr * g / avg                                   (momentum == 0)
        """
        xp = self.xp
        p = self._f64(param)
        g = self._f64(grad)
        if weight_decay != 0.0:
            g = g + weight_decay * p
        sq = alpha * self._f64(square_avg) + (1.0 - alpha) * g * g
        square_avg[...] = sq
        if centered:
            ga = alpha * self._f64(grad_avg) + (1.0 - alpha) * g
            grad_avg[...] = ga
            avg = xp.sqrt(sq - ga * ga) + eps
        else:
            avg = xp.sqrt(sq) + eps
        if momentum > 0.0:
            b = momentum * self._f64(buf) + g / avg
            buf[...] = b
            param[...] = p - lr * b
        else:
            param[...] = p - lr * (g / avg)
        return param

    def adam_update(
        self, param: Array, grad: Array, m: Array, v: Array, lr: float, beta1: float,
        beta2: float, eps: float, weight_decay: float, step: int, decoupled: bool,
    ) -> Array:
        """Adam (decoupled=False, as torch.optim.Adam) and AdamW (decoupled=True):

            g = grad + weight_decay * param                  (Adam: L2 added to the gradient)
            p = param * (1 - lr * weight_decay)              (AdamW: decay the weights)
            m = beta1 * m + (1 - beta1) * g
            v = beta2 * v + (1 - beta2) * g * g
            param = p - (lr / (1 - beta1**step)) * m / (sqrt(v) / sqrt(1 - beta2**step) + eps)

        `step` counts from 1.
        """
        xp = self.xp
        p = self._f64(param)
        g = self._f64(grad)
        if weight_decay != 0.0:
            if decoupled:
                p = p * (1.0 - lr * weight_decay)
            else:
                g = g + weight_decay * p
        mm = beta1 * self._f64(m) + (1.0 - beta1) * g
        vv = beta2 * self._f64(v) + (1.0 - beta2) * g * g
        m[...] = mm
        v[...] = vv
        step_size = lr / (1.0 - beta1**step)
        bc2_sqrt = math.sqrt(1.0 - beta2**step)
        param[...] = p - step_size * mm / (xp.sqrt(vv) / bc2_sqrt + eps)
        return param

    # ----------------------------------------------------------- regularisation, clipping
    def sum_abs(self, x: Array) -> Array:
        """sum(|x|) as a 0-d float64 array (the L1 penalty)."""
        return self.xp.abs(self._f64(x)).sum()

    def add_penalty_grad(self, param: Array, grad: Array, l1: float, l2: float) -> Array:
        """grad = grad + l1 * sign(param) + l2 * param, in place: the gradient of
        l1 * ||param||_1 + l2 / 2 * ||param||^2 (sign(0) = 0)."""
        p = self._f64(param)
        grad[...] = self._f64(grad) + l1 * self.xp.sign(p) + l2 * p
        return grad

    def global_norm(self, arrays: list[Array]) -> Array:
        """sqrt(sum of squares over all arrays) as a 0-d float64 array (stays on device)."""
        total = 0.0
        for a in arrays:
            total = total + self.sum_squares(a)
        return self.xp.sqrt(self.xp.asarray(total, dtype=self.xp.float64))

    def clip_scale(self, norm: Array, max_norm: float) -> Array:
        """min(1, max_norm / (norm + 1e-6)) as a 0-d float64 array (torch's clip_grad_norm_)."""
        return self.xp.minimum(1.0, max_norm / (norm + 1e-6))

    def scale_(self, x: Array, factor: Any) -> Array:
        """x = x * factor in place; `factor` is a float or a 0-d device array (no host read)."""
        x[...] = self._f64(x) * factor
        return x

    def clip_(self, x: Array, lo: float, hi: float) -> Array:
        """x = min(max(x, lo), hi) in place (NaN stays NaN)."""
        self.xp.clip(x, lo, hi, out=x)
        return x

    # ---------------------------------------------------- dropout and normalisation layers
    def dropout_mask(self, seed: int, stream: int, step: int, p: float, mask: Array,
                     offset: int = 0) -> Array:
        """mask = 1 (kept) / 0 (dropped) as uint8, from Philox-4x32-10 words (mlpx.random).

        Element k of the flattened mask is dropped iff word `offset + k` is below
        `drop_threshold(p)`: an integer comparison, so every backend drops the same units.
        `offset` lets a data-parallel shard draw its rows' part of the global batch's mask.
        """
        from ..random import drop_threshold, random_bits

        bits = random_bits(self.xp, mask.size, seed, stream, step, offset)
        mask[...] = (bits >= drop_threshold(p)).reshape(mask.shape)
        return mask

    def dropout_apply(self, x: Array, mask: Array, scale: float, out: Array) -> Array:
        """out = x * scale where mask is set, else 0 (the forward with x, the backward with dy)."""
        out[...] = self.xp.where(mask != 0, self._f64(x) * scale, 0.0)
        return out

    def batchnorm_forward(
        self, x: Array, gamma: Array, beta: Array, eps: float, out: Array, xhat: Array,
        mean: Array, var: Array,
    ) -> Array:
        """Training-mode batch normalisation of each feature over the batch:

            mean = x.mean(0);  var = ((x - mean)**2).mean(0)       (biased, as PyTorch)
            xhat = (x - mean) / sqrt(var + eps);  out = gamma * xhat + beta

        Writes out and xhat (storage dtype) and mean, var (float64, shape (features,)).
        """
        xx = self._f64(x)
        m = xx.mean(axis=0)
        d = xx - m
        v = (d * d).mean(axis=0)
        xh = d / self.xp.sqrt(v + eps)
        xhat[...] = xh
        out[...] = self._f64(gamma) * xh + self._f64(beta)
        mean[...] = m
        var[...] = v
        return out

    def batchnorm_inference(
        self, x: Array, gamma: Array, beta: Array, mean: Array, var: Array, eps: float,
        out: Array, xhat: Array,
    ) -> Array:
        """Inference-mode batch normalisation with given (running) statistics; writes xhat."""
        xh = (self._f64(x) - self._f64(mean)) / self.xp.sqrt(self._f64(var) + eps)
        xhat[...] = xh
        out[...] = self._f64(gamma) * xh + self._f64(beta)
        return out

    def batchnorm_update_running(
        self, running_mean: Array, running_var: Array, mean: Array, var: Array,
        momentum: float, n: int,
    ) -> None:
        """running = (1 - momentum) * running + momentum * batch statistic (PyTorch).

        The running variance takes the unbiased batch variance var * n / (n - 1).
        """
        rm, rv = self._f64(running_mean), self._f64(running_var)
        running_mean[...] = (1.0 - momentum) * rm + momentum * self._f64(mean)
        running_var[...] = (1.0 - momentum) * rv + momentum * self._f64(var) * (n / (n - 1))

    def batchnorm_backward(
        self, dy: Array, xhat: Array, gamma: Array, var: Array, eps: float,
        dx: Array | None, dgamma: Array, dbeta: Array, batch_stats: bool = True,
    ) -> Array | None:
        """Gradients of batch normalisation, in one pass over dy and xhat:

            dbeta = sum_i dy;  dgamma = sum_i dy * xhat
            dx = gamma / sqrt(var + eps) * (dy - dbeta / n - xhat * dgamma / n)
        With `batch_stats=False` (statistics were constants: inference mode) the two mean
        terms vanish: dx = gamma / sqrt(var + eps) * dy.
        """
        g, xh = self._f64(dy), self._f64(xhat)
        db = g.sum(axis=0)
        dg = (g * xh).sum(axis=0)
        if dx is not None:
            scale = self._f64(gamma) / self.xp.sqrt(self._f64(var) + eps)
            n = g.shape[0]
            dx[...] = scale * (g - db / n - xh * (dg / n)) if batch_stats else scale * g
        dgamma[...] = dg
        dbeta[...] = db
        return dx

    def layernorm_forward(
        self, x: Array, gamma: Array, beta: Array, eps: float, out: Array, xhat: Array,
        rstd: Array,
    ) -> Array:
        """Layer normalisation of each row over its features (biased variance, as PyTorch):

            xhat = (x - mean_row) / sqrt(var_row + eps);  out = gamma * xhat + beta
        Writes out, xhat (storage dtype) and rstd = 1 / sqrt(var_row + eps) (float64, (rows,)).
        """
        xx = self._f64(x)
        d = xx - xx.mean(axis=1, keepdims=True)
        r = 1.0 / self.xp.sqrt((d * d).mean(axis=1, keepdims=True) + eps)
        xh = d * r
        xhat[...] = xh
        out[...] = self._f64(gamma) * xh + self._f64(beta)
        rstd[...] = r[:, 0]
        return out

    def layernorm_backward(
        self, dy: Array, xhat: Array, gamma: Array, rstd: Array, dx: Array | None,
        dgamma: Array, dbeta: Array,
    ) -> Array | None:
        """Gradients of layer normalisation (per row, g = dy * gamma):

            dx = rstd * (g - mean_row(g) - xhat * mean_row(g * xhat))
            dgamma = sum_i dy * xhat;  dbeta = sum_i dy
        """
        d, xh = self._f64(dy), self._f64(xhat)
        if dx is not None:
            g = d * self._f64(gamma)
            dx[...] = self._f64(rstd)[:, None] * (
                g - g.mean(axis=1, keepdims=True) - xh * (g * xh).mean(axis=1, keepdims=True)
            )
        dgamma[...] = (d * xh).sum(axis=0)
        dbeta[...] = d.sum(axis=0)
        return dx

    # ---------------------------------------------------------------------------- helpers
    def sum_squares(self, x: Array) -> Array:
        """sum(x**2) as a 0-d float64 array (for gradient norms)."""
        v = self._f64(x).ravel()
        return v @ v

    def all_finite(self, x: Array) -> bool:
        return bool(self.xp.isfinite(x).all())
