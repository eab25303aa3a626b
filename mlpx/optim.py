"""Optimisers. Each binds to a model's parameters once (allocating its per-parameter state
on the model's backend) and then updates every parameter in place with one fused kernel per
parameter per step.

Names and hyperparameters follow PyTorch: `mlpx.optim.SGD(lr=0.01)`; by name,
`fit(optimizer="sgd", lr=0.01)`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .backends.base import Backend
from .layers.base import Parameter


def check_lr(lr: Any) -> float:
    try:
        value = float(lr)
    except (TypeError, ValueError):
        raise TypeError(f"learning rate must be a number, got {lr!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"learning rate must be a positive finite number, got {lr!r}")
    return value


class Optimizer:
    """Base class: subclasses implement `_update(i, param)` and declare `state_names`."""

    name = ""
    #: per-parameter state arrays allocated at bind time (e.g. ("momentum",))
    state_names: tuple[str, ...] = ()
    default_lr = 0.01

    def __init__(self, lr: float | None = None):
        self.lr = check_lr(self.default_lr if lr is None else lr)
        self.ops: Backend | None = None
        self.params: list[Parameter] = []
        self.state: list[dict[str, Any]] = []
        self.step_count = 0

    def bind(self, params: list[Parameter], ops: Backend) -> None:
        """Attach to parameters; keeps existing state when the shapes still match."""
        shapes = [p.shape for p in params]
        same = self.state and [p.shape for p in self.params] == shapes and self.ops is ops
        self.params, self.ops = list(params), ops
        if not same:
            self.state = [
                {k: ops.zeros(p.shape, p.data.dtype) for k in self.state_names} for p in params
            ]

    def step(self) -> None:
        self.step_count += 1
        for i, p in enumerate(self.params):
            self._update(i, p)

    def _update(self, i: int, p: Parameter) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, Any]:
        return {"lr": self.lr}

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, **self.hyperparameters()}

    def state_dict(self) -> dict[str, Any]:
        """Hyperparameters, step count and per-parameter state as NumPy arrays."""
        ops = self.ops
        return {
            "config": self.get_config(),
            "step_count": self.step_count,
            "state": [{k: ops.to_numpy(v).copy() for k, v in s.items()} for s in self.state],
        }

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.step_count = int(sd.get("step_count", 0))
        state = sd.get("state") or []
        if self.ops is None:
            raise RuntimeError("bind the optimiser to parameters before loading its state")
        if state and len(state) != len(self.params):
            raise ValueError(
                f"optimiser state has {len(state)} parameter entries, the model has "
                f"{len(self.params)}"
            )
        for s, saved in zip(self.state, state, strict=True):
            for k, v in saved.items():
                s[k][...] = self.ops.asarray(np.asarray(v, dtype=s[k].dtype))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Mini-batch gradient descent: w <- w - lr * grad."""

    name = "sgd"

    def __init__(self, lr: float | None = None):
        super().__init__(lr)

    def _update(self, i: int, p: Parameter) -> None:
        self.ops.sgd_update(p.data, p.grad, self.lr)


_BY_NAME: dict[str, type[Optimizer]] = {"sgd": SGD}


def names() -> list[str]:
    return sorted(_BY_NAME)


def register(cls: type[Optimizer]) -> type[Optimizer]:
    _BY_NAME[cls.name] = cls
    return cls


def get(spec: str | Optimizer, lr: float | None = None) -> Optimizer:
    """An optimiser from a name (+ lr) or an object (then `lr` must be None)."""
    if isinstance(spec, Optimizer):
        if lr is not None:
            raise ValueError(
                "give the learning rate either to the optimiser object or as lr=, not both: "
                f"fit(optimizer={spec!r}) or fit(optimizer='{spec.name}', lr={lr})"
            )
        return spec
    if isinstance(spec, str) and spec.lower() in _BY_NAME:
        return _BY_NAME[spec.lower()](lr=lr)
    raise ValueError(f"unknown optimizer {spec!r}; valid names are {', '.join(names())}")


def from_config(cfg: dict[str, Any]) -> Optimizer:
    cfg = dict(cfg)
    return _BY_NAME[cfg.pop("name")](**cfg)
