"""PReLU as a layer: f(x) = x for x > 0, a_j * x otherwise, with learned per-unit slopes."""

from __future__ import annotations

import math

import numpy as np

from .. import activations
from ..backends.base import Array
from .base import Layer, Parameter
from .registry import builtin_layer


@builtin_layer
class PReLU(Layer):
    """`PReLU(init=0.25)`: one learned slope per feature, initialised to `init`.

    The same op as `Dense(..., activation="prelu")`, as a standalone layer (e.g. after a
    BatchNorm). PyTorch's `nn.PReLU(num_parameters=features, init=0.25)`.
    """

    def __init__(self, init: float = 0.25, name: str | None = None):
        super().__init__(name)
        if not (isinstance(init, (int, float)) and math.isfinite(init)):
            raise ValueError(f"PReLU init must be a finite number, got {init!r}")
        self.init = float(init)
        self._act = activations.PReLU(self.init)
        self.slopes: Parameter | None = None

    def _build(self, input_dim: int, rng: np.random.Generator) -> int:
        self.slopes = self._new_param("slopes", np.full(input_dim, self.init))
        return input_dim

    def parameters(self) -> list[Parameter]:
        return [self.slopes] if self.slopes is not None else []

    def forward(self, x: Array, training: bool = False) -> Array:
        self._x = x
        out = self._buffer("y", x.shape)
        # no bias: bias_act leaves x untouched and writes f(x) into out
        return self.ops.bias_act(x, None, self._act, out=out, slopes=self.slopes.data)

    def infer(self, x: Array) -> Array:
        out = self.ops.empty(x.shape, self.dtype)
        return self.ops.bias_act(x, None, self._act, out=out, slopes=self.slopes.data)

    def param_spec(self, input_dim: int, dtype) -> dict:
        return {"slopes": ((int(input_dim),), np.dtype(dtype))}

    def backward(self, dy: Array, need_input_grad: bool = True) -> Array | None:
        dx = self._buffer("dx", dy.shape)
        self.ops.prelu_backward(dy, self._x, self.slopes.data, dx, self.slopes.grad)
        return dx if need_input_grad else None

    def get_config(self) -> dict:
        return {"init": self.init, "name": self.name}
