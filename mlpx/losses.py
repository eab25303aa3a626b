"""Losses with PyTorch's semantics and mean reduction.

| name            | network output      | target                                         |
|-----------------|---------------------|------------------------------------------------|
| `mse`           | values              | same shape (a 1-D target for one output)       |
| `l1`            | values              | same shape                                     |
| `cross_entropy` | logits              | integer labels in [0, C), or one-hot/probability rows |
| `bce`           | logits              | 0/1 (or probabilities), same shape; multi-label |
| `nll`           | log-probabilities   | integer labels in [0, C)                       |

Targets are validated and converted once per `fit`/`evaluate` call (`prepare_target`), never
inside the training step.

Each built-in loss is declared once, here: its name, what the network must output, its
PyTorch twin (`torch_module()`, used by `mlpx check`) and the backend op that computes it.
The op's reference formula lives in `mlpx/backends/base.py` (plain array code), its fused
twins in `mlpx/backends/numba_losses.py` and `kernels/losses.cu`.

A user loss is a subclass with `compute(ops, out, target) -> (loss, dloss/dout)`, or a
function of `(out, target)` returning the same pair; register it with
`@mlpx.register_loss("name")` so that saved models restore it (a model is saved only when
its loss's name brings back that very loss: `name_for_saving`):

    @mlpx.register_loss("huber")
    def huber(out, target):
        d = out - target
        small = abs(d) <= 1.0
        loss = np.where(small, 0.5 * d * d, abs(d) - 0.5).mean()
        return loss, np.where(small, d, np.sign(d)) / d.size
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from . import activations
from .backends.base import Array, Backend
from .registry import Registry, same_class


class Loss:
    """Base class. A user loss defines `compute` (and, for other targets than a value per
    output, `prepare_target`); built-ins override `__call__` with their fused backend op."""

    name: str = ""
    #: what the network's output must be: "logits", "log_probs" or "values"
    expects: str = "values"
    #: True where accuracy is a meaningful metric
    classification: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("name") and not cls.name:  # the name a saved model records
            cls.name = cls.__name__

    def compute(self, ops: Backend, out: Array, target: Array) -> tuple[Any, Array]:
        """(mean loss, dLoss/dout) for a batch: `out` and `target` are float64 arrays of the
        backend (`ops.xp` is NumPy or CuPy); the gradient has `out`'s shape."""
        raise NotImplementedError(
            f"loss {type(self).__name__} defines neither compute(self, ops, out, target) "
            "returning (loss, gradient) nor __call__(self, ops, out, target, grad)"
        )

    def __call__(
        self, ops: Backend, out: Array, target: Array, grad: Array | None = None
    ) -> Array:
        """Mean loss (0-d device value); writes dLoss/dout into `grad` when given."""
        value, g = self.compute(ops, ops._f64(out), ops._f64(target))
        if grad is not None:
            g = ops.xp.asarray(g, dtype=ops.xp.float64)
            if g.shape != tuple(out.shape):
                raise ValueError(
                    f"loss {self.name!r} returned a gradient of shape {tuple(g.shape)} for "
                    f"outputs of shape {tuple(out.shape)}; they must match"
                )
            grad[...] = g
        return ops.xp.asarray(value, dtype=ops.xp.float64).reshape(())

    def torch_module(self) -> tuple[str, dict[str, Any]] | None:
        """(name of a `torch.nn` loss module, its keyword arguments) computing the same mean
        loss, or None when PyTorch has none."""
        return None

    def prepare_target(self, y: np.ndarray, n_outputs: int, dtype: Any) -> np.ndarray:
        """Validate `y` (host array) and return it in the layout the loss consumes."""
        y = _numeric(y)
        if y.ndim == 1 and n_outputs == 1:
            y = y.reshape(-1, 1)
        if y.ndim != 2 or y.shape[1] != n_outputs:
            raise ValueError(
                f"loss {self.name!r} needs targets of shape (n_samples, {n_outputs}) to match "
                f"the model's {n_outputs} output(s), got shape {tuple(y.shape)}"
            )
        return np.ascontiguousarray(y, dtype=dtype)

    def proba(self, ops: Backend, out: Array) -> Array:
        """Probabilities from raw outputs (softmax / sigmoid / exp of log-probabilities)."""
        raise ValueError(
            f"loss {self.name!r} is a regression loss: the model's outputs are values, not "
            "probabilities; use predict()"
        )

    def correct(self, ops: Backend, out: Array, target: Array) -> Array:
        """Number of correct predictions in a batch (a 0-d device value) for accuracy."""
        raise NotImplementedError  # pragma: no cover

    def accuracy_denominator(self, target: Array) -> int:
        return int(target.shape[0])

    # ------------------------------------------------------------------ sample weights
    def per_sample(self, ops: Backend, out: Array, target: Array) -> Array:
        """Each sample's loss (float64 vector, device), averaged over its outputs where the
        loss averages over elements, so that its mean is the loss. Needed for sample
        weights; a custom loss without it trains unweighted only."""
        raise NotImplementedError(
            f"loss {self.name or type(self).__name__!r} defines no per_sample(ops, out, "
            "target), which sample_weight= and class_weight= need"
        )

    def weighted(self, ops: Backend, out: Array, target: Array, weight: Array,
                 grad: Array | None = None) -> Array:
        """Weighted mean loss sum(w_i l_i) / sum(w) (PyTorch's and scikit-learn's weighted
        mean; 0 for a batch whose weights are all 0); writes its gradient into `grad`.

        The gradient is the fused kernel's (that of the plain mean) scaled per row by
        w_i n / sum(w): the same kernels as unweighted training, one extra pass."""
        xp = ops.xp
        total = weight.sum()
        # all-zero weights: every term below is then 0 * finite. Dividing by a tiny floor
        # instead would overflow n / denom to inf, and 0 * inf is NaN.
        denom = xp.where(total > 0, total, 1.0)
        if grad is not None:
            self(ops, out, target, grad)
            scale = (weight * (out.shape[0] / denom)).astype(grad.dtype)
            grad *= scale[:, None]
        return (self.per_sample(ops, out, target) * weight).sum() / denom


