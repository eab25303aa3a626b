"""Activation functions: each declared once, here.

A declaration (an `Activation` subclass) holds everything mlpx knows about the op:

- `formula` and `derivative`: the reference definition, plain array code on float64 arrays
  (the `reference` backend runs exactly this, and every backend falls back to it);
- `derivative_from_output`: whether f'(z) can be computed from the output y alone (then a
  Dense layer lets y overwrite z and saves one batch-sized array);
- `torch_module()`: the PyTorch module that computes the same function (`mlpx check` and the
  PyTorch peer of `mlpx bench` build it from this);
- `jax_function()`: the `jax.nn` function that computes it (the JAX peer of `mlpx bench`);
- `onnx(graph, z)`: the ONNX nodes that compute it (`mlpx.onnx_export`);
- `code`: the id of its fused kernels. Only a built-in declaration has one; its Numba twin
  (`act_scalar`/`dact_scalar` in `mlpx/backends/numba_activations.py`) and its CUDA twin (the
  same names in `kernels/activations.cu`, whose `ACT_*` ids are checked against these when the
  file is loaded) evaluate the same expression in float64 and round once.

A built-in activation is therefore three edits: its class here, its case in the Numba twin and
its case (and id) in the CUDA twin; the tests, the ONNX exporter and the peers read
`builtins()` and the declarations' methods.

A twin (`onnx`, `torch_module`, `jax_function`) describes the formula of the class that
declares it: a subclass that brings its own formula but inherits its parent's twin has none
(`twin(act, "onnx")` is None), so no exporter or check stands the parent in for it.

User-defined activations are subclasses with `formula` and `derivative` (no `code`: they run
the reference formula on every backend, never a kernel of some other activation), or a pair of
functions (`FunctionActivation`). Register them under a name with
`@mlpx.register_activation("name")` so that saved models record and restore them: a model is
saved only when each activation's name brings back that very activation (`name_for_saving`).

A string name means the defaults (`"leaky_relu"` has slope 0.01); parametrised activations
are objects: `mlpx.activations.LeakyReLU(0.1)`, `ELU(alpha=0.5)`, `PReLU(init=0.25)`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

from .registry import Registry, UnsaveablePartError, same_class

_SQRT_HALF = 0.7071067811865476  # 1/sqrt(2)
_INV_SQRT_2PI = 0.3989422804014327  # 1/sqrt(2*pi)

#: Kernel ids of row-wise and parametrised activations (no scalar kernel; never renumber)
_ROWWISE_BASE = 100


class Activation:
    """Base class of every activation: give `name`, `formula` and `derivative`.

        @mlpx.register_activation("square")
        class Square(mlpx.activations.Activation):
            def formula(self, ops, z):
                return z * z
            def derivative(self, ops, dy, z, y):
                return dy * 2.0 * z

    `ops` is the backend (`ops.xp` is NumPy or CuPy); z, y and dy are float64 arrays of one
    batch, `(batch, features)`. The result is rounded once to the layer's dtype.
    """

    name: str = ""
    #: fused-kernel id; set by built-in declarations only (None: the reference formula)
    code: int | None = None
    #: f'(z) can be computed from y = f(z) (or the test that picks its branch gives the same
    #: answer on y as on z), so y may overwrite z
    derivative_from_output: bool = False
    #: row-wise activations (softmax) couple the features of one sample
    rowwise: bool = False
    #: False for the step function: it has no useful gradient
    differentiable: bool = True
    #: learned per-unit parameters (PReLU)
    has_parameters: bool = False
    #: which family chooses the default initialiser: "relu" -> He, otherwise Xavier
    family: str = "other"

    @property
    def alpha(self) -> float:
        """Scalar parameter passed to the kernels (slope, ELU alpha); 0 when unused."""
        return 0.0

    # --- reference formulas (xp code on float64 arrays) -----------------------------------
    def formula(self, ops: Any, z: Any) -> Any:
        """f(z), elementwise (or row-wise for `rowwise` activations)."""
        raise NotImplementedError(
            f"activation {type(self).__name__} defines no formula(self, ops, z)"
        )

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        """dL/dz given dL/dy, the pre-activation z and the output y (all float64)."""
        raise NotImplementedError(
            f"activation {type(self).__name__} defines no derivative(self, ops, dy, z, y), "
            "so it cannot be trained; add one"
        )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name") and not cls.name:  # the name a saved model records
            cls.name = cls.__name__

    def torch_module(self) -> tuple[str, dict[str, Any]] | None:
        """(name of a `torch.nn` module, its keyword arguments) computing the same function,
        or None when PyTorch has none."""
        return None

    def jax_function(self) -> tuple[str, dict[str, Any]] | None:
        """(name of a `jax.nn` function, its keyword arguments) computing the same function,
        or None when JAX has none."""
        return None

    def onnx(self, graph: Any, z: str) -> str | None:
        """Add the ONNX nodes computing f(z) to `graph` (`mlpx.onnx_export`'s builder:
        `graph.node(op, inputs, hint, **attributes)`, `graph.const(value, hint)`,
        `graph.erf(x)`, `graph.dtype`) and return the output's name; None when the
        activation has no exact ONNX form."""
        return None

    def config(self) -> dict:
        return {"name": self.name}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Activation) and type(self) is type(other)
                and self.config() == other.config())

    def __hash__(self) -> int:
        return hash((type(self), tuple(sorted(self.config().items()))))


#: every activation name: the built-in declarations and the registered user activations
NAMES = Registry("activation", Activation, "@mlpx.register_activation")
#: the fused-kernel id of each built-in declaration, by its exact class (read every step)
_KERNEL_IDS: dict[type[Activation], int] = {}


def _builtin(cls: type[Activation]) -> type[Activation]:
    """Declare a built-in activation; its fused-kernel id is published as ACT_<NAME>."""
    if cls.code is None or cls.code in _KERNEL_IDS.values():
        raise RuntimeError(f"built-in activation {cls.name!r} needs an id of its own, got "
                           f"{cls.code}")
    NAMES.add_builtin(cls.name, cls)
    _KERNEL_IDS[cls] = cls.code
    globals()[f"ACT_{cls.name.upper()}"] = cls.code
    return cls


@_builtin
class Identity(Activation):
    name, code, derivative_from_output = "identity", 0, True

    def formula(self, ops: Any, z: Any) -> Any:
        return z

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        return dy

    def torch_module(self) -> tuple[str, dict[str, Any]]:
        return "Identity", {}

    def jax_function(self) -> tuple[str, dict[str, Any]]:
        return "identity", {}

    def onnx(self, graph: Any, z: str) -> str:
        return z


@_builtin
class Step(Activation):
    """Heaviside step, H(0) = 1: the perceptron's threshold unit. Not trainable by gradient."""

    name, code, differentiable = "step", 1, False

    def formula(self, ops: Any, z: Any) -> Any:
        xp = ops.xp
        return xp.where(z >= 0, 1.0, 0.0)

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        raise ValueError(
            "the step activation has zero gradient almost everywhere and cannot be trained "
            "by backpropagation; use mlpx.Perceptron for Rosenblatt's rule, or a smooth "
            "activation such as 'sigmoid' or 'relu'"
        )

    def onnx(self, graph: Any, z: str) -> str:  # 1 where z >= 0, else 0
        ge = graph.node("GreaterOrEqual", [z, graph.const(0.0, "c")])
        return graph.node("Cast", [ge], "step", to=graph.elem_type)


