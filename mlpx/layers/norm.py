"""Normalisation layers: BatchNorm (over the batch) and LayerNorm (over the features)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..backends.base import Array
from .base import Layer, Parameter
from .registry import builtin_layer


def _check_eps(eps: float, layer: str) -> float:
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"{layer} eps must be a small positive number such as 1e-5, got {eps!r}")
    return float(eps)


def _gamma_beta_spec(input_dim: int, dtype) -> dict:
    d, dt = (int(input_dim),), np.dtype(dtype)
    return {"gamma": (d, dt), "beta": (d, dt)}


@builtin_layer
class BatchNorm(Layer):
    """`BatchNorm(momentum=0.1, eps=1e-5)`: PyTorch's BatchNorm1d on (batch, features) inputs.

    Training: normalise each feature with the batch mean and the biased batch variance, then
    y = gamma * xhat + beta, and update the running statistics
        running_mean = (1 - momentum) * running_mean + momentum * mean
        running_var  = (1 - momentum) * running_var  + momentum * var * n / (n - 1)
    (the unbiased variance, as PyTorch). `momentum=None` keeps the cumulative average over all
    batches instead. Inference: normalise with the running statistics.

    gamma (init 1) and beta (init 0) are parameters, in that order. The running statistics are
    buffers: saved in checkpoints, not returned by get_weights.

    In a data-parallel fit the batch statistics are those of the global batch (synchronised
    with all-reduces in the forward and backward passes), so every process keeps the same
    running statistics and the run matches one process with the whole batch.
    """

    has_training_mode = True

    def __init__(self, momentum: float | None = 0.1, eps: float = 1e-5, name: str | None = None):
        super().__init__(name)
        if momentum is not None and not (
            isinstance(momentum, (int, float)) and 0.0 <= momentum <= 1.0
        ):
            raise ValueError(f"BatchNorm momentum must be in [0, 1] or None, got {momentum!r}")
        self.momentum = None if momentum is None else float(momentum)
        self.eps = _check_eps(eps, "BatchNorm")
        self.gamma: Parameter | None = None
        self.beta: Parameter | None = None
        self.running_mean: Array | None = None
        self.running_var: Array | None = None
        self.num_batches_tracked = 0
        self._batch_stats = True

    def _build(self, input_dim: int, rng: np.random.Generator) -> int:
        self.gamma = self._new_param("gamma", np.ones(input_dim))
        self.beta = self._new_param("beta", np.zeros(input_dim))
        self.running_mean = self.ops.zeros((input_dim,), self.dtype)
        self.running_var = self.ops.asarray(np.ones(input_dim, dtype=self.dtype))
        return input_dim

    def parameters(self) -> list[Parameter]:
        return [p for p in (self.gamma, self.beta) if p is not None]

    def forward(self, x: Array, training: bool = False) -> Array:
        ops = self.ops
        n, d = x.shape
        out = self._buffer("y", (n, d))
        xhat = self._buffer("xhat", (n, d))
        self._batch_stats = bool(training)
        if training:
            shard = self.batch_shard
            total = n if shard is None else int(shard.rows)
            if total < 2:
                raise ValueError(
                    "BatchNorm needs at least 2 samples per batch in training (the batch "
                    f"variance of 1 sample is undefined), got a batch of {total}; choose a "
                    "batch_size that does not leave a last batch of one sample"
                )
            mean = self._buffer("mean", (d,), np.float64)
            var = self._buffer("var", (d,), np.float64)
            if shard is None:
                ops.batchnorm_forward(
                    x, self.gamma.data, self.beta.data, self.eps, out, xhat, mean, var
                )
            else:
                self._synced_statistics(x, shard, mean, var)
                ops.batchnorm_inference(
                    x, self.gamma.data, self.beta.data, mean, var, self.eps, out, xhat
                )
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked
            ops.batchnorm_update_running(
                self.running_mean, self.running_var, mean, var, m, total
            )
            self._var = var
        else:
            ops.batchnorm_inference(
                x, self.gamma.data, self.beta.data, self.running_mean, self.running_var,
                self.eps, out, xhat,
            )
            self._var = self.running_var
        self._xhat = xhat
        return out

    def _synced_statistics(self, x: Array, shard: Any, mean: Array, var: Array) -> None:
        """Mean and biased variance over the global batch of a data-parallel step: two
        all-reduces (the sums, then the squared deviations from the global mean: the
        two-pass formula of one process, so the statistics match it to rounding)."""
        xx = x.astype(np.float64)
        mean[...] = xx.sum(axis=0)
        shard.allreduce_(mean)
        mean /= shard.rows
        dev = xx - mean
        var[...] = (dev * dev).sum(axis=0)
        shard.allreduce_(var)
        var /= shard.rows

    def infer(self, x: Array) -> Array:
        ops = self.ops
        out = ops.empty(x.shape, self.dtype)
        ops.batchnorm_inference(
            x, self.gamma.data, self.beta.data, self.running_mean, self.running_var, self.eps,
            out, ops.empty(x.shape, self.dtype),
        )
        return out

    def param_spec(self, input_dim: int, dtype) -> dict:
        return _gamma_beta_spec(input_dim, dtype)

    def buffer_spec(self, input_dim: int, dtype) -> dict:
        d, dt = (int(input_dim),), np.dtype(dtype)
        return {"running_mean": (d, dt), "running_var": (d, dt),
                "num_batches_tracked": ((), np.dtype(np.int64))}

    def backward(self, dy: Array, need_input_grad: bool = True) -> Array | None:
        dx = self._buffer("dx", dy.shape) if need_input_grad else None
        shard = self.batch_shard
        if shard is not None and self._batch_stats:
            return self._synced_backward(dy, dx, shard)
        return self.ops.batchnorm_backward(
            dy, self._xhat, self.gamma.data, self._var, self.eps, dx, self.gamma.grad,
            self.beta.grad, batch_stats=self._batch_stats,
        )

    def _synced_backward(self, dy: Array, dx: Array | None, shard: Any) -> Array | None:
        """The backward pass over the global batch: this process's rows give their share of
        dgamma and dbeta (the gradient all-reduce adds the shares), and dx needs the global
        sums of dy and dy * xhat (one all-reduce of both)."""
        xp = self.ops.xp
        g, xh = dy.astype(np.float64), self._xhat.astype(np.float64)
        sums = self._buffer("sums", (2, g.shape[1]), np.float64)
        sums[0] = g.sum(axis=0)
        sums[1] = (g * xh).sum(axis=0)
        self.beta.grad[...] = sums[0]
        self.gamma.grad[...] = sums[1]
        if dx is None:
            return None
        shard.allreduce_(sums)
        scale = self.gamma.data.astype(np.float64) / xp.sqrt(self._var + self.eps)
        n = shard.rows
        dx[...] = scale * (g - sums[0] / n - xh * (sums[1] / n))
        return dx

    def buffers(self) -> dict[str, Array]:
        if self.running_mean is None:
            return {}
        return {
            "running_mean": self.running_mean,
            "running_var": self.running_var,
            "num_batches_tracked": np.array(self.num_batches_tracked, dtype=np.int64),
        }

    def _set_buffer(self, key: str, value: Array) -> None:
        if key == "num_batches_tracked":
            self.num_batches_tracked = int(value.reshape(-1)[0])
        elif key in ("running_mean", "running_var"):
            setattr(self, key, value)
        else:
            raise KeyError(f"BatchNorm has no buffer {key!r}")

    def get_config(self) -> dict:
        return {"momentum": self.momentum, "eps": self.eps, "name": self.name}


@builtin_layer
class LayerNorm(Layer):
    """`LayerNorm(eps=1e-5)`: normalise each sample over its features (biased variance), then
    y = gamma * xhat + beta with learned per-feature gamma (init 1) and beta (init 0), as
    PyTorch's LayerNorm over the last dimension. Same in training and inference.
    """

    def __init__(self, eps: float = 1e-5, name: str | None = None):
        super().__init__(name)
        self.eps = _check_eps(eps, "LayerNorm")
        self.gamma: Parameter | None = None
        self.beta: Parameter | None = None

    def _build(self, input_dim: int, rng: np.random.Generator) -> int:
        self.gamma = self._new_param("gamma", np.ones(input_dim))
        self.beta = self._new_param("beta", np.zeros(input_dim))
        return input_dim

    def parameters(self) -> list[Parameter]:
        return [p for p in (self.gamma, self.beta) if p is not None]

    def forward(self, x: Array, training: bool = False) -> Array:
        n, d = x.shape
        out = self._buffer("y", (n, d))
        self._xhat = self._buffer("xhat", (n, d))
        self._rstd = self._buffer("rstd", (n,), np.float64)
        return self.ops.layernorm_forward(
            x, self.gamma.data, self.beta.data, self.eps, out, self._xhat, self._rstd
        )

    def infer(self, x: Array) -> Array:
        ops = self.ops
        out = ops.empty(x.shape, self.dtype)
        return ops.layernorm_forward(
            x, self.gamma.data, self.beta.data, self.eps, out, ops.empty(x.shape, self.dtype),
            ops.empty((x.shape[0],), np.float64),
        )

    def param_spec(self, input_dim: int, dtype) -> dict:
        return _gamma_beta_spec(input_dim, dtype)

    def backward(self, dy: Array, need_input_grad: bool = True) -> Array | None:
        dx = self._buffer("dx", dy.shape) if need_input_grad else None
        return self.ops.layernorm_backward(
            dy, self._xhat, self.gamma.data, self._rstd, dx, self.gamma.grad, self.beta.grad
        )

    def get_config(self) -> dict:
        return {"eps": self.eps, "name": self.name}
