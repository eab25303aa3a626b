"""Export a trained model to ONNX, to run it without Python (ONNX Runtime, C++, C#, JS, ...).

    model.to_onnx("model.onnx")
    import onnxruntime as ort
    sess = ort.InferenceSession("model.onnx")
    logits = sess.run(None, {"input": X.astype("float32")})[0]   # = model.predict(X)

The graph computes what `model.predict` computes (inference mode): Dense layers become `Gemm`
(`MatMul` without a bias), activations the ONNX nodes their declarations give
(`Activation.onnx`: GELU, SiLU and softplus as short compositions with the same formulas as
mlpx; an activation whose class declares no ONNX form of its own formula is refused),
Dropout disappears, BatchNorm is folded into the Dense layer before it (or becomes one
scale-and-shift where it cannot be folded), LayerNorm becomes `LayerNormalization`, a
Residual block an `Add`. One input `input` of shape (batch, input_dim) and one output
`output`; the batch dimension is dynamic.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from . import activations
from .layers import BatchNorm, Dense, Dropout, Layer, LayerNorm, PReLU, Residual

#: LayerNormalization needs opset 17; every other operator used is older
DEFAULT_OPSET = 17


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise ImportError('ONNX export needs the onnx package: pip install "mlpx[onnx]"') from None
    return onnx, helper, numpy_helper


def export(model: Any, path: str | os.PathLike, opset: int = DEFAULT_OPSET) -> Path:
    """Write `model` (a built `mlpx.Sequential`) as an ONNX file at `path`; returns the path.

    The file is written atomically: an existing file at `path` is replaced only once the
    whole model has been written, and keeps its permissions; a new file gets those `open()`
    gives (0o666 less the umask).
    """
    onnx, helper, _ = _onnx()
    if not getattr(model, "built", False):
        raise RuntimeError(
            "the model is not built yet, so it has no weights to export: train it (fit) or "
            "call build(n_features) first"
        )
    if not isinstance(opset, int) or opset < DEFAULT_OPSET:
        raise ValueError(f"opset must be an integer >= {DEFAULT_OPSET}, got {opset!r}")
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"cannot write {path}: the directory {path.parent} does not exist; create it first"
        )
    graph = _GraphBuilder(np.dtype(model.dtype), model.ops)
    graph.name_output(graph.layers(model.layers, "input"))
    elem = graph.elem_type
    proto = helper.make_model(
        helper.make_graph(
            graph.nodes, "mlpx_model",
            [helper.make_tensor_value_info("input", elem, ["batch", int(model.input_dim)])],
            [helper.make_tensor_value_info("output", elem, ["batch", int(model.output_dim)])],
            initializer=graph.initializers,
        ),
        opset_imports=[helper.make_opsetid("", int(opset))],
        producer_name="mlpx",
        doc_string=f"exported from {model!r}",
    )
    onnx.checker.check_model(proto, full_check=True)
    from .saving.container import write_atomic

    # as checkpoints: a new file gets the umask's mode, a replaced one keeps its own
    write_atomic(path, proto.SerializeToString())
    return path


class _GraphBuilder:
    """Collects nodes and weight initialisers; each method returns its output's name."""

    def __init__(self, dtype: np.dtype, ops: Any):
        _, helper, self._numpy_helper = _onnx()
        self.helper = helper
        self.dtype = dtype
        self.ops = ops
        self.elem_type = helper.np_dtype_to_tensor_dtype(dtype)
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0

    # ------------------------------------------------------------------------ primitives
    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: Any, hint: str) -> str:
        name = self._name(hint)
        arr = np.asarray(value, dtype=self.dtype)
        self.initializers.append(self._numpy_helper.from_array(arr, name))
        return name

    def node(self, op: str, inputs: list[str], hint: str | None = None, **attrs: Any) -> str:
        out = self._name(hint or op.lower())
        self.nodes.append(self.helper.make_node(op, inputs, [out], **attrs))
        return out

    def host(self, array: Any) -> np.ndarray:
        return np.asarray(self.ops.to_numpy(array), dtype=np.float64)

    def name_output(self, name: str) -> None:
        """Call the last value `output` (an Identity node when the model is the identity)."""
        if name == "input":
            self.nodes.append(self.helper.make_node("Identity", ["input"], ["output"]))
            return
        for node in self.nodes:
            node.output[:] = ["output" if o == name else o for o in node.output]
            node.input[:] = ["output" if i == name else i for i in node.input]

    def erf(self, x: str) -> str:
        """Erf; ONNX Runtime implements it for float32 only, so float64 models evaluate this
        one function in float32 (GELU then agrees with mlpx to about 1e-7, not 1e-15)."""
        if self.dtype == np.float32:
            return self.node("Erf", [x])
        f32 = self.node("Cast", [x], "to_f32", to=self.helper.np_dtype_to_tensor_dtype(
            np.dtype(np.float32)))
        return self.node("Cast", [self.node("Erf", [f32])], "to_f64", to=self.elem_type)

    # ---------------------------------------------------------------------------- layers
    # Only mlpx's own layer classes are exported, by their exact class: a subclass may
    # compute something else, and exporting it as its parent would be silently wrong.
    def layers(self, layers: list[Layer], x: str) -> str:
        i = 0
        while i < len(layers):
            layer = layers[i]
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if type(layer) is Dense and type(nxt) is BatchNorm and _foldable(layer):
                x = self.dense(layer, x, fold=nxt)  # BatchNorm folded into the weights
                i += 2
                continue
            x = self.layer(layer, x)
            i += 1
        return x

    def layer(self, layer: Layer, x: str) -> str:
        kind = type(layer)
        if kind is Dense:
            return self.dense(layer, x)
        if kind is Dropout:
            return x  # the identity at inference
        if kind is BatchNorm:
            scale, shift = _batchnorm_affine(self, layer)
            return self.node("Add", [self.node("Mul", [x, self.const(scale, "bn_scale")]),
                                     self.const(shift, "bn_shift")], "batchnorm")
        if kind is LayerNorm:
            return self.node(
                "LayerNormalization",
                [x, self.const(self.host(layer.gamma.data), "ln_gamma"),
                 self.const(self.host(layer.beta.data), "ln_beta")],
                "layernorm", axis=-1, epsilon=float(layer.eps),
            )
        if kind is PReLU:
            return self.node("PRelu", [x, self.const(self.host(layer.slopes.data), "slopes")])
        if kind is Residual:
            return self.node("Add", [x, self.layers(layer.layers, x)], "residual")
        raise NotImplementedError(
            f"ONNX export does not know the layer {kind.__name__}; it exports mlpx's Dense, "
            "Dropout, BatchNorm, LayerNorm, PReLU and Residual, by their exact class (a "
            "subclass may compute something else)"
        )

    def dense(self, layer: Dense, x: str, fold: BatchNorm | None = None) -> str:
        W = self.host(layer.W.data)
        b = self.host(layer.b.data) if layer.b is not None else None
        if fold is not None:  # BN(xW + b) = x (W * s) + (b * s + t)
            scale, shift = _batchnorm_affine(self, fold)
            W = W * scale
            b = (np.zeros(W.shape[1]) if b is None else b) * scale + shift
        if b is None:
            z = self.node("MatMul", [x, self.const(W, "W")], "matmul")
        else:
            z = self.node("Gemm", [x, self.const(W, "W"), self.const(b, "b")], "gemm")
        slopes = self.host(layer.slopes.data) if layer.slopes is not None else None
        return self.activation(layer.activation, z, slopes)

    def activation(self, act: activations.Activation, z: str,
                   slopes: np.ndarray | None = None) -> str:
        """The nodes the activation's declaration gives (`Activation.onnx`): only a mapping
        that describes act's own formula is used, never a parent's."""
        onnx = activations.twin(act, "onnx")
        out = None if onnx is None else onnx(self, z) if slopes is None else onnx(
            self, z, slopes=slopes)
        if out is None:
            raise NotImplementedError(
                f"ONNX export cannot express the activation {act!r} ({type(act).__name__}) "
                "exactly: its class declares no ONNX form of its own formula; define "
                "onnx(self, graph, z) on the class (see docs/extending.md), or use an "
                "activation ONNX can express"
            )
        return out


def _foldable(layer: Dense) -> bool:
    """BatchNorm after a Dense layer folds into its weights when nothing sits between."""
    return activations.is_identity(layer.activation) and layer.slopes is None


def _batchnorm_affine(graph: _GraphBuilder, bn: BatchNorm) -> tuple[np.ndarray, np.ndarray]:
    """Inference-mode BatchNorm as y = x * scale + shift (float64)."""
    gamma, beta = graph.host(bn.gamma.data), graph.host(bn.beta.data)
    mean, var = graph.host(bn.running_mean), graph.host(bn.running_var)
    scale = gamma / np.sqrt(var + bn.eps)
    return scale, beta - mean * scale