@_builtin
class Sigmoid(Activation):
    name, code, derivative_from_output = "sigmoid", 2, True

    def formula(self, ops: Any, z: Any) -> Any:
        xp = ops.xp
        e = xp.exp(-xp.abs(z))  # never overflows
        return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        return dy * (y * (1.0 - y))

    def torch_module(self) -> tuple[str, dict[str, Any]]:
        return "Sigmoid", {}

    def jax_function(self) -> tuple[str, dict[str, Any]]:
        return "sigmoid", {}

    def onnx(self, graph: Any, z: str) -> str:
        return graph.node("Sigmoid", [z])


@_builtin
class Tanh(Activation):
    name, code, derivative_from_output = "tanh", 3, True

    def formula(self, ops: Any, z: Any) -> Any:
        return ops.xp.tanh(z)

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        return dy * (1.0 - y * y)

    def torch_module(self) -> tuple[str, dict[str, Any]]:
        return "Tanh", {}

    def jax_function(self) -> tuple[str, dict[str, Any]]:
        return "tanh", {}

    def onnx(self, graph: Any, z: str) -> str:
        return graph.node("Tanh", [z])


@_builtin
class ReLU(Activation):
    # y > 0 exactly where z > 0, so the derivative's test reads the same on y
    name, code, family, derivative_from_output = "relu", 4, "relu", True

    def formula(self, ops: Any, z: Any) -> Any:
        return ops.xp.where(z > 0, z, 0.0)

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        return ops.xp.where(z > 0, dy, 0.0)

    def torch_module(self) -> tuple[str, dict[str, Any]]:
        return "ReLU", {}

    def jax_function(self) -> tuple[str, dict[str, Any]]:
        return "relu", {}

    def onnx(self, graph: Any, z: str) -> str:
        return graph.node("Relu", [z])