def _numeric(y: Any) -> np.ndarray:
    y = np.asarray(y)
    if y.dtype.kind not in "biuf":
        raise TypeError(
            f"targets must be numeric, got dtype {y.dtype}; encode class labels as integers "
            "0..C-1 first (classes, y = np.unique(y, return_inverse=True)), or use "
            "mlpx.sklearn.MLPClassifier, which takes labels of any type"
        )
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        bad = int(np.size(y) - np.isfinite(y).sum())
        raise ValueError(f"y contains {bad} NaN or infinite value(s); clean or drop them")
    return y


def _labels(y: np.ndarray, n_classes: int, loss: str) -> np.ndarray:
    """1-D integer labels in [0, n_classes) as int64."""
    if y.dtype.kind == "f":
        if not np.array_equal(y, np.round(y)):
            raise ValueError(
                f"loss {loss!r} with 1-D targets needs integer class labels; got non-integer "
                "values (pass one-hot or probability rows as a 2-D array instead)"
            )
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        lo, hi = y.min(), y.max()
        raise ValueError(
            f"class labels must lie in [0, {n_classes}) for a model with {n_classes} outputs; "
            f"got labels from {lo} to {hi}"
        )
    return np.ascontiguousarray(y, dtype=np.int64)


class MSELoss(Loss):
    name = "mse"

    def torch_module(self) -> tuple[str, dict[str, Any]]:
        return "MSELoss", {}

    def __call__(
        self, ops: Backend, out: Array, target: Array, grad: Array | None = None
    ) -> Array:
        return ops.mse(out, target, grad)

    def per_sample(self, ops: Backend, out: Array, target: Array) -> Array:
        d = ops._f64(out) - ops._f64(target)
        return (d * d).mean(axis=1)


class L1Loss(Loss):
    name = "l1"

    def torch_module(self) -> tuple[str, dict[str, Any]]:
        return "L1Loss", {}

    def __call__(
        self, ops: Backend, out: Array, target: Array, grad: Array | None = None
    ) -> Array:
        return ops.l1(out, target, grad)

    def per_sample(self, ops: Backend, out: Array, target: Array) -> Array:
        return ops.xp.abs(ops._f64(out) - ops._f64(target)).mean(axis=1)


#: labels stored as a (n, 1) column are a common mix-up (e.g. from a DataFrame column)
_COLUMN_HINT = "; for labels in a column pass y.ravel()"


