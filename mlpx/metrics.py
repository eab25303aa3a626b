"""Metrics that `fit(metrics=...)` and `evaluate` report, computed on the model's device.

    model.fit(X, y, loss="cross_entropy", metrics=["accuracy", "top_k_accuracy"],
              validation_data=(Xv, yv))
    history.history  # loss, accuracy, top_5_accuracy, val_loss, val_accuracy, ...

A metric keeps running sums as device arrays, updated batch by batch without reading
anything back to the host; `result` reads them once (at the end of an epoch, or when a batch
callback asks for a value). With sample weights each sample counts with its weight.

| name (aliases)                                       | History key        | losses        |
|------------------------------------------------------|--------------------|---------------|
| `accuracy` (`acc`)                                   | `accuracy`         | classification |
| `top_k_accuracy` (`top_k_categorical_accuracy`, ...) | `top_5_accuracy`   | cross_entropy, nll |
| `mae` (`mean_absolute_error`)                        | `mae`              | regression    |
| `mse` (`mean_squared_error`)                         | `mse`              | regression    |
| `r2` (`r2_score`)                                    | `r2`               | regression    |

`TopKAccuracy(k=3)` names itself `top_3_accuracy`. Each metric declares its `direction`:
"max" when larger is better (accuracy, top-k accuracy, r2), "min" when smaller is (mae, mse);
EarlyStopping, ModelCheckpoint and ReduceLROnPlateau with `mode="auto"` read it.

A callable `fn(y_true, y_pred)` is a metric too (Keras' convention): it gets the batch's
targets as the loss consumes them (integer labels for cross_entropy) and the raw outputs
(logits or values) as backend arrays, and returns one value per sample or the batch's mean;
the History key is its `__name__`. It declares its direction with
`FunctionMetric(fn, direction="max")` or an attribute `fn.direction = "max"`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import losses
from .registry import Registry


class Metric:
    """A running, sample-weighted statistic of (outputs, targets).

    Subclasses define `update` (new state from the old state and a batch; device arrays
    only) and `result` (the value from the state, read on the host). The state starts as
    None at every epoch and evaluation.

    Two more methods serve checkpoints and data-parallel fits: `state_spec` declares the
    state (what a checkpoint taken inside an epoch may hold for the metric) and `merge`
    combines the states of two disjoint sets of samples (the processes' shards). A custom
    metric without `merge` cannot be used with `fit(distributed=True)`."""

    name: str = "metric"
    #: "max" when larger values are better, "min" when smaller are; None: not declared (a
    #: callback monitoring it then needs mode="min" or "max")
    direction: str | None = None
    #: added by mlpx itself (accuracy for classification losses), not asked for
    implicit: bool = False

    def check(self, loss: losses.Loss, n_outputs: int | None) -> None:
        """Raise ValueError when the metric means nothing for this loss and output width
        (None: the width is not known yet)."""

    def update(self, ops: Any, state: Any, out: Any, target: Any, weight: Any) -> Any:
        raise NotImplementedError  # pragma: no cover

    def result(self, ops: Any, state: Any) -> float:
        raise NotImplementedError  # pragma: no cover

    def state_spec(self, n_outputs: int) -> list[tuple[tuple[int, ...], bool]] | None:
        """The state's arrays, each as (shape, whether it is never negative); they are
        stored as float64. None: not declared (a custom metric's state is then only checked
        to be finite float64 arrays)."""
        return None

    def merge(self, ops: Any, a: Any, b: Any) -> Any:
        """The state of the samples of states `a` and `b` together (either may be None)."""
        raise NotImplementedError(
            f"metric {self.name!r} ({type(self).__name__}) defines no merge(ops, a, b), which "
            "a data-parallel fit needs to combine the processes' sums; define it, or record "
            "the metric in a single-process fit"
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def mergeable(metric: Metric) -> bool:
    """Whether `metric` defines `merge` (so a data-parallel fit can combine it)."""
    return type(metric).merge is not Metric.merge


def state_to_host(ops: Any, state: Any) -> list[np.ndarray] | None:
    """A metric state as float64 host arrays (checkpoints, exchanges between processes)."""
    if state is None:
        return None
    return [np.array(ops.to_numpy(v), dtype=np.float64) for v in state]


def state_to_device(ops: Any, host: Any) -> tuple | None:
    """The inverse of `state_to_host`: a state whose arrays live on the model's device."""
    if host is None:
        return None
    return tuple(ops.xp.asarray(np.asarray(v, dtype=np.float64)) for v in host)


class MeanMetric(Metric):
    """The (weighted) mean over samples of `per_sample(ops, out, target)`."""

    def per_sample(self, ops: Any, out: Any, target: Any) -> Any:
        raise NotImplementedError  # pragma: no cover

    def update(self, ops: Any, state: Any, out: Any, target: Any, weight: Any) -> Any:
        values = self.per_sample(ops, out, target)
        if weight is None:
            batch = (values.sum(), out.shape[0])
        else:
            batch = ((values * weight).sum(), weight.sum())
        return batch if state is None else (state[0] + batch[0], state[1] + batch[1])

    def result(self, ops: Any, state: Any) -> float:
        if state is None:
            return math.nan
        total, count = ops.to_float(state[0]), float(ops.to_float(state[1]))
        return total / count if count > 0 else math.nan

    def state_spec(self, n_outputs: int) -> list[tuple[tuple[int, ...], bool]] | None:
        return [((), False), ((), True)]  # the (weighted) sum of the values, the count

    def merge(self, ops: Any, a: Any, b: Any) -> Any:
        if a is None or b is None:
            return b if a is None else a
        return a[0] + b[0], a[1] + b[1]


def _labels(ops: Any, target: Any) -> Any:
    return target if target.ndim == 1 else target.argmax(axis=1)


class Accuracy(MeanMetric):
    """Share of correct predictions: the arg-max class (cross_entropy, nll) or each output's
    side of 0.5 (bce, every label of a multi-label target)."""

    name = "accuracy"
    direction = "max"

    def check(self, loss: losses.Loss, n_outputs: int | None) -> None:
        if not loss.classification:
            raise ValueError(
                f"metric 'accuracy' needs a classification loss (cross_entropy, bce, nll); "
                f"loss {loss.name!r} is a regression loss: use 'mae', 'mse' or 'r2'"
            )
        self._loss = loss

    def per_sample(self, ops: Any, out: Any, target: Any) -> Any:
        if self._loss.expects == "logits" and self._loss.name == "bce":
            return ((out > 0) == (target > 0.5)).mean(axis=1)
        return (out.argmax(axis=1) == _labels(ops, target)).astype(ops.xp.float64)

    def update(self, ops: Any, state: Any, out: Any, target: Any, weight: Any) -> Any:
        if weight is not None:
            return super().update(ops, state, out, target, weight)
        # exact integer counts, the same numbers evaluate() has always given
        batch = (self._loss.correct(ops, out, target), self._loss.accuracy_denominator(target))
        return batch if state is None else (state[0] + batch[0], state[1] + batch[1])


class TopKAccuracy(MeanMetric):
    """Share of samples whose class is among the `k` largest outputs (ties count for it)."""

    direction = "max"

    def __init__(self, k: int = 5) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"TopKAccuracy needs an integer k >= 1, got {k!r}")
        self.k = int(k)
        self.name = f"top_{self.k}_accuracy"

    def check(self, loss: losses.Loss, n_outputs: int | None) -> None:
        if not (loss.classification and loss.name != "bce"):
            raise ValueError(
                f"metric {self.name!r} ranks one class per sample: it needs loss "
                f"'cross_entropy' or 'nll', not {loss.name!r}"
            )
        # every class is among the k largest: the value would be 1.0 whatever the model does
        # (scikit-learn's top_k_accuracy_score warns that such a score is meaningless)
        if n_outputs is not None and self.k >= n_outputs:
            raise ValueError(
                f"metric {self.name!r} with {n_outputs} classes is always 1.0 (k={self.k} "
                f"covers every class); use a k below {n_outputs}, e.g. "
                f"metrics=['top_{max(n_outputs - 1, 1)}_accuracy'] or "
                f"mlpx.metrics.TopKAccuracy(k={max(n_outputs - 1, 1)}), or 'accuracy'"
            )

    def per_sample(self, ops: Any, out: Any, target: Any) -> Any:
        labels = _labels(ops, target)
        rows = ops.xp.arange(out.shape[0])
        own = out[rows, labels][:, None]
        return ((out > own).sum(axis=1) < self.k).astype(ops.xp.float64)

    def __repr__(self) -> str:
        return f"TopKAccuracy(k={self.k})"