@_builtin
class LeakyReLU(Activation):
    name, code, family = "leaky_relu", 5, "relu"

    def __init__(self, negative_slope: float = 0.01):
        if not math.isfinite(negative_slope):
            raise ValueError(f"LeakyReLU negative_slope must be finite, got {negative_slope}")
        self.negative_slope = float(negative_slope)

    @property
    def alpha(self) -> float:
        return self.negative_slope

    @property
    def derivative_from_output(self) -> bool:  # type: ignore[override]
        # with a slope >= 0, y > 0 exactly where z > 0
        return self.negative_slope >= 0.0

    def formula(self, ops: Any, z: Any) -> Any:
        return ops.xp.where(z > 0, z, self.negative_slope * z)

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        return ops.xp.where(z > 0, dy, self.negative_slope * dy)

    def torch_module(self) -> tuple[str, dict[str, Any]]:
        return "LeakyReLU", {"negative_slope": self.negative_slope}

    def jax_function(self) -> tuple[str, dict[str, Any]]:
        return "leaky_relu", {"negative_slope": self.negative_slope}

    def onnx(self, graph: Any, z: str) -> str:
        # PRelu with one slope: exact in float64 too (ONNX Runtime's LeakyRelu is float32 only)
        return graph.node("PRelu", [z, graph.const(self.negative_slope, "slope")], "leaky_relu")

    def config(self) -> dict:
        return {"name": self.name, "negative_slope": self.negative_slope}


@_builtin
class ELU(Activation):
    # alpha > 0: y > 0 exactly where z > 0, and f'(z) = y + alpha for z <= 0
    name, code, derivative_from_output = "elu", 6, True

    def __init__(self, alpha: float = 1.0):
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"ELU alpha must be a positive finite number, got {alpha}")
        self._alpha = float(alpha)

    @property
    def alpha(self) -> float:
        return self._alpha

    def formula(self, ops: Any, z: Any) -> Any:
        xp = ops.xp
        return xp.where(z > 0, z, self._alpha * xp.expm1(xp.minimum(z, 0.0)))

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        # for z <= 0: f'(z) = alpha * exp(z) = y + alpha
        return ops.xp.where(z > 0, dy, dy * (y + self._alpha))

    def torch_module(self) -> tuple[str, dict[str, Any]]:
        return "ELU", {"alpha": self._alpha}

    def jax_function(self) -> tuple[str, dict[str, Any]]:
        return "elu", {"alpha": self._alpha}

    def onnx(self, graph: Any, z: str) -> str:
        if graph.dtype == "float32":
            return graph.node("Elu", [z], alpha=self._alpha)
        # ONNX Runtime has no float64 Elu: relu(z) + alpha * (exp(min(z, 0)) - 1)
        neg = graph.node("Exp", [graph.node("Min", [z, graph.const(0.0, "c")])])
        neg = graph.node("Mul", [graph.node("Sub", [neg, graph.const(1.0, "c")]),
                                 graph.const(self._alpha, "alpha")])
        return graph.node("Add", [graph.node("Relu", [z]), neg], "elu")

    def config(self) -> dict:
        return {"name": self.name, "alpha": self._alpha}