class CrossEntropyLoss(Loss):
    name, expects, classification = "cross_entropy", "logits", True

    def torch_module(self) -> tuple[str, dict[str, Any]]:
        return "CrossEntropyLoss", {}

    def prepare_target(self, y: np.ndarray, n_outputs: int, dtype: Any) -> np.ndarray:
        y = _numeric(y)
        if n_outputs < 2:
            raise ValueError(
                "cross_entropy needs at least 2 outputs (one logit per class); for a single "
                "output use loss='bce'"
            )
        if y.ndim == 1:
            return _labels(y, n_outputs, self.name)
        if y.ndim == 2 and y.shape[1] == n_outputs:
            if y.min() < 0:
                raise ValueError("cross_entropy probability targets must be non-negative")
            return np.ascontiguousarray(y, dtype=dtype)
        raise ValueError(
            f"cross_entropy targets must be integer labels of shape (n_samples,) or "
            f"one-hot/probability rows of shape (n_samples, {n_outputs}); got {tuple(y.shape)}"
            + _COLUMN_HINT * (y.ndim == 2 and y.shape[1] == 1)
        )

    def __call__(
        self, ops: Backend, out: Array, target: Array, grad: Array | None = None
    ) -> Array:
        if target.ndim == 1:
            return ops.softmax_cross_entropy(out, target, grad)
        return ops.softmax_cross_entropy_soft(out, target, grad)

    def per_sample(self, ops: Backend, out: Array, target: Array) -> Array:
        xp, z = ops.xp, ops._f64(out)
        m = z.max(axis=1, keepdims=True)
        lse = m + xp.log(xp.exp(z - m).sum(axis=1, keepdims=True))
        if target.ndim == 1:
            return lse[:, 0] - z[xp.arange(z.shape[0]), target]
        return (ops._f64(target) * (lse - z)).sum(axis=1)

    def proba(self, ops: Backend, out: Array) -> Array:
        return activations.Softmax().formula(ops, ops._f64(out)).astype(out.dtype)

    def correct(self, ops: Backend, out: Array, target: Array) -> Array:
        labels = target if target.ndim == 1 else target.argmax(axis=1)
        return (out.argmax(axis=1) == labels).sum()


class NLLLoss(CrossEntropyLoss):
    name, expects = "nll", "log_probs"

    def torch_module(self) -> tuple[str, dict[str, Any]]:
        return "NLLLoss", {}

    def prepare_target(self, y: np.ndarray, n_outputs: int, dtype: Any) -> np.ndarray:
        y = _numeric(y)
        if y.ndim != 1:
            raise ValueError(f"nll needs integer labels of shape (n_samples,), got {y.shape}"
                             + _COLUMN_HINT * (y.ndim == 2 and y.shape[1] == 1))
        return _labels(y, n_outputs, self.name)

    def __call__(
        self, ops: Backend, out: Array, target: Array, grad: Array | None = None
    ) -> Array:
        return ops.nll(out, target, grad)

    def per_sample(self, ops: Backend, out: Array, target: Array) -> Array:
        return -ops._f64(out)[ops.xp.arange(out.shape[0]), target]

    def proba(self, ops: Backend, out: Array) -> Array:
        return ops.xp.exp(out)


class BCEWithLogitsLoss(Loss):
    name, expects, classification = "bce", "logits", True

    def torch_module(self) -> tuple[str, dict[str, Any]]:
        return "BCEWithLogitsLoss", {}

    def prepare_target(self, y: np.ndarray, n_outputs: int, dtype: Any) -> np.ndarray:
        y = super().prepare_target(y, n_outputs, dtype)
        if y.size and (y.min() < 0 or y.max() > 1):
            raise ValueError(
                f"bce targets must lie in [0, 1] (0/1 labels or probabilities); got values "
                f"from {y.min()} to {y.max()}"
            )
        return y

    def __call__(
        self, ops: Backend, out: Array, target: Array, grad: Array | None = None
    ) -> Array:
        return ops.bce_with_logits(out, target, grad)

    def per_sample(self, ops: Backend, out: Array, target: Array) -> Array:
        xp, x, t = ops.xp, ops._f64(out), ops._f64(target)
        return (xp.maximum(x, 0.0) - x * t + xp.log1p(xp.exp(-xp.abs(x)))).mean(axis=1)

    def proba(self, ops: Backend, out: Array) -> Array:
        return activations.Sigmoid().formula(ops, ops._f64(out)).astype(out.dtype)

    def correct(self, ops: Backend, out: Array, target: Array) -> Array:
        return ((out > 0) == (target > 0.5)).sum()

    def accuracy_denominator(self, target: Array) -> int:
        return int(target.size)


class FunctionLoss(Loss):
    """A loss from a function `fn(out, target) -> (mean loss, dLoss/dout)` on float64 arrays
    (NumPy, or CuPy on the cuda backend; NumPy's functions work on both)."""

    def __init__(self, fn: Callable[[Any, Any], tuple[Any, Any]], name: str | None = None):
        if not callable(fn):
            raise TypeError(f"FunctionLoss takes a function (out, target) -> (loss, grad), "
                            f"got {fn!r}")
        self.fn = fn
        fn_name = getattr(fn, "__name__", "")
        self.name = name or (fn_name if fn_name.isidentifier() else "custom_loss")
        #: the name a saved model records; None for a function without one (a lambda)
        self.saved_name = self.name if name or fn_name.isidentifier() else None

    def compute(self, ops: Backend, out: Array, target: Array) -> tuple[Any, Array]:
        result = self.fn(out, target)
        if not (isinstance(result, tuple) and len(result) == 2):
            raise TypeError(
                f"loss function {self.name!r} must return (loss, gradient), got "
                f"{type(result).__name__}"
            )
        return result

    def __repr__(self) -> str:
        return f"FunctionLoss(name={self.name!r})"


