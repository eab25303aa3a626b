"""Activation functions: the reference formulas and the ids the fused kernels dispatch on.

Every elementwise activation is *defined* here once, as plain array code evaluated in
float64 and rounded once to the storage dtype. The Numba kernels
(`mlpx/backends/numba_kernels.py`) and the CUDA kernels (`kernels/activations.cu`) compute the
same expressions in the same precision, so backends differ only where the platform's
`exp`/`tanh`/`log1p`/`erf` differ in their last bit.

A string name means the defaults (`"leaky_relu"` has slope 0.01); parametrised activations
are objects: `mlpx.activations.LeakyReLU(0.1)`, `ELU(alpha=0.5)`, `PReLU(init=0.25)`.
"""

from __future__ import annotations

import math
from typing import Any

# Kernel ids: shared with the Numba and CUDA kernels; never renumber.
(ACT_IDENTITY, ACT_STEP, ACT_SIGMOID, ACT_TANH, ACT_RELU, ACT_LEAKY_RELU, ACT_ELU, ACT_GELU,
 ACT_SILU, ACT_SOFTPLUS) = range(10)
ACT_SOFTMAX, ACT_LOG_SOFTMAX, ACT_PRELU = 100, 101, 102

_SQRT_HALF = 0.7071067811865476  # 1/sqrt(2)
_INV_SQRT_2PI = 0.3989422804014327  # 1/sqrt(2*pi)


class Activation:
    """Base class. Subclasses give `name`, `code` and the reference `formula`/`derivative`."""

    name: str = ""
    code: int = ACT_IDENTITY
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
    def formula(self, ops: Any, z: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:  # pragma: no cover
        """dL/dz given dL/dy, the pre-activation z and the output y (all float64)."""
        raise NotImplementedError

    def config(self) -> dict:
        return {"name": self.name}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Activation) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.config().items())))


class Identity(Activation):
    name, code = "identity", ACT_IDENTITY

    def formula(self, ops: Any, z: Any) -> Any:
        return z

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        return dy


class Step(Activation):
    """Heaviside step, H(0) = 1: the perceptron's threshold unit. Not trainable by gradient."""

    name, code, differentiable = "step", ACT_STEP, False

    def formula(self, ops: Any, z: Any) -> Any:
        xp = ops.xp
        return xp.where(z >= 0, 1.0, 0.0)

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        raise ValueError(
            "the step activation has zero gradient almost everywhere and cannot be trained "
            "by backpropagation; use mlpx.Perceptron for Rosenblatt's rule, or a smooth "
            "activation such as 'sigmoid' or 'relu'"
        )


class Sigmoid(Activation):
    name, code = "sigmoid", ACT_SIGMOID

    def formula(self, ops: Any, z: Any) -> Any:
        xp = ops.xp
        e = xp.exp(-xp.abs(z))  # never overflows
        return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        return dy * (y * (1.0 - y))


class Tanh(Activation):
    name, code = "tanh", ACT_TANH

    def formula(self, ops: Any, z: Any) -> Any:
        return ops.xp.tanh(z)

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        return dy * (1.0 - y * y)


class ReLU(Activation):
    name, code, family = "relu", ACT_RELU, "relu"

    def formula(self, ops: Any, z: Any) -> Any:
        return ops.xp.where(z > 0, z, 0.0)

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        return ops.xp.where(z > 0, dy, 0.0)


class LeakyReLU(Activation):
    name, code, family = "leaky_relu", ACT_LEAKY_RELU, "relu"

    def __init__(self, negative_slope: float = 0.01):
        if not math.isfinite(negative_slope):
            raise ValueError(f"LeakyReLU negative_slope must be finite, got {negative_slope}")
        self.negative_slope = float(negative_slope)

    @property
    def alpha(self) -> float:
        return self.negative_slope

    def formula(self, ops: Any, z: Any) -> Any:
        return ops.xp.where(z > 0, z, self.negative_slope * z)

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        return ops.xp.where(z > 0, dy, self.negative_slope * dy)

    def config(self) -> dict:
        return {"name": self.name, "negative_slope": self.negative_slope}