@_builtin
class GELU(Activation):
    """Exact GELU, x * Phi(x) with the error function (not the tanh approximation)."""

    name, code = "gelu", 7

    def formula(self, ops: Any, z: Any) -> Any:
        return 0.5 * z * (1.0 + ops.erf(z * _SQRT_HALF))

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        xp = ops.xp
        cdf = 0.5 * (1.0 + ops.erf(z * _SQRT_HALF))
        pdf = _INV_SQRT_2PI * xp.exp(-0.5 * z * z)
        return dy * (cdf + z * pdf)

    def torch_module(self) -> tuple[str, dict[str, Any]]:
        return "GELU", {"approximate": "none"}

    def jax_function(self) -> tuple[str, dict[str, Any]]:
        return "gelu", {"approximate": False}

    def onnx(self, graph: Any, z: str) -> str:  # exact form: 0.5 z (1 + erf(z / sqrt 2))
        erf = graph.erf(graph.node("Mul", [z, graph.const(_SQRT_HALF, "c")]))
        half = graph.node("Mul", [z, graph.const(0.5, "c")])
        return graph.node("Mul", [half, graph.node("Add", [erf, graph.const(1.0, "c")])], "gelu")


@_builtin
class SiLU(Activation):
    """SiLU / swish: x * sigmoid(x)."""

    name, code = "silu", 8

    def formula(self, ops: Any, z: Any) -> Any:
        return z * Sigmoid().formula(ops, z)

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        s = Sigmoid().formula(ops, z)
        return dy * (s * (1.0 + z * (1.0 - s)))

    def torch_module(self) -> tuple[str, dict[str, Any]]:
        return "SiLU", {}

    def jax_function(self) -> tuple[str, dict[str, Any]]:
        return "silu", {}

    def onnx(self, graph: Any, z: str) -> str:
        return graph.node("Mul", [z, graph.node("Sigmoid", [z])], "silu")


@_builtin
class Softplus(Activation):
    """log(1 + e^x), computed as max(x, 0) + log1p(e^-|x|) so it never overflows."""

    name, code = "softplus", 9

    def formula(self, ops: Any, z: Any) -> Any:
        xp = ops.xp
        return xp.maximum(z, 0.0) + xp.log1p(xp.exp(-xp.abs(z)))

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        return dy * Sigmoid().formula(ops, z)

    def torch_module(self) -> tuple[str, dict[str, Any]]:
        # PyTorch returns z itself above z = 20, where log1p(e^-z) < 2.1e-9 is all that differs
        return "Softplus", {}

    def jax_function(self) -> tuple[str, dict[str, Any]]:
        return "softplus", {}

    def onnx(self, graph: Any, z: str) -> str:
        # max(z, 0) + log(1 + exp(-|z|)): no overflow for large z
        tail = graph.node("Exp", [graph.node("Neg", [graph.node("Abs", [z])])])
        log = graph.node("Log", [graph.node("Add", [tail, graph.const(1.0, "c")])])
        return graph.node("Add", [graph.node("Relu", [z]), log], "softplus")


#: Rows per partial sum of PReLU's slope gradient: each chunk is summed in row order, then
#: the chunks in order, on every backend (the reference `Backend.prelu_backward`, the Numba
#: kernel, and kernels/activations.cu, whose #define is checked against this when loaded)
PRELU_CHUNK = 64


