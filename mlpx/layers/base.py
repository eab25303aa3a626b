"""Layer and Parameter: the model every layer, optimiser and checkpoint builds on.

A layer is built once for an input width, on a backend, in a dtype. It owns `Parameter`s
(trainable arrays with a gradient array of the same shape, written by `backward`) and may own
non-trainable state (`buffers()`, e.g. running statistics) that checkpoints save but
`get_weights` does not return. Work arrays come from `_buffer`, which allocates once per
(name, shape) and reuses the array afterwards, so steady-state steps allocate nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backends.base import Array, Backend

_MAX_CACHED_SHAPES = 24


class Parameter:
    """A trainable array and its gradient (same shape, same backend)."""

    __slots__ = ("name", "data", "grad")

    def __init__(self, name: str, data: Array, grad: Array):
        self.name = name
        self.data = data
        self.grad = grad

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    def __repr__(self) -> str:
        return f"Parameter({self.name!r}, shape={self.shape})"


class Layer:
    """Base class: subclasses implement `build`, `forward`, `backward` and `get_config`."""

    #: True for layers that behave differently in training (Dropout, BatchNorm)
    has_training_mode = False
    #: True when `backward` returns the layer's own work array, which the layer below may
    #: overwrite (Dense); False when it may return dy itself or something still needed
    returns_work_grad = False
    #: set by Sequential.backward: dy may be overwritten by this call (layers may ignore it)
    _dy_scratch = False

    def __init__(self, name: str | None = None):
        self.name = name
        self.built = False
        self.ops: Backend | None = None
        self.dtype: Any = None
        self.input_dim: int | None = None
        self.output_dim: int | None = None
        self._ws: dict[tuple, Array] = {}

    # lifecycle ---------------------------------------------------------------------------
    def build(self, input_dim: int, ops: Backend, dtype: Any, rng: np.random.Generator) -> int:
        """Create parameters for inputs of width `input_dim`; return the output width."""
        self.ops, self.dtype, self.input_dim = ops, np.dtype(dtype), int(input_dim)
        self.output_dim = self._build(self.input_dim, rng)
        self.built = True
        return self.output_dim

    def _build(self, input_dim: int, rng: np.random.Generator) -> int:
        return input_dim

    def forward(self, x: Array, training: bool = False) -> Array:  # pragma: no cover
        raise NotImplementedError

    def backward(self, dy: Array, need_input_grad: bool = True) -> Array | None:
        """Given dL/dy of the last forward, write parameter gradients and return dL/dx."""
        raise NotImplementedError  # pragma: no cover

    # parameters and state ----------------------------------------------------------------
    def parameters(self) -> list[Parameter]:
        """Trainable parameters in the public order (Dense: W, b, then PReLU slopes)."""
        return []

    def buffers(self) -> dict[str, Array]:
        """Non-trainable state saved in checkpoints (not returned by get_weights)."""
        return {}

    def get_config(self) -> dict:
        return {"name": self.name}

    def _new_param(self, name: str, value: np.ndarray) -> Parameter:
        ops = self.ops
        data = ops.asarray(np.asarray(value, dtype=self.dtype))
        return Parameter(name, data, ops.zeros(data.shape, self.dtype))

    def to_backend(self, ops: Backend) -> None:
        """Move parameters and buffers to another backend (values are kept bit for bit)."""
        for p in self.parameters():
            host = self.ops.to_numpy(p.data)
            p.data = ops.asarray(host)
            p.grad = ops.zeros(p.data.shape, self.dtype)
        for key, value in self.buffers().items():
            self._set_buffer(key, ops.asarray(self.ops.to_numpy(value)))
        self.ops = ops
        self._ws.clear()
        for child in self.children():
            child.to_backend(ops)

    def _set_buffer(self, key: str, value: Array) -> None:
        setattr(self, key, value)

    def children(self) -> list[Layer]:
        """Sub-layers (Residual blocks); empty for plain layers."""
        return []

    def regularized(self) -> list[tuple[Parameter, Any]]:
        """(parameter, regulariser) pairs whose penalty joins the objective (Dense's
        kernel_regularizer/bias_regularizer); by default those of the sub-layers."""
        return [pair for child in self.children() for pair in child.regularized()]

    # work arrays ---------------------------------------------------------------------------
    def _buffer(self, name: str, shape: tuple[int, ...], dtype: Any = None) -> Array:
        key = (name, shape, dtype)
        arr = self._ws.get(key)
        if arr is None:
            if len(self._ws) >= _MAX_CACHED_SHAPES:
                self._ws.clear()
            arr = self.ops.empty(shape, dtype or self.dtype)
            self._ws[key] = arr
        return arr

    def release_buffers(self) -> None:
        self._ws.clear()

    def __repr__(self) -> str:
        cfg = {k: v for k, v in self.get_config().items() if v is not None}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in cfg.items())})"