class ELU(Activation):
    name, code = "elu", ACT_ELU

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

    def config(self) -> dict:
        return {"name": self.name, "alpha": self._alpha}


class GELU(Activation):
    """Exact GELU, x * Phi(x) with the error function (not the tanh approximation)."""

    name, code = "gelu", ACT_GELU

    def formula(self, ops: Any, z: Any) -> Any:
        return 0.5 * z * (1.0 + ops.erf(z * _SQRT_HALF))

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        xp = ops.xp
        cdf = 0.5 * (1.0 + ops.erf(z * _SQRT_HALF))
        pdf = _INV_SQRT_2PI * xp.exp(-0.5 * z * z)
        return dy * (cdf + z * pdf)


class SiLU(Activation):
    """SiLU / swish: x * sigmoid(x)."""

    name, code = "silu", ACT_SILU

    def formula(self, ops: Any, z: Any) -> Any:
        return z * Sigmoid().formula(ops, z)

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        s = Sigmoid().formula(ops, z)
        return dy * (s * (1.0 + z * (1.0 - s)))


class Softplus(Activation):
    """log(1 + e^x), computed as max(x, 0) + log1p(e^-|x|) so it never overflows."""

    name, code = "softplus", ACT_SOFTPLUS

    def formula(self, ops: Any, z: Any) -> Any:
        xp = ops.xp
        return xp.maximum(z, 0.0) + xp.log1p(xp.exp(-xp.abs(z)))

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        return dy * Sigmoid().formula(ops, z)


class PReLU(Activation):
    """Leaky ReLU whose negative slopes are learned, one per unit (initial value `init`)."""

    name, code, family, has_parameters = "prelu", ACT_PRELU, "relu", True

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

    def config(self) -> dict:
        return {"name": self.name, "init": self.init}


class Softmax(Activation):
    """Row-wise softmax (an output activation; pair it with a loss that takes probabilities)."""

    name, code, rowwise = "softmax", ACT_SOFTMAX, True

    def formula(self, ops: Any, z: Any) -> Any:
        xp = ops.xp
        e = xp.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        return y * (dy - (dy * y).sum(axis=1, keepdims=True))


class LogSoftmax(Activation):
    """Row-wise log-softmax (pair it with the `nll` loss)."""

    name, code, rowwise = "log_softmax", ACT_LOG_SOFTMAX, True

    def formula(self, ops: Any, z: Any) -> Any:
        xp = ops.xp
        m = z.max(axis=1, keepdims=True)
        return z - m - xp.log(xp.exp(z - m).sum(axis=1, keepdims=True))

    def derivative(self, ops: Any, dy: Any, z: Any, y: Any) -> Any:
        return dy - ops.xp.exp(y) * dy.sum(axis=1, keepdims=True)


_BY_NAME: dict[str, type[Activation]] = {
    cls.name: cls
    for cls in (
        Identity, Step, Sigmoid, Tanh, ReLU, LeakyReLU, ELU, GELU, SiLU, Softplus, PReLU,
        Softmax, LogSoftmax,
    )
}
_ALIASES = {"linear": "identity", "none": "identity", "swish": "silu", "heaviside": "step"}


def names() -> list[str]:
    """Valid activation names."""
    return sorted(_BY_NAME)


def get(spec: str | Activation | None) -> Activation:
    """Resolve a name (defaults) or an `Activation` object; None means identity."""
    if spec is None:
        return Identity()
    if isinstance(spec, Activation):
        return spec
    if isinstance(spec, str):
        key = _ALIASES.get(spec.lower(), spec.lower())
        if key in _BY_NAME:
            return _BY_NAME[key]()
    raise ValueError(
        f"unknown activation {spec!r}; valid names are {', '.join(names())} "
        "(or pass an object such as mlpx.activations.LeakyReLU(0.1))"
    )


def from_config(cfg: dict) -> Activation:
    cfg = dict(cfg)
    cls = _BY_NAME[cfg.pop("name")]
    return cls(**cfg)