@_builtin
class PReLU(Activation):
    """Leaky ReLU whose negative slopes are learned, one per unit (initial value `init`)."""

    name, code, family, has_parameters = "prelu", _ROWWISE_BASE + 2, "relu", True

    def __init__(self, init: float = 0.25):
        if not math.isfinite(init):
            raise ValueError(f"PReLU init must be finite, got {init}")
        self.init = float(init)

    @property
    def alpha(self) -> float:
        return self.init

    def formula(self, ops: Any, z: Any, slopes: Any = None) -> Any:
        a = self.init if slopes is None else slopes
        return ops.xp.where(z > 0, z, a * z)

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any, slopes: Any = None) -> Any:
        a = self.init if slopes is None else slopes
        return ops.xp.where(z > 0, dy, a * dy)

    def onnx(self, graph: Any, z: str, slopes: Any = None) -> str:
        a = self.init if slopes is None else slopes
        return graph.node("PRelu", [z, graph.const(a, "slopes")])

    def config(self) -> dict:
        return {"name": self.name, "init": self.init}


@_builtin
class Softmax(Activation):
    """Row-wise softmax (an output activation; pair it with a loss that takes probabilities)."""

    name, code, rowwise = "softmax", _ROWWISE_BASE, True

    def formula(self, ops: Any, z: Any) -> Any:
        xp = ops.xp
        e = xp.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        return y * (dy - (dy * y).sum(axis=1, keepdims=True))

    def torch_module(self) -> tuple[str, dict[str, Any]]:
        return "Softmax", {"dim": 1}

    def jax_function(self) -> tuple[str, dict[str, Any]]:
        return "softmax", {"axis": -1}

    def onnx(self, graph: Any, z: str) -> str:
        return graph.node("Softmax", [z], axis=-1)


@_builtin
class LogSoftmax(Activation):
    """Row-wise log-softmax (pair it with the `nll` loss)."""

    name, code, rowwise = "log_softmax", _ROWWISE_BASE + 1, True

    def formula(self, ops: Any, z: Any) -> Any:
        xp = ops.xp
        m = z.max(axis=1, keepdims=True)
        return z - m - xp.log(xp.exp(z - m).sum(axis=1, keepdims=True))

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        return dy - ops.xp.exp(y) * dy.sum(axis=1, keepdims=True)

    def torch_module(self) -> tuple[str, dict[str, Any]]:
        return "LogSoftmax", {"dim": 1}

    def jax_function(self) -> tuple[str, dict[str, Any]]:
        return "log_softmax", {"axis": -1}

    def onnx(self, graph: Any, z: str) -> str:
        return graph.node("LogSoftmax", [z], axis=-1)


class FunctionActivation(Activation):
    """An activation from a pair of functions: `forward(z)` and its derivative
    `derivative(z)` (f'(z); a second parameter receives y = f(z) when declared).

        act = mlpx.activations.FunctionActivation(lambda z: z * z, lambda z: 2.0 * z,
                                                  name="square")

    z and y are float64 NumPy arrays (CuPy arrays on the cuda backend: NumPy's functions
    such as `np.tanh` work on both). Register it with `mlpx.register_activation("square",
    forward, derivative)` so that saved models can be loaded. A pair given without a name
    (`activation=(forward, derivative)`) is shown by its forward function's name but has no
    name a saved model could record: saving such a model is refused.
    """

    def __init__(self, forward: Callable[..., Any], derivative: Callable[..., Any],
                 name: str | None = None):
        if not (callable(forward) and callable(derivative)):
            raise TypeError(
                "FunctionActivation takes two functions: forward(z) and derivative(z) (f'(z)),"
                f" got {forward!r} and {derivative!r}"
            )
        self.forward, self._derivative = forward, derivative
        self._with_y = _positional_count(derivative) >= 2
        #: the name a saved model records; None: the pair has none
        self.saved_name = name
        fn_name = getattr(forward, "__name__", "")
        self.name = name or (fn_name if fn_name.isidentifier() else "custom_activation")

    @property
    def source(self) -> tuple[Callable[..., Any], Callable[..., Any]]:
        """The (forward, derivative) pair this activation computes."""
        return self.forward, self._derivative

    def formula(self, ops: Any, z: Any) -> Any:
        return self.forward(z)

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        d = self._derivative(z, y) if self._with_y else self._derivative(z)
        return dy * d

    def __repr__(self) -> str:
        return f"FunctionActivation(name={self.name!r})"


