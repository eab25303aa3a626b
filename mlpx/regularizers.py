"""Weight penalties added to the training objective, Keras-style per layer:

    mlpx.Dense(256, activation="relu", kernel_regularizer=mlpx.regularizers.L2(1e-4))

A regulariser with strengths l1 and l2 adds

    l1 * ||W||_1 + l2 / 2 * ||W||^2            (gradient l1 * sign(W) + l2 * W)

to the loss that `fit`, `evaluate`-free `loss_and_grad` and the History report. Note the
1/2: `L2(lam)` has gradient `lam * W`, the textbook "lambda/2 ||W||^2" (Keras's `l2(lam)` is
`lam * ||W||^2`, gradient `2 lam W`). `kernel_regularizer` penalises a Dense layer's weight
matrix; biases are not penalised unless `bias_regularizer` is given (the usual choice:
biases have few degrees of freedom and penalising them only shifts the outputs).

This is a penalty in the objective, distinct from an optimiser's `weight_decay` (see
`mlpx.optim`): the penalty's gradient passes through momentum and Adam's adaptive scaling,
and is part of the reported loss; AdamW's decoupled weight decay shrinks the weights
directly and is not part of the loss.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .preconditions import check_float
from .registry import Registry, same_class

if TYPE_CHECKING:
    from .backends.base import Array, Backend
    from .layers.base import Parameter


class Regularizer:
    """l1 * ||W||_1 + l2 / 2 * ||W||^2 on one parameter."""

    name = "l1_l2"

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        self.l1 = check_float(l1, "l1")
        self.l2 = check_float(l2, "l2")

    def penalty(self, ops: Backend, w: Array) -> Any:
        """The penalty as a 0-d float64 array on the backend's device (no host read)."""
        total = 0.0
        if self.l1:
            total = total + self.l1 * ops.sum_abs(w)
        if self.l2:
            total = total + (0.5 * self.l2) * ops.sum_squares(w)
        return total

    def add_grad(self, ops: Backend, p: Parameter) -> None:
        """p.grad += l1 * sign(p) + l2 * p (one fused pass)."""
        if self.l1 or self.l2:
            ops.add_penalty_grad(p.data, p.grad, self.l1, self.l2)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "l1": self.l1, "l2": self.l2}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Regularizer) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(tuple(self.get_config().items()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(l1={self.l1}, l2={self.l2})"


class L1L2(Regularizer):
    """Both penalties: l1 * ||W||_1 + l2 / 2 * ||W||^2 (elastic net)."""


class L1(Regularizer):
    """l1 * ||W||_1 (subgradient l1 * sign(W), 0 at W = 0): drives weights to exactly 0
    only with a proximal method; with (S)GD it makes many weights small."""

    name = "l1"

    def __init__(self, l1: float = 0.01):
        super().__init__(l1=l1)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "l1": self.l1}

    def __repr__(self) -> str:
        return f"L1({self.l1})"


class L2(Regularizer):
    """l2 / 2 * ||W||^2 (gradient l2 * W): "weight decay" written into the objective."""

    name = "l2"

    def __init__(self, l2: float = 0.01):
        super().__init__(l2=l2)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "l2": self.l2}

    def __repr__(self) -> str:
        return f"L2({self.l2})"


#: every regulariser name: the built-in ones and those registered with `register`
NAMES = Registry("regularizer", Regularizer, "mlpx.regularizers.register")
for _cls in (L1, L2, L1L2):
    NAMES.add_builtin(_cls.name, _cls)


def register(cls: type[Regularizer]) -> type[Regularizer]:
    """Register a Regularizer subclass under its `name` (a class attribute of its own), so
    that saved models restore it. Built-in names are refused."""
    if not (isinstance(cls, type) and issubclass(cls, Regularizer)) or not cls.__dict__.get(
            "name"):
        raise TypeError(
            f"mlpx.regularizers.register takes a Regularizer subclass that declares its own "
            f"name (name = 'my_regularizer'), got {cls!r}"
        )
    NAMES.register(cls.name, cls)
    return cls


def get(spec: Any) -> Regularizer | None:
    """None, a Regularizer, a name ("l1", "l2": strength 0.01) or a `get_config()` dict."""
    if spec is None or isinstance(spec, Regularizer):
        return spec
    cfg = dict(spec) if isinstance(spec, dict) else {"name": spec}
    cls = NAMES.lookup_class(cfg.pop("name", None))
    if cls is not None:
        return cls(**cfg)
    raise ValueError(
        f"unknown regularizer {spec!r}; use mlpx.regularizers.L2(1e-4), L1(1e-5), "
        "L1L2(l1=..., l2=...) or one of the names 'l1', 'l2'"
    )


def name_for_saving(reg: Regularizer) -> str:
    """The name a checkpoint records for `reg`: one that brings back its very class on load
    (a bare Regularizer is an L1L2). Raises UnsaveablePartError (a ValueError) otherwise."""
    return NAMES.name_for_saving(
        reg, reg.name or None,
        same=lambda part, entry: same_class(part, entry) or (
            type(part) is Regularizer and entry is L1L2))


NAMES.saver = name_for_saving


__all__ = ["Regularizer", "L1", "L2", "L1L2", "get", "register", "name_for_saving"]
