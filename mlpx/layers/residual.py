"""Residual block: y = x + f(x), f a stack of layers that keeps the width."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..backends.base import Array, Backend
from .base import Layer, Parameter
from .registry import builtin_layer, layer_from_spec, layer_spec


@builtin_layer
class Residual(Layer):
    """`Residual([Dense(64, activation="relu"), Dense(64)])`: y = x + f(x).

    f is the given layers applied in order; its output width must equal its input width.
    Backward: dL/dx = dL/dy + (backpropagation of dL/dy through f). The sub-layers' parameters
    appear in get_weights in order; `children()` returns the sub-layers.
    """

    def __init__(self, layers: Sequence[Layer], name: str | None = None):
        super().__init__(name)
        if isinstance(layers, Layer):
            layers = [layers]
        layers = list(layers)
        if not layers:
            raise ValueError("Residual needs at least one layer, e.g. Residual([Dense(64)])")
        for layer in layers:
            if not isinstance(layer, Layer):
                raise TypeError(f"Residual takes mlpx layers, got {type(layer).__name__}")
        self.layers = layers

    @property
    def has_training_mode(self) -> bool:  # type: ignore[override]
        return any(layer.has_training_mode for layer in self.layers)

    def _build(self, input_dim: int, rng: np.random.Generator) -> int:
        width = input_dim
        for layer in self.layers:
            width = layer.build(width, self.ops, self.dtype, rng)
        if width != input_dim:
            raise ValueError(
                f"Residual computes x + f(x), so f must keep the width: its input has "
                f"{input_dim} features but its layers output {width}; make the last layer "
                f"of the block Dense({input_dim})"
            )
        return input_dim

    def set_random_key(self, seed: int, stream: int) -> int:
        """Number the sub-layers depth first after this block; returns the next free stream."""
        nxt = stream + 1
        for layer in self.layers:
            if isinstance(layer, Residual):
                nxt = layer.set_random_key(seed, nxt)
            else:
                if hasattr(layer, "set_random_key"):
                    layer.set_random_key(seed, nxt)
                nxt += 1
        return nxt

    def children(self) -> list[Layer]:
        return list(self.layers)

    def parameters(self) -> list[Parameter]:
        return [p for layer in self.layers for p in layer.parameters()]

    def forward(self, x: Array, training: bool = False) -> Array:
        h = x
        for layer in self.layers:
            h = layer.forward(h, training=training)
        out = self._buffer("y", x.shape)
        out[...] = x
        out += h
        return out

    def infer(self, x: Array) -> Array:
        h = x
        for layer in self.layers:
            h = layer.infer(h)
        out = self.ops.empty(x.shape, self.dtype)
        out[...] = x
        out += h
        return out

    def backward(self, dy: Array, need_input_grad: bool = True) -> Array | None:
        g = dy
        for i in range(len(self.layers) - 1, -1, -1):
            g = self.layers[i].backward(g, need_input_grad=need_input_grad or i > 0)
        if not need_input_grad:
            return None
        dx = self._buffer("dx", dy.shape)
        dx[...] = dy
        dx += g
        return dx

    def to_backend(self, ops: Backend) -> None:
        # the sub-layers own the parameters: move each once
        for layer in self.layers:
            layer.to_backend(ops)
        self.ops = ops
        self._ws.clear()

    def release_buffers(self) -> None:
        super().release_buffers()
        for layer in self.layers:
            layer.release_buffers()

    def get_config(self) -> dict:
        return {"layers": [layer_spec(layer) for layer in self.layers], "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> Residual:
        config = dict(config)
        layers = [layer_from_spec(spec) for spec in config.pop("layers")]
        return cls(layers, **config)