def _positional_count(fn: Callable[..., Any]) -> int:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: f(z)
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind == inspect.Parameter.VAR_POSITIONAL for p in params):
        return 2
    return sum(1 for p in params if p.kind in kinds)


NAMES.add_aliases({"linear": "identity", "none": "identity", "swish": "silu",
                   "heaviside": "step"})


def builtins() -> list[type[Activation]]:
    """The built-in declarations, in kernel-id order (the tests iterate this)."""
    return sorted(NAMES.builtins().values(), key=lambda c: c.code)


def names() -> list[str]:
    """Valid activation names: the built-ins and the registered ones."""
    return NAMES.names()


def hidden_builtins() -> list[str]:
    """Names of the built-in activations any hidden layer can use: elementwise, trainable,
    without parameters of their own (kernel-id order)."""
    return [c.name for c in builtins()
            if c.differentiable and not c.rowwise and not c.has_parameters]


def kernel_code(act: Activation) -> int | None:
    """The fused-kernel id of `act` when it is exactly a built-in declaration, else None.

    A subclass, or a user class that copies a built-in's `code`, runs its own formula on
    the reference path: a kernel of another function never silently replaces it."""
    return _KERNEL_IDS.get(type(act))


def scalar_kernel(act: Activation) -> int | None:
    """The id of the elementwise kernels (Numba `act_scalar`, CUDA `act_scalar`) for `act`,
    or None: row-wise, parametrised and user activations have none."""
    code = kernel_code(act)
    return code if code is not None and code < _ROWWISE_BASE else None


def is_identity(act: Activation) -> bool:
    return kernel_code(act) == Identity.code


def twin(act: Activation, method: str) -> Callable[..., Any] | None:
    """`act`'s bound twin method (`"onnx"`, `"torch_module"`, `"jax_function"`) when it
    describes act's own function, else None.

    A twin describes the formula (and derivative) of the class that declares it: a subclass
    that overrides `formula` or `derivative` but inherits its parent's twin has none, so an
    exporter or a check never stands the parent in for it."""
    cls = type(act)
    owner = _owner(cls, method)
    if owner is None or owner is Activation:
        return None
    # inference (ONNX) reads the formula only; a training twin also the derivative
    describes = ("formula",) if method == "onnx" else ("formula", "derivative")
    if not all(issubclass(owner, _owner(cls, f) or Activation) for f in describes):
        return None
    return getattr(act, method)


def _owner(cls: type, attr: str) -> type | None:
    """The class in `cls`'s MRO whose body defines `attr`."""
    return next((c for c in cls.__mro__ if attr in c.__dict__), None)


def register_activation(
    name: str, forward: Callable[..., Any] | None = None,
    derivative: Callable[..., Any] | None = None,
) -> Any:
    """Register a user activation under `name`, so that `activation="name"` finds it and saved
    models restore it.

        @mlpx.register_activation("square")        # a subclass of Activation
        class Square(mlpx.activations.Activation): ...

        mlpx.register_activation("square", lambda z: z * z, lambda z: 2.0 * z)  # functions

    Registering a name again replaces the earlier entry; built-in names are refused.
    """
    key = NAMES.free_key(name)
    if forward is not None or derivative is not None:
        act = FunctionActivation(forward, derivative, name=key)  # checks both are callable
        NAMES.register(key, act.source)
        return act

    def decorator(cls: type[Activation]) -> type[Activation]:
        if not (isinstance(cls, type) and issubclass(cls, Activation)):
            raise TypeError(
                f"@register_activation({key!r}) decorates an Activation subclass, got {cls!r};"
                " for functions call register_activation(name, forward, derivative)"
            )
        _check_defines(cls)
        cls.name = key
        NAMES.register(key, cls)
        return cls

    return decorator


def _check_defines(cls: type[Activation]) -> None:
    if cls.formula is Activation.formula:
        raise TypeError(f"activation {cls.__name__} must define formula(self, ops, z)")


