"""Data helpers: one-hot encoding, standardisation, a seeded split and a mini-batch iterator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .validation import check_features, check_fraction, check_positive_int, check_same_length


def one_hot(labels: Any, num_classes: int | None = None, dtype: Any = np.float32) -> np.ndarray:
    """Integer labels (n,) -> (n, num_classes) rows with a single 1."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"one_hot needs 1-D integer labels, got shape {y.shape}")
    if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
        raise ValueError("one_hot needs integer labels; got non-integer values")
    if y.dtype.kind not in "biuf":
        raise TypeError(f"one_hot needs integer labels, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError(f"one_hot labels must be >= 0, got {y.min()}")
    n = (int(y.max()) + 1 if y.size else 0) if num_classes is None else int(num_classes)
    if y.size and y.max() >= n:
        raise ValueError(f"label {y.max()} does not fit num_classes={n}")
    out = np.zeros((y.size, n), dtype=dtype)
    out[np.arange(y.size), y] = 1
    return out


class Standardizer:
    """X' = (X - mean) / std per feature, fitted on training data and applied to any data.

    Constant features (std = 0) are centred and left unscaled instead of dividing by zero.
    """

    def __init__(self) -> None:
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None

    def fit(self, X: Any) -> Standardizer:
        X = np.asarray(check_features(X, None), dtype=np.float64)
        self.mean_ = X.mean(axis=0)
        std = X.std(axis=0)
        self.scale_ = np.where(std > 0, std, 1.0)
        return self

    def transform(self, X: Any) -> np.ndarray:
        if self.mean_ is None:
            raise RuntimeError("Standardizer is not fitted; call fit(X_train) first")
        Xa = check_features(
            X, self.mean_.size, expected_by="the Standardizer was fitted on data with"
        )
        out_dtype = Xa.dtype if Xa.dtype.kind == "f" else np.float64
        return ((Xa - self.mean_) / self.scale_).astype(out_dtype)

    def fit_transform(self, X: Any) -> np.ndarray:
        return self.fit(X).transform(X)

    def inverse_transform(self, X: Any) -> np.ndarray:
        if self.mean_ is None:
            raise RuntimeError("Standardizer is not fitted; call fit(X_train) first")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.mean_.size:  # else a bare broadcasting error
            raise ValueError(
                f"inverse_transform needs shape (n_samples, {self.mean_.size}) like the data "
                f"the Standardizer was fitted on, got {X.shape}"
            )
        return X * self.scale_ + self.mean_


def train_test_split(
    X: Any,
    y: Any,
    test_size: float = 0.25,
    seed: int | None = 0,
    stratify: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded shuffle-and-split: returns X_train, X_test, y_train, y_test.

    With `stratify=True` each class of `y` is split in the same proportion; for 2-D targets
    (one-hot rows) a class is a distinct row. `seed=None` draws a fresh split each call.
    """
    X, y = np.asarray(X), np.asarray(y)
    check_same_length(X, y)
    check_fraction(test_size, "test_size")
    n = len(X)
    rng = np.random.default_rng(seed)
    if stratify:
        if y.ndim == 1:
            classes = y
        elif y.ndim == 2:  # one-hot or (n, 1) column: identical rows form a class
            classes = np.unique(y, axis=0, return_inverse=True)[1].reshape(-1)
        else:
            raise ValueError(f"stratify needs 1-D labels or 2-D one-hot rows, got y of shape "
                             f"{y.shape}")
        test_idx = []
        for cls in np.unique(classes):
            members = rng.permutation(np.flatnonzero(classes == cls))
            test_idx.append(members[: int(round(test_size * members.size))])
        test = np.sort(np.concatenate(test_idx))
        mask = np.ones(n, bool)
        mask[test] = False
        train = rng.permutation(np.flatnonzero(mask))
        test = rng.permutation(test)
    else:
        perm = rng.permutation(n)
        n_test = int(round(test_size * n))
        test, train = perm[:n_test], perm[n_test:]
    if len(test) == 0 or len(train) == 0:
        raise ValueError(f"test_size={test_size} leaves an empty split for {n} samples")
    return X[train], X[test], y[train], y[test]


def minibatches(
    X: Any,
    y: Any = None,
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int | None = 0,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Yield (X_batch, y_batch) pairs covering the data once, shuffled by a seeded generator."""
    X = np.asarray(X)
    if y is not None:
        y = np.asarray(y)
        check_same_length(X, y)
    check_positive_int(batch_size, "batch_size")
    n = len(X)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield X[idx], (None if y is None else y[idx])
