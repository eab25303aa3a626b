"""Dense (fully connected) layer: y = f(x W + b), W of shape (in, out)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import activations, initializers, regularizers
from ..backends.base import Array
from .base import Layer, Parameter
from .registry import builtin_layer


@builtin_layer
class Dense(Layer):
    """`Dense(units, activation=None, init=None)`: one GEMM and one fused bias+activation.

    Backpropagation in batch form, with delta = dL/dz:
        delta = dL/dy (.) f'(z)       (fused kernel)
        dL/dW = x^T delta             (GEMM)
        dL/db = sum over the batch of delta
        dL/dx = delta W^T             (GEMM; skipped for the first layer)

    Memory: for activations whose derivative can be computed from y
    (`Activation.derivative_from_output`), y overwrites z; and delta overwrites dy when the
    container says dy is a work array nobody reads afterwards (`_dy_scratch`). A 784-1024-
    1024-10 ReLU network then keeps 4 batch-sized arrays instead of 8.

    Parameters
    ----------
    units
        The number of outputs.
    activation
        A name (`"relu"`, `"tanh"`, ...), an `mlpx.activations` object, or None (default)
        for raw outputs.
    init
        The weights' initialiser: a name from `mlpx.initializers` or a function
        `(shape, rng, activation) -> array`; None (default) picks the one suited to the
        activation.
    bias_init
        The biases' initialiser (default `"zeros"`).
    use_bias
        Add a bias (default True).
    name
        The layer's name; None (default) gives one.
    kernel_regularizer
        A penalty on the weights (`mlpx.regularizers.L2(1e-4)`, `"l2"`, ...); None: none.
    bias_regularizer
        A penalty on the biases; None (default): none.
    """

    #: the array `backward` returns is this layer's own work array (its dx), which the layer
    #: below may overwrite
    returns_work_grad = True

    def __init__(
        self,
        units: int,
        activation: str | activations.Activation | None = None,
        init: str | initializers.Initializer | None = None,
        bias_init: str | initializers.Initializer = "zeros",
        use_bias: bool = True,
        name: str | None = None,
        kernel_regularizer: regularizers.Regularizer | str | dict | None = None,
        bias_regularizer: regularizers.Regularizer | str | dict | None = None,
    ):
        super().__init__(name)
        if isinstance(units, bool) or not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"Dense units must be a positive integer, got {units!r}")
        self.units = int(units)
        self.activation = activations.get(activation)
        self.init = init if init is not None else initializers.default_for(self.activation)
        self._init_fn = initializers.get(self.init)
        self._bias_init_fn = initializers.get(bias_init)
        self.bias_init = bias_init
        self.use_bias = bool(use_bias)
        # penalties in the objective (mlpx.regularizers); biases are free unless asked
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.W: Parameter | None = None
        self.b: Parameter | None = None
        self.slopes: Parameter | None = None
        self._x = self._z = self._y = None
        self._dy_scratch = False  # set by Sequential.backward just before each call

    def _build(self, input_dim: int, rng: np.random.Generator) -> int:
        shape = (input_dim, self.units)
        self.W = self._new_param("W", self._init_fn(shape, rng, self.activation))
        if self.use_bias:
            b = self._bias_init_fn((1, self.units), rng, self.activation).reshape(self.units)
            self.b = self._new_param("b", b)
        if self.activation.has_parameters:
            self.slopes = self._new_param("slopes", np.full(self.units, self.activation.alpha))
        return self.units

    def regularized(self) -> list[tuple[Parameter, regularizers.Regularizer]]:
        pairs = [(self.W, self.kernel_regularizer), (self.b, self.bias_regularizer)]
        return [(p, r) for p, r in pairs if p is not None and r is not None]

    def parameters(self) -> list[Parameter]:
        return [p for p in (self.W, self.b, self.slopes) if p is not None]

    def compute_output_dim(self, input_dim: int) -> int:
        return self.units

    def param_spec(self, input_dim: int, dtype) -> dict:
        dt = np.dtype(dtype)
        spec = {"W": ((int(input_dim), self.units), dt)}
        if self.use_bias:
            spec["b"] = ((self.units,), dt)
        if self.activation.has_parameters:
            spec["slopes"] = ((self.units,), dt)
        return spec

    def forward(self, x: Array, training: bool = False) -> Array:
        n = x.shape[0]
        z = self._buffer("z", (n, self.units))
        y = z if _act_in_place(self.activation) else self._buffer("y", (n, self.units))
        self._affine_act(x, z, y)
        self._x, self._z, self._y = x, z, y
        return y

    def infer(self, x: Array) -> Array:
        ops = self.ops
        z = ops.empty((x.shape[0], self.units), self.dtype)
        y = z if _act_in_place(self.activation) else ops.empty(z.shape, self.dtype)
        return self._affine_act(x, z, y)

    def _affine_act(self, x: Array, z: Array, y: Array) -> Array:
        """y = f(x W + b) through z (y may be z itself)."""
        ops, act = self.ops, self.activation
        ops.matmul(x, self.W.data, out=z)
        slopes = self.slopes.data if self.slopes is not None else None
        if self.b is not None:
            ops.bias_act(z, self.b.data, act, out=y, slopes=slopes)
        elif not activations.is_identity(act):
            ops.bias_act(z, None, act, out=y, slopes=slopes)
        return y

    def backward(self, dy: Array, need_input_grad: bool = True) -> Array | None:
        ops, act = self.ops, self.activation
        scratch, self._dy_scratch = self._dy_scratch, False  # a permission for this call only
        bias_done = False
        if not act.differentiable:
            act.derivative(ops, dy, self._z, self._y)  # raises the explanatory error
        if activations.is_identity(act):
            delta = dy
        elif self.slopes is not None:
            delta = self._buffer("delta", dy.shape)
            ops.prelu_backward(dy, self._z, self.slopes.data, delta, self.slopes.grad)
        else:
            # elementwise, each element read before it is written: delta may be dy itself
            delta = dy if scratch else self._buffer("delta", dy.shape)
            if self.b is not None:  # delta and dL/db in one pass where the backend can
                ops.act_backward_bias_grad(dy, self._z, self._y, act, delta, self.b.grad)
                bias_done = True
            else:
                ops.act_backward(dy, self._z, self._y, act, out=delta)
        ops.matmul(self._x, delta, out=self.W.grad, trans_a=True)
        if self.b is not None and not bias_done:
            ops.sum_rows(delta, out=self.b.grad)
        if not need_input_grad:
            return None
        dx = self._buffer("dx", (dy.shape[0], self.input_dim))
        return ops.matmul(delta, self.W.data, out=dx, trans_b=True)

    def __repr__(self) -> str:
        act = self.activation
        act_s = repr(act.name) if act.config() == {"name": act.name} else repr(act)
        init = initializers.spec_name(self.init)
        return f"Dense({self.units}, activation={act_s}, init={init!r})"

    @classmethod
    def from_config(cls, config: dict) -> Dense:
        cfg = dict(config)
        act = cfg.pop("activation", None)
        if isinstance(act, dict):
            act = activations.from_config(act)
        init = cfg.pop("init", None)
        try:
            initializers.get(init)
        except (ValueError, TypeError):
            init = None  # a custom callable: the checkpoint's weights replace the initial ones
        return cls(activation=act, init=init, **cfg)

    def get_config(self) -> dict:
        return {
            "units": self.units,
            "activation": self.activation.config(),
            "init": initializers.spec_name(self.init),
            "use_bias": self.use_bias,
            "kernel_regularizer": _reg_config(self.kernel_regularizer),
            "bias_regularizer": _reg_config(self.bias_regularizer),
            "name": self.name,
        }


    def named_parts(self) -> list[Any]:
        return [self.activation, self.kernel_regularizer, self.bias_regularizer]


def _act_in_place(act: activations.Activation) -> bool:
    """y = f(z) may overwrite z: the declaration says f' can be computed from y."""
    return bool(act.derivative_from_output) and not act.has_parameters


def _reg_config(reg: regularizers.Regularizer | None) -> dict | None:
    return None if reg is None else reg.get_config()
