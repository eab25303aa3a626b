"""Weight initialisers. All draw on the host from one seeded NumPy generator, so the same
seed gives the same initial weights on every backend.

`xavier_uniform`/`glorot_uniform` and `xavier_normal`/`glorot_normal` have gain 1 for every
activation, as Keras' `glorot_*` and PyTorch's `xavier_*_` (whose `calculate_gain("sigmoid")`
is 1). The Kaiming/He initialisers scale by PyTorch's `calculate_gain` of the activation.
`xavier_uniform_gain`/`xavier_normal_gain` (aliases `glorot_*_gain`) apply the per-activation
gain table below to the Xavier bound instead; choose them explicitly with `init=`:

| activation            | `activation_gain` (the *_gain Xaviers) | Kaiming/He gain    |
|-----------------------|----------------------------------------|--------------------|
| identity, step, others| 1                                      | 1                  |
| tanh                  | 1                                      | 5/3                |
| sigmoid               | 4                                      | 1                  |
| relu, prelu           | sqrt(2)                                | sqrt(2)            |
| leaky_relu(a)         | sqrt(2/(1+a^2))                        | sqrt(2/(1+a^2))    |

Glorot & Bengio (2010) derive the uniform bound sqrt(6/(fan_in+fan_out)) for tanh and remark
that the logistic sigmoid would need 4x that bound; in small sigmoid networks that gain
saturates the units (a 2-2-1 XOR network solves far fewer seeds), hence gain 1. Sigmoid
layers default to `uniform_fan_in`, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch's nn.Linear
default, which solved the most XOR seeds (`default_for`). He et al. (2015) use gain sqrt(2)
for ReLU.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from . import activations
from .registry import Registry

Initializer = Callable[[tuple[int, int], np.random.Generator, activations.Activation], np.ndarray]


def activation_gain(act: activations.Activation) -> float:
    """The per-activation Xavier gain table (module docstring) used by the *_gain Xaviers."""
    if act.code == activations.ACT_SIGMOID:
        return 4.0
    return _relu_gain(act) if act.family == "relu" else 1.0


def kaiming_gain(act: activations.Activation) -> float:
    if act.code == activations.ACT_TANH:
        return 5.0 / 3.0
    return _relu_gain(act) if act.family == "relu" else 1.0


def _relu_gain(act: activations.Activation) -> float:
    slope = act.alpha if act.code == activations.ACT_LEAKY_RELU else 0.0
    return math.sqrt(2.0 / (1.0 + slope * slope))


def zeros(shape: tuple[int, int], rng: np.random.Generator,
          act: activations.Activation) -> np.ndarray:
    return np.zeros(shape)


def ones(shape: tuple[int, int], rng: np.random.Generator,
         act: activations.Activation) -> np.ndarray:
    return np.ones(shape)


def constant(value: float) -> Initializer:
    def init(shape, rng, act):
        return np.full(shape, float(value))

    init.__name__ = f"constant({value})"
    return init


def normal(std: float = 0.01, mean: float = 0.0) -> Initializer:
    """Gaussian N(mean, std^2)."""
    if not std > 0:
        raise ValueError(f"normal initialiser needs std > 0, got {std}")

    def init(shape, rng, act):
        return rng.normal(mean, std, size=shape)

    init.__name__ = f"normal(std={std})"
    return init


def uniform(a: float = -0.05, b: float = 0.05) -> Initializer:
    """Uniform on [a, b)."""
    if not b > a:
        raise ValueError(f"uniform initialiser needs a < b, got a={a}, b={b}")

    def init(shape, rng, act):
        return rng.uniform(a, b, size=shape)

    init.__name__ = f"uniform({a}, {b})"
    return init


def xavier_uniform(
    shape: tuple[int, int], rng: np.random.Generator, act: activations.Activation
) -> np.ndarray:
    """U(-b, b), b = sqrt(6 / (fan_in + fan_out)): gain 1 whatever the activation."""
    fan_in, fan_out = shape
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape)


def xavier_normal(
    shape: tuple[int, int], rng: np.random.Generator, act: activations.Activation
) -> np.ndarray:
    """N(0, s^2), s = sqrt(2 / (fan_in + fan_out)): gain 1 whatever the activation."""
    fan_in, fan_out = shape
    std = math.sqrt(2.0 / (fan_in + fan_out))
    return rng.normal(0.0, std, size=shape)


def xavier_uniform_gain(
    shape: tuple[int, int], rng: np.random.Generator, act: activations.Activation
) -> np.ndarray:
    """xavier_uniform's bound times `activation_gain(act)` (4 for sigmoid, sqrt(2) for ReLU)."""
    fan_in, fan_out = shape
    bound = activation_gain(act) * math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape)


def xavier_normal_gain(
    shape: tuple[int, int], rng: np.random.Generator, act: activations.Activation
) -> np.ndarray:
    """xavier_normal's std times `activation_gain(act)`."""
    fan_in, fan_out = shape
    std = activation_gain(act) * math.sqrt(2.0 / (fan_in + fan_out))
    return rng.normal(0.0, std, size=shape)


