"""Weight initialisers. All draw on the host from one seeded NumPy generator, so the same
seed gives the same initial weights on every backend.

Gains (the factor that keeps activations' variance stable through a layer):

| activation            | Xavier/Glorot gain | Kaiming/He gain          |
|-----------------------|--------------------|--------------------------|
| identity, step, others| 1                  | 1                        |
| tanh                  | 1                  | 5/3                      |
| sigmoid               | 4                  | 1                        |
| relu, prelu           | sqrt(2)            | sqrt(2)                  |
| leaky_relu(a)         | sqrt(2/(1+a^2))    | sqrt(2/(1+a^2))          |

Glorot & Bengio (2010) derive the uniform bound sqrt(6/(fan_in+fan_out)) for tanh and note
that the logistic sigmoid needs 4x that bound; He et al. (2015) use gain sqrt(2) for ReLU.
The Kaiming column follows PyTorch's `calculate_gain`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from . import activations as A

Initializer = Callable[[tuple[int, int], np.random.Generator, A.Activation], np.ndarray]


def xavier_gain(act: A.Activation) -> float:
    if act.code == A.ACT_SIGMOID:
        return 4.0
    return _relu_gain(act) if act.family == "relu" else 1.0


def kaiming_gain(act: A.Activation) -> float:
    if act.code == A.ACT_TANH:
        return 5.0 / 3.0
    return _relu_gain(act) if act.family == "relu" else 1.0


def _relu_gain(act: A.Activation) -> float:
    slope = act.alpha if act.code == A.ACT_LEAKY_RELU else 0.0
    return math.sqrt(2.0 / (1.0 + slope * slope))


def zeros(shape: tuple[int, int], rng: np.random.Generator, act: A.Activation) -> np.ndarray:
    return np.zeros(shape)


def ones(shape: tuple[int, int], rng: np.random.Generator, act: A.Activation) -> np.ndarray:
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
    shape: tuple[int, int], rng: np.random.Generator, act: A.Activation
) -> np.ndarray:
    fan_in, fan_out = shape
    bound = xavier_gain(act) * math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape)


def xavier_normal(
    shape: tuple[int, int], rng: np.random.Generator, act: A.Activation
) -> np.ndarray:
    fan_in, fan_out = shape
    std = xavier_gain(act) * math.sqrt(2.0 / (fan_in + fan_out))
    return rng.normal(0.0, std, size=shape)


def kaiming_uniform(
    shape: tuple[int, int], rng: np.random.Generator, act: A.Activation
) -> np.ndarray:
    bound = kaiming_gain(act) * math.sqrt(3.0 / shape[0])
    return rng.uniform(-bound, bound, size=shape)


def kaiming_normal(
    shape: tuple[int, int], rng: np.random.Generator, act: A.Activation
) -> np.ndarray:
    std = kaiming_gain(act) / math.sqrt(shape[0])
    return rng.normal(0.0, std, size=shape)


def lecun_uniform(
    shape: tuple[int, int], rng: np.random.Generator, act: A.Activation
) -> np.ndarray:
    bound = math.sqrt(3.0 / shape[0])
    return rng.uniform(-bound, bound, size=shape)


def lecun_normal(shape: tuple[int, int], rng: np.random.Generator, act: A.Activation) -> np.ndarray:
    return rng.normal(0.0, 1.0 / math.sqrt(shape[0]), size=shape)


_BY_NAME: dict[str, Initializer] = {
    "zeros": zeros,
    "ones": ones,
    "normal": normal(),
    "uniform": uniform(),
    "xavier_uniform": xavier_uniform,
    "xavier_normal": xavier_normal,
    "glorot_uniform": xavier_uniform,
    "glorot_normal": xavier_normal,
    "kaiming_uniform": kaiming_uniform,
    "kaiming_normal": kaiming_normal,
    "he_uniform": kaiming_uniform,
    "he_normal": kaiming_normal,
    "lecun_uniform": lecun_uniform,
    "lecun_normal": lecun_normal,
}


def names() -> list[str]:
    return sorted(_BY_NAME)


def default_for(act: A.Activation) -> str:
    """He for the ReLU family, Xavier/Glorot otherwise."""
    return "he_normal" if act.family == "relu" else "xavier_uniform"


def get(spec: str | Initializer) -> Initializer:
    if callable(spec):
        return spec
    if isinstance(spec, str) and spec.lower() in _BY_NAME:
        return _BY_NAME[spec.lower()]
    raise ValueError(
        f"unknown initialiser {spec!r}; valid names are {', '.join(names())}, or pass "
        "mlpx.initializers.normal(std), uniform(a, b), constant(value) or any callable "
        "(shape, rng, activation) -> array"
    )


def spec_name(spec: str | Initializer) -> str:
    return spec if isinstance(spec, str) else getattr(spec, "__name__", "custom")