def get(spec: Any) -> Activation:
    """Resolve an activation: a name (the load's `custom_objects`, the built-ins with their
    defaults, the registered activations), an `Activation` object or subclass, a (forward,
    derivative) pair of functions; None means identity."""
    if spec is None:
        return Identity()
    if isinstance(spec, Activation):
        _check_defines(type(spec))
        return spec
    if isinstance(spec, type) and issubclass(spec, Activation):
        _check_defines(spec)
        return spec()
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and all(map(callable, spec)):
        return FunctionActivation(spec[0], spec[1])
    if callable(spec):
        raise TypeError(
            f"activation {spec!r} is a single function: training also needs its derivative; "
            "pass (forward, derivative), or subclass mlpx.activations.Activation"
        )
    if isinstance(spec, str) and spec.strip():
        entry = NAMES.lookup(spec)
        if entry is not None:
            return _build(entry, NAMES.key(spec), {})
    raise ValueError(
        f"unknown activation {spec!r}; valid names are {', '.join(names())} "
        "(or pass an object such as mlpx.activations.LeakyReLU(0.1), or register your own "
        "with @mlpx.register_activation)"
    )


def _build(entry: Any, name: str, cfg: dict) -> Activation:
    """The activation a registry entry (class, object or function pair) makes."""
    if isinstance(entry, Activation):
        return entry
    if isinstance(entry, (tuple, list)) and len(entry) == 2:
        return FunctionActivation(entry[0], entry[1], name=name)
    if isinstance(entry, type) and issubclass(entry, Activation):
        _check_defines(entry)
        return entry(**cfg)
    raise TypeError(
        f"activation {name!r} is given as {entry!r}; give an Activation subclass or object, "
        "or a (forward, derivative) pair of functions"
    )


def _same(act: Activation, entry: Any) -> bool:
    """Whether registry `entry` builds `act`: its own class, or the very same functions."""
    if isinstance(act, FunctionActivation):
        source = entry.source if isinstance(entry, FunctionActivation) else entry
        return (isinstance(source, (tuple, list)) and len(source) == 2
                and source[0] is act.forward and source[1] is act._derivative)
    return same_class(act, entry)


def name_for_saving(act: Activation) -> str:
    """The name a checkpoint records for `act`: one that brings back this very activation
    on load (or nothing yet: the load then needs it registered or in `custom_objects`).
    Raises UnsaveablePartError (a ValueError) with the fix otherwise."""
    if isinstance(act, FunctionActivation) and act.saved_name is None:
        f, df = (getattr(fn, "__name__", repr(fn)) for fn in act.source)
        raise UnsaveablePartError(
            f"activation given as the function pair ({f}, {df}) has no name, so a saved "
            "model could not bring it back; register it, mlpx.register_activation("
            "'my_activation', forward, derivative), and use activation='my_activation' (or "
            "name it, FunctionActivation(forward, derivative, name='my_activation'), and "
            "load with custom_objects={'my_activation': (forward, derivative)})"
        )
    name = act.saved_name if isinstance(act, FunctionActivation) else act.name
    return NAMES.name_for_saving(act, name, same=_same)


NAMES.saver = name_for_saving


def from_config(cfg: dict) -> Activation:
    """The activation a saved `config()` describes, looked up by its name: the load's
    `custom_objects` first, then the built-ins, then the registered activations."""
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    entry = NAMES.lookup(name)
    if entry is None:
        raise ValueError(
            f"unknown activation {name!r}: it is neither built in nor registered; define it "
            f"and decorate it with @mlpx.register_activation({name!r}) before loading, or "
            f"pass mlpx.load(path, custom_objects={{{name!r}: ...}})"
        )
    return _build(entry, name, cfg)


# the public API (what the API reference lists; the rest serves the layers and the kernels)
__all__ = ["Activation", "Identity", "Step", "Sigmoid", "Tanh", "ReLU", "LeakyReLU", "ELU",
           "GELU", "SiLU", "Softplus", "PReLU", "Softmax", "LogSoftmax", "FunctionActivation",
           "register_activation", "names", "get"]