class _Regression(MeanMetric):
    def check(self, loss: losses.Loss, n_outputs: int | None) -> None:
        if loss.expects != "values":
            raise ValueError(
                f"metric {self.name!r} compares outputs with targets of the same shape; with "
                f"loss {loss.name!r} the outputs are {loss.expects.replace('_', '-')}, not "
                "values: use 'accuracy' or 'top_k_accuracy'"
            )


class MeanAbsoluteError(_Regression):
    """Mean |output - target| over samples and outputs."""

    name = "mae"
    direction = "min"

    def per_sample(self, ops: Any, out: Any, target: Any) -> Any:
        return ops.xp.abs(ops._f64(out) - ops._f64(target)).mean(axis=1)


class MeanSquaredError(_Regression):
    """Mean (output - target)^2 over samples and outputs."""

    name = "mse"
    direction = "min"

    def per_sample(self, ops: Any, out: Any, target: Any) -> Any:
        d = ops._f64(out) - ops._f64(target)
        return (d * d).mean(axis=1)


class R2Score(_Regression):
    """Coefficient of determination 1 - SS_res / SS_tot per output, averaged over outputs
    (scikit-learn's `r2_score`, `multioutput="uniform_average"`; a constant target scores 1
    when predicted exactly and 0 otherwise). The per-batch sums are merged with Chan's
    update, so large target offsets lose no precision."""

    name = "r2"
    direction = "max"

    def update(self, ops: Any, state: Any, out: Any, target: Any, weight: Any) -> Any:
        xp = ops.xp
        t, o = ops._f64(target), ops._f64(out)
        w = xp.ones(t.shape[0]) if weight is None else weight
        wb = w.sum()
        wt = w[:, None]
        mean_b = (wt * t).sum(axis=0) / xp.maximum(wb, 1e-300)
        m2_b = (wt * (t - mean_b) ** 2).sum(axis=0)
        res_b = (wt * (t - o) ** 2).sum(axis=0)
        return self.merge(ops, state, (wb, mean_b, m2_b, res_b))

    def state_spec(self, n_outputs: int) -> list[tuple[tuple[int, ...], bool]] | None:
        # total weight; per output: weighted target mean, sum of squares about it, residuals
        k = (n_outputs,)
        return [((), True), (k, False), (k, True), (k, True)]

    def merge(self, ops: Any, a: Any, b: Any) -> Any:
        """Chan's parallel update of (weight, mean, M2) and the summed residuals."""
        if a is None or b is None:
            return b if a is None else a
        xp = ops.xp
        wa, mean_a, m2_a, res_a = a
        wb, mean_b, m2_b, res_b = b
        total = wa + wb
        delta = mean_b - mean_a
        share = wb / xp.maximum(total, 1e-300)
        return (total, mean_a + delta * share, m2_a + m2_b + delta * delta * wa * share,
                res_a + res_b)

    def result(self, ops: Any, state: Any) -> float:
        if state is None:
            return math.nan
        ss_tot = np.asarray(ops.to_numpy(state[2]), dtype=np.float64)
        ss_res = np.asarray(ops.to_numpy(state[3]), dtype=np.float64)
        scores = np.where(ss_tot > 0, 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, 1.0),
                          np.where(ss_res > 0, 0.0, 1.0))
        return float(scores.mean())


