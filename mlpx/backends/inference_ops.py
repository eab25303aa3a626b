"""The ops the compiled inference paths run between a model's Dense layers: BatchNorm (with
its running statistics), LayerNorm and PReLU (a layer, or a Dense layer's activation), each
as its layer's own kernel (mlpx.backends.small_batch_kernels.apply_ops), and a Dense layer's
softmax (the few-row chain only: mlpx.backends.proba_kernels.softmax_rows, NumPy's formula,
within one unit in the last place of it where NumPy's exp is not the C library's). The few-row
chain (mlpx.backends.small_batch) and the compiled forward pass
(mlpx.backends.compiled_forward) take a model as its Dense layers and these ops, so models with
normalisation or PReLU layers get them too, not one GEMM call and Python op per layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import activations as A

#: the op kinds, as small_batch_kernels.apply_ops reads them
OP_BATCHNORM, OP_LAYERNORM, OP_PRELU, OP_SOFTMAX = 1, 2, 3, 4


def is_prelu(layer: Any) -> bool:
    """Whether a Dense layer's activation is PReLU with its slopes (bias_act's PReLU path)."""
    return layer.slopes is not None and A.kernel_code(layer.activation) == A.ACT_PRELU


def is_softmax(layer: Any) -> bool:
    """Whether a Dense layer's activation is the built-in softmax."""
    return A.kernel_code(layer.activation) == A.ACT_SOFTMAX


class InferenceOps:
    """The ops at each position of a model: `positions[0]` run on the input, `positions[i+1]`
    on Dense layer i's output, in order."""

    def __init__(self, positions: list[list[Any]], dtype: Any) -> None:
        self.layers = [layer for position in positions for layer in position]
        self.dtype = np.dtype(dtype)
        self.kinds = np.array([_kind(layer) for layer in self.layers], np.int64)
        self.starts = np.cumsum([0] + [len(p) for p in positions]).astype(np.int64)
        self.on_input = bool(positions[0])
        self._busy = [i for i, position in enumerate(positions) if position]
        self._dummy = np.zeros(1, self.dtype)
        #: what the ops are, for the measured choices' keys ("" for Dense layers alone)
        self.label = " ".join(f"{i}:{_name(layer)}" for i, position in enumerate(positions)
                              for layer in position)

    def __bool__(self) -> bool:
        return bool(self.layers)

    def buffers(self, rows: int, sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Work arrays for `rows` rows of a model of layer widths `sizes` (input first): the
        input's copy for ops on it (a stand-in where there are none), and the scratch the
        ops write in turn with their input (flat: rows x the widest width with ops)."""
        xin = np.empty((rows, sizes[0]) if self.on_input else (1, 1), self.dtype)
        widest = max((sizes[i] for i in self._busy), default=1)
        return xin, np.empty(rows * widest, self.dtype)

    def pack(self, xin: np.ndarray, scratch: np.ndarray) -> tuple | None:
        """The kernels' `ops` argument, (starts, kinds, p0, p1, p2, p3, eps, xin, scratch),
        with the layers' arrays read now (set_weights and a checkpoint's buffers may swap
        them), or None where one is not a C-contiguous NumPy array of the model's dtype (the
        layers' own path then serves); `xin` and `scratch` from `buffers`."""
        dummy, dt = self._dummy, self.dtype
        p0, p1, p2, p3, eps = [], [], [], [], []
        for layer, kind in zip(self.layers, self.kinds, strict=True):
            if kind == OP_BATCHNORM:
                arrays = (layer.gamma.data, layer.beta.data, layer.running_mean,
                          layer.running_var)
            elif kind == OP_LAYERNORM:
                arrays = (layer.gamma.data, layer.beta.data, dummy, dummy)
            elif kind == OP_SOFTMAX:
                arrays = (dummy, dummy, dummy, dummy)
            else:
                arrays = (layer.slopes.data, dummy, dummy, dummy)
            for a in arrays:
                if type(a) is not np.ndarray or a.dtype != dt or not a.flags.c_contiguous:
                    return None
            p0.append(arrays[0])
            p1.append(arrays[1])
            p2.append(arrays[2])
            p3.append(arrays[3])
            eps.append(float(getattr(layer, "eps", 0.0)))
        return (self.starts, self.kinds, tuple(p0), tuple(p1), tuple(p2), tuple(p3),
                tuple(eps), xin, scratch)


def _kind(layer: Any) -> int:
    name = type(layer).__name__
    if name == "Dense":
        return OP_PRELU if is_prelu(layer) else OP_SOFTMAX
    return {"BatchNorm": OP_BATCHNORM, "LayerNorm": OP_LAYERNORM}.get(name, OP_PRELU)


def _name(layer: Any) -> str:
    if type(layer).__name__ == "Dense":
        return "PReLU" if is_prelu(layer) else "Softmax"
    return type(layer).__name__


def split_model(model: Any) -> tuple[list[Any], list[list[Any]]] | None:
    """A model's Dense layers (each with a built-in elementwise, PReLU or softmax activation)
    and the ops at each position (see InferenceOps; Dropout, the identity at inference, is
    left out), or None where a layer is anything else."""
    from ..layers.dense import Dense
    from ..layers.dropout import Dropout
    from ..layers.norm import BatchNorm, LayerNorm
    from ..layers.prelu import PReLU

    dense: list[Any] = []
    positions: list[list[Any]] = [[]]
    for layer in model.layers:
        kind = type(layer)
        if kind is Dropout:
            continue
        if kind in (BatchNorm, LayerNorm, PReLU):
            positions[-1].append(layer)
            continue
        if kind is not Dense:
            return None
        as_op = is_prelu(layer) or is_softmax(layer)
        if not as_op and (layer.slopes is not None or A.scalar_kernel(layer.activation) is None):
            return None
        dense.append(layer)
        positions.append([layer] if as_op else [])
    return dense, positions


def activation_code(layer: Any) -> int:
    """The kernels' activation code of a Dense layer from split_model: identity for PReLU
    and softmax (its bias alone; the activation is an op after it)."""
    if is_prelu(layer) or is_softmax(layer):
        return A.ACT_IDENTITY
    return int(A.scalar_kernel(layer.activation))