#: every loss name: the built-in declarations and the registered user losses
NAMES = Registry("loss", Loss, "@mlpx.register_loss")
for _cls in (MSELoss, L1Loss, CrossEntropyLoss, BCEWithLogitsLoss, NLLLoss):
    NAMES.add_builtin(_cls.name, _cls)
NAMES.add_aliases({
    "mean_squared_error": "mse", "l2": "mse", "mae": "l1", "mean_absolute_error": "l1",
    "crossentropy": "cross_entropy", "categorical_crossentropy": "cross_entropy",
    "binary_cross_entropy": "bce", "binary_crossentropy": "bce", "bce_with_logits": "bce",
})


def builtins() -> list[type[Loss]]:
    """The built-in declarations (the tests iterate this)."""
    return list(NAMES.builtins().values())


def names() -> list[str]:
    """Valid loss names: the built-ins and the registered ones."""
    return NAMES.names()


def register_loss(name: str) -> Callable[[Any], Any]:
    """Register a user loss under `name` (a decorator), so that `loss="name"` finds it and
    saved models restore it. Decorates a Loss subclass, or a function
    `(out, target) -> (loss, gradient)`. Built-in names are refused."""
    key = NAMES.free_key(name)

    def decorator(obj: Any) -> Any:
        if isinstance(obj, type) and issubclass(obj, Loss):
            obj.name = key
        elif not callable(obj) or isinstance(obj, type):
            raise TypeError(
                f"@register_loss({key!r}) decorates a Loss subclass or a function "
                f"(out, target) -> (loss, gradient), got {obj!r}"
            )
        NAMES.register(key, obj)
        return obj

    return decorator


def get(spec: Any) -> Loss:
    """Resolve a loss: a name (the load's `custom_objects`, the built-ins, the registered
    losses), a `Loss` object or subclass, or a function `(out, target) -> (loss, gradient)`."""
    if isinstance(spec, str) and spec.strip():
        loss = _make(NAMES.lookup(spec), NAMES.key(spec))
    else:
        loss = _make(spec)
    if loss is not None:
        return loss
    raise ValueError(
        f"unknown loss {spec!r}; valid names are {', '.join(names())} (a saved model's own "
        "loss must be registered with @mlpx.register_loss(name) before loading, or given as "
        "mlpx.load(path, custom_objects={name: ...}))"
    )


def _make(obj: Any, name: str | None = None) -> Loss | None:
    """The loss an object, class or function gives (a function's loss named `name`)."""
    if isinstance(obj, Loss):
        return obj
    if isinstance(obj, type):
        return obj() if issubclass(obj, Loss) else None
    if callable(obj):
        _check_arity(obj)
        return FunctionLoss(obj, name=name)
    return None


def _same(loss: Loss, entry: Any) -> bool:
    """Whether registry `entry` builds `loss`: its own class, or the very same function."""
    if isinstance(loss, FunctionLoss):
        return (entry.fn if isinstance(entry, FunctionLoss) else entry) is loss.fn
    return same_class(loss, entry)


def name_for_saving(loss: Loss) -> str:
    """The name a checkpoint records for `loss`: one that brings back this very loss on load
    (or nothing yet: the load then needs it registered or in `custom_objects`). Raises
    UnsaveablePartError (a ValueError) with the fix otherwise."""
    name = loss.saved_name if isinstance(loss, FunctionLoss) else loss.name
    return NAMES.name_for_saving(loss, name, same=_same)


NAMES.saver = name_for_saving
def _check_arity(fn: Callable[..., Any]) -> None:
    try:
        inspect.signature(fn).bind(None, None)
    except TypeError:
        raise TypeError(
            f"a loss function takes (out, target) and returns (loss, gradient); {fn!r} "
            "does not accept two arguments"
        ) from None
    except ValueError:  # no signature (a builtin): let the call decide
        pass


# the public API (what the API reference lists; the rest serves fit and the kernels)
__all__ = ["Loss", "MSELoss", "L1Loss", "CrossEntropyLoss", "NLLLoss", "BCEWithLogitsLoss",
           "FunctionLoss", "register_loss", "names", "get"]