class FunctionMetric(MeanMetric):
    """A user function `fn(y_true, y_pred)` returning per-sample values or a batch mean."""

    def __init__(self, fn: Callable[[Any, Any], Any], name: str | None = None,
                 direction: str | None = None) -> None:
        self.fn = fn
        self.name = name or _function_name(fn)
        self.direction = check_direction(
            direction if direction is not None else getattr(fn, "direction", None), self.name)

    def update(self, ops: Any, state: Any, out: Any, target: Any, weight: Any) -> Any:
        value = self.fn(target, out)
        shape = getattr(value, "shape", ())
        if shape not in ((), (out.shape[0],)):
            raise ValueError(
                f"metric {self.name!r} returned shape {tuple(shape)} for a batch of "
                f"{out.shape[0]}; return one value per sample or one for the batch"
            )
        if shape == ():  # the batch's mean: it counts with the batch's total weight
            count = out.shape[0] if weight is None else weight.sum()
            batch = (ops.xp.asarray(value, dtype=ops.xp.float64) * count, count)
        elif weight is None:
            batch = (value.sum(), out.shape[0])
        else:
            batch = ((value * weight).sum(), weight.sum())
        return batch if state is None else (state[0] + batch[0], state[1] + batch[1])

    def __repr__(self) -> str:
        return f"FunctionMetric({self.fn!r}, name={self.name!r})"


