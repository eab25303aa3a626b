"""Dropout: inverted dropout with masks from a counter-based generator (Philox-4x32-10)."""

from __future__ import annotations

import math

import numpy as np

from ..backends.base import Array
from .base import Layer
from .registry import builtin_layer


@builtin_layer
class Dropout(Layer):
    """`Dropout(p)`: in training, zero each unit with probability `p` and scale the kept ones by
    1 / (1 - p) so the expected activation is unchanged; at inference, the identity.

    The mask of training step `t` is a pure function of (model seed, the layer's position in
    the model, t) through Philox-4x32-10 (`mlpx.random`), so the same seed gives the same masks
    on every backend, and a run resumed from a checkpoint (which stores `t`) continues with the
    masks the uninterrupted run would have drawn. In a data-parallel fit each process draws the
    part of the global batch's mask that covers its rows: together, the masks of one process.
    """

    has_training_mode = True

    def __init__(self, p: float = 0.5, name: str | None = None):
        super().__init__(name)
        if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)):
            raise TypeError(f"Dropout p must be a number in [0, 1), got {p!r}")
        if not (math.isfinite(p) and 0.0 <= p < 1.0):
            raise ValueError(
                f"Dropout p is the probability of dropping a unit and must be in [0, 1), got {p}"
            )
        self.p = float(p)
        self.seed = 0
        self.stream = 0
        #: training forward passes so far: the Philox counter of the next mask
        self.step = 0
        self._mask: Array | None = None

    def set_random_key(self, seed: int, stream: int) -> None:
        """Called by Sequential.build: the model seed and this layer's position."""
        self.seed, self.stream = int(seed), int(stream)

    def forward(self, x: Array, training: bool = False) -> Array:
        if not training or self.p == 0.0:
            self._mask = None
            return x
        ops = self.ops
        # a data-parallel shard draws the words of its rows in the global batch's mask, so the
        # processes together drop exactly the units one process would
        shard = self.batch_shard
        offset = 0 if shard is None else shard.start * int(np.prod(x.shape[1:]))
        mask = ops.dropout_mask(
            self.seed, self.stream, self.step, self.p, self._buffer("mask", x.shape, np.uint8),
            offset,
        )
        self.step += 1
        self._mask = mask
        return ops.dropout_apply(x, mask, 1.0 / (1.0 - self.p), self._buffer("y", x.shape))

    def infer(self, x: Array) -> Array:
        return x

    def buffer_spec(self, input_dim: int, dtype) -> dict:
        return {"step": ((), np.dtype(np.int64))}

    def backward(self, dy: Array, need_input_grad: bool = True) -> Array | None:
        if not need_input_grad:
            return None
        if self._mask is None:  # the last forward was the identity
            return dy
        dx = self._buffer("dx", dy.shape)
        return self.ops.dropout_apply(dy, self._mask, 1.0 / (1.0 - self.p), dx)

    def buffers(self) -> dict[str, Array]:
        # the counter is state: a resumed run must draw the masks the original run would have
        return {"step": np.array(self.step, dtype=np.int64)}

    def _set_buffer(self, key: str, value: Array) -> None:
        if key != "step":
            raise KeyError(f"Dropout has no buffer {key!r}")
        self.step = int(value.reshape(-1)[0])

    def get_config(self) -> dict:
        return {"p": self.p, "name": self.name}