def kaiming_uniform(
    shape: tuple[int, int], rng: np.random.Generator, act: activations.Activation
) -> np.ndarray:
    bound = kaiming_gain(act) * math.sqrt(3.0 / shape[0])
    return rng.uniform(-bound, bound, size=shape)


def kaiming_normal(
    shape: tuple[int, int], rng: np.random.Generator, act: activations.Activation
) -> np.ndarray:
    std = kaiming_gain(act) / math.sqrt(shape[0])
    return rng.normal(0.0, std, size=shape)


def uniform_fan_in(
    shape: tuple[int, int], rng: np.random.Generator, act: activations.Activation
) -> np.ndarray:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): PyTorch's nn.Linear default weight init
    (kaiming_uniform_ with a=sqrt(5)); mlpx's default for sigmoid layers."""
    bound = 1.0 / math.sqrt(shape[0])
    return rng.uniform(-bound, bound, size=shape)


def lecun_uniform(
    shape: tuple[int, int], rng: np.random.Generator, act: activations.Activation
) -> np.ndarray:
    bound = math.sqrt(3.0 / shape[0])
    return rng.uniform(-bound, bound, size=shape)


def lecun_normal(shape: tuple[int, int], rng: np.random.Generator,
                 act: activations.Activation) -> np.ndarray:
    return rng.normal(0.0, 1.0 / math.sqrt(shape[0]), size=shape)


_BUILTINS: dict[str, Initializer] = {
    "zeros": zeros,
    "ones": ones,
    "normal": normal(),
    "uniform": uniform(),
    "xavier_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
    "glorot_uniform": xavier_uniform,
    "glorot_normal": xavier_normal,
    "xavier_uniform_gain": xavier_uniform_gain,
    "xavier_normal_gain": xavier_normal_gain,
    "glorot_uniform_gain": xavier_uniform_gain,
    "glorot_normal_gain": xavier_normal_gain,
    "kaiming_uniform": kaiming_uniform,
    "kaiming_normal": kaiming_normal,
    "he_uniform": kaiming_uniform,
    "he_normal": kaiming_normal,
    "lecun_uniform": lecun_uniform,
    "uniform_fan_in": uniform_fan_in,
    "lecun_normal": lecun_normal,
}
#: every initialiser name (functions: looked up in the load's custom_objects too)
NAMES = Registry("initializer", None, "mlpx.load(path, custom_objects=...)")
for _name, _fn in _BUILTINS.items():
    NAMES.add_builtin(_name, _fn)


def names() -> list[str]:
    return NAMES.names()


def default_for(act: activations.Activation) -> str:
    """He for the ReLU family; PyTorch's nn.Linear scheme (`uniform_fan_in`) for sigmoid;
    Xavier/Glorot (gain 1) otherwise.

    Sigmoid: on the 2-2-1 XOR recipe (`benchmarks/xor_solve_rate.py`) U(+-1/sqrt(fan_in))
    solves as many seeds as PyTorch's own default, clearly more than xavier_uniform and the
    gain-4 Xavier (the rates: docs/benchmarks.md).
    """
    if act.family == "relu":
        return "he_normal"
    return "uniform_fan_in" if act.code == activations.ACT_SIGMOID else "xavier_uniform"


_FACTORY_EXAMPLES = {"normal": "normal(std=0.02)", "uniform": "uniform(-0.1, 0.1)",
                     "constant": "constant(0.1)"}


def get(spec: str | Initializer) -> Initializer:
    example = _FACTORY_EXAMPLES.get(getattr(spec, "__name__", ""))
    if example and spec is globals()[spec.__name__]:  # the factory itself, not what it makes
        raise TypeError(
            f"init=mlpx.initializers.{spec.__name__} makes an initialiser: call it, e.g. "
            f"init=mlpx.initializers.{example}"
        )
    if callable(spec):
        return spec
    found = NAMES.lookup(spec) if isinstance(spec, str) else None
    if callable(found):
        return found
    raise ValueError(
        f"unknown initialiser {spec!r}; valid names are {', '.join(names())}, or pass "
        "mlpx.initializers.normal(std), uniform(a, b), constant(value) or any callable "
        "(shape, rng, activation) -> array"
    )


def spec_name(spec: str | Initializer) -> str:
    """The name a saved config records: a function's name only when that name brings back
    the same function ("custom" otherwise: the saved weights replace initial ones)."""
    if isinstance(spec, str):
        return spec
    name = getattr(spec, "__name__", "custom")
    return name if NAMES.lookup(name) in (None, spec) else "custom"


# the public API (what the API reference lists)
__all__ = ["zeros", "ones", "constant", "normal", "uniform", "xavier_uniform", "xavier_normal",
           "xavier_uniform_gain", "xavier_normal_gain", "kaiming_uniform", "kaiming_normal",
           "uniform_fan_in", "lecun_uniform", "lecun_normal", "names"]