def check_direction(direction: Any, name: str) -> str | None:
    """`direction` when it is "max", "min" or None; a ValueError saying so otherwise."""
    if direction is None or direction in ("max", "min"):
        return direction
    raise ValueError(f"metric {name!r} declares direction {direction!r}; use 'max' (larger is "
                     "better), 'min' (smaller is better) or None")


def direction_of(key: str, metrics: Sequence[Metric] = ()) -> str | None:
    """Whether History's `key` improves upward ("max") or downward ("min"), as the loss or
    the metric recorded under it declares (`metrics`: the fit's, else the built-ins); None
    when nothing declares it."""
    name = key[4:] if key.startswith("val_") else key
    if name in ("loss", "grad_norm"):
        return "min"
    for m in metrics:
        if m.name == name:
            return check_direction(getattr(m, "direction", None), name)
    known = builtin(name)
    return None if known is None else known.direction


def _function_name(fn: Any) -> str:
    name = getattr(fn, "__name__", None) or type(fn).__name__
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(
            f"metric {fn!r} has no usable name ({name!r}) for History; give it one: "
            "mlpx.metrics.FunctionMetric(fn, name='my_metric')"
        )
    return name


#: every metric name (user metrics are objects or functions given to fit; custom_objects
#: may name one)
NAMES = Registry("metric", Metric, "mlpx.metrics.FunctionMetric")
for _name, _cls in {"accuracy": Accuracy, "top_k_accuracy": TopKAccuracy,
                    "mae": MeanAbsoluteError, "mse": MeanSquaredError, "r2": R2Score}.items():
    NAMES.add_builtin(_name, _cls)
NAMES.add_aliases({
    "acc": "accuracy", "categorical_accuracy": "accuracy", "sparse_categorical_accuracy":
    "accuracy", "binary_accuracy": "accuracy",
    "top_k_categorical_accuracy": "top_k_accuracy",
    "sparse_top_k_categorical_accuracy": "top_k_accuracy", "top5": "top_k_accuracy",
    "mean_absolute_error": "mae", "l1": "mae",
    "mean_squared_error": "mse",
    "r2_score": "r2", "r_squared": "r2",
})


def builtin(key: str) -> Metric | None:
    """mlpx's own metric that History records under `key` (None: no built-in metric does)."""
    top = re.fullmatch(r"top_([1-9][0-9]{0,8})_accuracy", key)
    if top:
        return TopKAccuracy(int(top.group(1)))
    make = NAMES.builtin(key)
    return make() if make is not None and make().name == key else None


def describe(metrics: Sequence[Metric]) -> list[dict[str, Any]]:
    """The metrics a checkpoint records: {"name": History key, "builtin": whether mlpx's own
    metric of that name is this very metric}. A custom metric comes back on load from
    `custom_objects` (or is left out with a warning)."""
    out = []
    for m in metrics:
        same = builtin(m.name)
        out.append({"name": m.name, "builtin": same is not None and type(same) is type(m)})
    return out


