"""Sample and class weights for `fit` and `evaluate`: checked once, turned into one float64
weight per sample.

A weighted loss is the weighted mean sum(w_i l_i) / sum(w_i) of each batch (PyTorch's
`CrossEntropyLoss(weight=...)` and scikit-learn's MLP), so weights scale the samples against
each other, not the learning rate; the epoch's loss is the weighted mean over all samples.
`class_weight` gives every sample of class c the weight `class_weight[c]` (1 for classes it
does not name), multiplied with `sample_weight` when both are given; "balanced" is
scikit-learn's n_samples / (n_classes * count(c)).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from . import losses
from .preconditions import to_host


def check_sample_weight(sample_weight: Any, n: int, name: str = "sample_weight") -> np.ndarray:
    """`sample_weight` as a float64 vector of n finite, non-negative weights, not all 0."""
    w = to_host(sample_weight, name)
    if w.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be numbers, got dtype {w.dtype}")
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    if w.ndim != 1 or w.shape[0] != n:
        raise ValueError(
            f"{name} must hold one weight per sample, shape ({n},); got shape {tuple(w.shape)}"
        )
    w = w.astype(np.float64)
    if not np.isfinite(w).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if n and w.min() < 0:
        raise ValueError(f"{name} must be non-negative, got a minimum of {w.min():g}")
    if n and not w.any():
        raise ValueError(f"{name} is zero for every sample: at least one weight must be > 0")
    return w


def _class_of_each_sample(target: np.ndarray, loss: losses.Loss) -> np.ndarray:
    if target.ndim == 1:
        return target.astype(np.int64)
    if loss.name == "bce":
        if target.shape[1] != 1:
            raise ValueError(
                "class_weight needs one class per sample; a multi-label bce target has "
                f"{target.shape[1]} labels per sample: pass sample_weight= instead"
            )
        return (target[:, 0] > 0.5).astype(np.int64)
    return target.argmax(axis=1).astype(np.int64)


def class_weights(class_weight: Any, target: np.ndarray, loss: losses.Loss,
                  n_outputs: int) -> np.ndarray:
    """One weight per sample from `class_weight` ({class index: weight} or "balanced") and
    the prepared target of a classification loss."""
    if not loss.classification:
        raise ValueError(
            f"class_weight needs a classification loss (cross_entropy, bce, nll); loss "
            f"{loss.name!r} is a regression loss: pass sample_weight= instead"
        )
    classes = _class_of_each_sample(target, loss)
    n_classes = max(n_outputs, 2)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(f"class_weight must be a dict or 'balanced', got {class_weight!r}")
        counts = np.bincount(classes, minlength=n_classes).astype(np.float64)
        present = counts > 0
        table = np.ones(n_classes)
        table[present] = classes.size / (present.sum() * counts[present])
        return table[classes]
    if not isinstance(class_weight, Mapping):
        raise TypeError(
            "class_weight must be a dict {class index: weight}, e.g. {0: 1.0, 1: 5.0}, or "
            f"'balanced'; got {type(class_weight).__name__}"
        )
    table = np.ones(n_classes)
    for key, value in class_weight.items():
        if isinstance(key, bool) or not isinstance(key, (int, np.integer)) \
                or not 0 <= key < n_classes:
            raise ValueError(
                f"class_weight keys must be class indices 0..{n_classes - 1} (encode string "
                f"labels first, e.g. with LabelEncoder); got key {key!r}"
            )
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"class_weight[{key}] must be a number, got {value!r}") from None
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"class_weight[{key}] must be finite and >= 0, got {value!r}")
        table[int(key)] = v
    return table[classes]


def combined(sample_weight: Any, class_weight: Any, target: np.ndarray, loss: losses.Loss,
             n_outputs: int, what: str = "sample_weight") -> np.ndarray | None:
    """The per-sample weights of a fit (None without any), checked."""
    n = target.shape[0]
    w = None if sample_weight is None else check_sample_weight(sample_weight, n, what)
    if class_weight is not None:
        cw = class_weights(class_weight, target, loss, n_outputs)
        w = cw if w is None else w * cw
        if n and not w.any():
            raise ValueError("class_weight and sample_weight give every sample weight 0")
    return w