def restore(entries: Sequence[dict[str, Any]]) -> list[Metric]:
    """The metrics `describe` recorded: built-ins by name, custom ones from the load's
    `custom_objects` (a Metric class or object, or a function fn(y_true, y_pred)); a custom
    metric it does not hold is left out, with a warning saying how to bring it back."""
    import warnings

    from .custom_objects import find

    out: list[Metric] = []
    for entry in entries:
        name = entry["name"]
        if entry["builtin"]:
            out.append(builtin(name))
            continue
        found = find(name)
        if isinstance(found, type) and issubclass(found, Metric):
            found = found()
        if isinstance(found, Metric):
            out.append(found)
        elif callable(found):
            out.append(FunctionMetric(found, name=name))
        else:
            warnings.warn(
                f"the saved model recorded the custom metric {name!r}, which is not built in: "
                f"it is left out. Pass it to mlpx.load(path, custom_objects="
                f"{{{name!r}: metric}}) to keep it (or to fit(metrics=...) when resuming)",
                UserWarning, stacklevel=4)
    return out


def names() -> list[str]:
    return NAMES.names()


def get(spec: Any) -> Metric:
    """A metric from a name (the load's `custom_objects`, then the built-ins), a Metric
    object or a callable."""
    if isinstance(spec, Metric):
        return spec
    if isinstance(spec, type) and issubclass(spec, Metric):  # the class: as its name means
        return spec()
    if isinstance(spec, str):
        top = re.fullmatch(r"top_?(\d+)(?:_accuracy)?", spec.lower())
        if top and NAMES.lookup(spec) is None:
            return TopKAccuracy(int(top.group(1)))
        entry = NAMES.lookup(spec)
        if isinstance(entry, Metric):
            return entry
        if isinstance(entry, type) and issubclass(entry, Metric):
            return entry()
        if callable(entry):
            return FunctionMetric(entry)
        raise ValueError(
            f"unknown metric {spec!r}; valid names are {', '.join(names())} (or top_<k>_accuracy), "
            "an mlpx.metrics.Metric, or a function fn(y_true, y_pred)"
        )
    if callable(spec):
        return FunctionMetric(spec)
    raise TypeError(
        f"metrics must be names, mlpx.metrics.Metric objects or functions, got {spec!r}"
    )


def resolve(specs: Any, loss: losses.Loss, n_outputs: int | None) -> list[Metric]:
    """The metrics of a fit or evaluation: `specs` checked against the loss, with accuracy
    first for classification losses (reported whether asked for or not). Names are unique
    and never clash with the loss's own key."""
    if isinstance(specs, (str, Metric)) or (callable(specs) and not isinstance(specs, Sequence)):
        specs = [specs]
    if specs is not None and not isinstance(specs, (list, tuple)):
        raise TypeError(f"metrics must be a list, e.g. metrics=['accuracy'], got {specs!r}")
    chosen = [get(s) for s in specs or []]
    if loss.classification and not any(isinstance(m, Accuracy) for m in chosen):
        accuracy = Accuracy()
        accuracy.implicit = True
        chosen.insert(0, accuracy)
    seen: set[str] = set()
    for m in chosen:
        if m.name in seen or m.name in ("loss", "lr", "grad_norm") or m.name.startswith("val_"):
            raise ValueError(
                f"metric name {m.name!r} is used twice or is reserved (loss, lr, grad_norm, "
                "val_*); give the metric another name"
            )
        seen.add(m.name)
    for m in chosen:
        m.check(loss, n_outputs)
    return chosen


__all__ = ["Metric", "MeanMetric", "Accuracy", "TopKAccuracy", "MeanAbsoluteError",
           "MeanSquaredError", "R2Score", "FunctionMetric", "get", "resolve", "names", "builtin",
           "mergeable", "state_to_host", "state_to_device", "direction_of", "check_direction",
           "describe", "restore"]
