"""Data helpers: one-hot encoding, standardisation, a train/test split (scikit-learn's
signature and results) and a mini-batch iterator."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from .preconditions import (
    check_features,
    check_positive_int,
    check_same_length,
    is_device_array,
    to_host,
)


def one_hot(labels: Any, num_classes: int | None = None, dtype: Any = np.float32) -> np.ndarray:
    """Integer labels (n,) -> (n, num_classes) rows with a single 1."""
    y = to_host(labels, "labels")
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

    The same statistics as scikit-learn's `StandardScaler` (population std; constant
    features, std = 0, are centred and left unscaled instead of divided by zero). A 1-D
    array (a regression target) is standardised as one feature and stays 1-D, so
    `Standardizer().fit(y_train)` scales targets as well as feature matrices.
    """

    def __init__(self) -> None:
        self.mean_: np.ndarray | None = None
        self.scale_: np.ndarray | None = None
        self.var_: np.ndarray | None = None
        self.n_features_in_: int | None = None

    def fit(self, X: Any) -> Standardizer:
        X = np.asarray(check_features(_as_column(X), None), dtype=np.float64)
        self.mean_ = X.mean(axis=0)
        self.var_ = X.var(axis=0)
        std = np.sqrt(self.var_)
        self.scale_ = np.where(std > 0, std, 1.0)
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X: Any) -> np.ndarray:
        self._require_fitted()
        vector = np.ndim(X) == 1
        Xa = check_features(
            _as_column(X) if vector and self.mean_.size == 1 else X, self.mean_.size,
            expected_by="the Standardizer was fitted on data with",
        )
        out_dtype = Xa.dtype if Xa.dtype.kind == "f" else np.float64
        out = ((Xa - self.mean_) / self.scale_).astype(out_dtype)
        return out.reshape(-1) if vector else out

    def fit_transform(self, X: Any) -> np.ndarray:
        return self.fit(X).transform(X)

    def inverse_transform(self, X: Any) -> np.ndarray:
        self._require_fitted()
        X = to_host(X, "X")
        vector = X.ndim == 1 and self.mean_.size == 1
        if vector:
            X = X.reshape(-1, 1)
        if X.ndim != 2 or X.shape[1] != self.mean_.size:  # else a bare broadcasting error
            raise ValueError(
                f"inverse_transform needs shape (n_samples, {self.mean_.size}) like the data "
                f"the Standardizer was fitted on, got {X.shape}"
            )
        out = X * self.scale_ + self.mean_
        return out.reshape(-1) if vector else out

    def _require_fitted(self) -> None:
        if self.mean_ is None:
            raise RuntimeError("Standardizer is not fitted; call fit(X_train) first")


def _as_column(X: Any) -> Any:
    """A 1-D array as one feature column (n, 1); anything else unchanged."""
    if np.ndim(X) != 1:
        return X
    return X.reshape(-1, 1) if is_device_array(X) else np.asarray(X).reshape(-1, 1)


_UNSET: Any = object()


def train_test_split(
    *arrays: Any,
    test_size: float | int | None = None,
    train_size: float | int | None = None,
    random_state: int | np.random.RandomState | None = None,
    shuffle: bool = True,
    stratify: Any = None,
    seed: Any = _UNSET,
) -> list[Any]:
    """Split arrays into random train and test subsets, as scikit-learn's `train_test_split`.

    Same arguments and, for the same `random_state`, the same split as
    `sklearn.model_selection.train_test_split`: returns `[a_train, a_test]` for each array
    given (`X_train, X_test, y_train, y_test = train_test_split(X, y, ...)`).

    - `test_size` / `train_size`: a fraction in (0, 1) or a number of samples; with neither,
      the test set is 25 %. A fractional test size is rounded up, a train size down.
    - `random_state`: None (NumPy's global generator: a new split each call), an int (a
      repeatable split) or a `numpy.random.RandomState`.
    - `shuffle=False` takes the first samples for training and the next ones for testing.
    - `stratify`: class labels (or one-hot rows) to split in the same proportions, usually
      `stratify=y`.

    Pandas objects stay pandas objects (rows selected with `.iloc`), lists stay lists, other
    arrays are indexed as they are. `seed=` is a deprecated alias of `random_state`.
    """
    if seed is not _UNSET:
        if random_state is not None:
            raise TypeError("give random_state= or its deprecated alias seed=, not both")
        warnings.warn(
            "train_test_split(seed=...) is deprecated; use random_state=... (the "
            "scikit-learn name)", DeprecationWarning, stacklevel=2,
        )
        random_state = seed
    if not arrays:
        raise ValueError("train_test_split needs at least one array, e.g. train_test_split(X, y)")
    lengths = [_num_samples(a, i) for i, a in enumerate(arrays)]
    if len(set(lengths)) > 1:
        raise ValueError(
            "the arrays have different numbers of samples: "
            f"{', '.join(map(str, lengths))}; every array needs one row per sample"
        )
    n = lengths[0]
    n_train, n_test = _split_sizes(n, test_size, train_size)
    if stratify is True:
        warnings.warn(
            "train_test_split(stratify=True) is deprecated; pass the labels themselves "
            "(stratify=y), as in scikit-learn", DeprecationWarning, stacklevel=2,
        )
        stratify = arrays[-1]
    elif stratify is False:
        stratify = None
    if not shuffle:
        if stratify is not None:
            raise ValueError(
                "stratify needs shuffle=True: a stratified split without shuffling is not "
                "defined; drop stratify= or set shuffle=True"
            )
        train, test = np.arange(n_train), np.arange(n_train, n_train + n_test)
    else:
        rng = _random_state(random_state)
        if stratify is None:
            perm = rng.permutation(n)
            test, train = perm[:n_test], perm[n_test : n_test + n_train]
        else:
            train, test = _stratified_indices(stratify, n, n_train, n_test, rng)
    out: list[Any] = []
    for a in arrays:
        out += [_take(a, train), _take(a, test)]
    return out


def _num_samples(a: Any, i: int) -> int:
    shape = getattr(a, "shape", None)
    if shape is not None:
        if len(shape) == 0:
            raise ValueError(f"array {i} of train_test_split is a scalar; pass one row per sample")
        return int(shape[0])
    try:
        return len(a)
    except TypeError:
        raise TypeError(
            f"array {i} of train_test_split has no length ({type(a).__name__}); pass arrays, "
            "lists or DataFrames"
        ) from None


def _split_sizes(n: int, test_size: Any, train_size: Any) -> tuple[int, int]:
    """Numbers of training and test samples, with scikit-learn's rounding and checks."""

    def kind(v: Any, name: str) -> str | None:
        if v is None:
            return None
        if isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{name} must be a fraction in (0, 1) or a number of samples, got {v}")
        if isinstance(v, (int, np.integer)):
            if not 0 < v < n:
                raise ValueError(
                    f"{name}={v} must be a number of samples between 1 and {n - 1} (of {n}) "
                    "or a fraction strictly between 0 and 1"
                )
            return "i"
        if isinstance(v, (float, np.floating)):
            if not (math.isfinite(v) and 0.0 < v < 1.0):
                raise ValueError(
                    f"{name}={v} must be a fraction strictly between 0 and 1 or a number of "
                    f"samples between 1 and {n - 1}"
                )
            return "f"
        raise TypeError(f"{name} must be a fraction in (0, 1) or a number of samples, got {v!r}")

    k_test, k_train = kind(test_size, "test_size"), kind(train_size, "train_size")
    if k_test is None and k_train is None:
        test_size, k_test = 0.25, "f"
    if k_test == "f" and k_train == "f" and test_size + train_size > 1:
        raise ValueError(
            f"test_size + train_size = {test_size + train_size:g} exceeds 1; reduce either"
        )
    n_test = None if k_test is None else (math.ceil(test_size * n) if k_test == "f"
                                          else int(test_size))
    n_train = None if k_train is None else (math.floor(train_size * n) if k_train == "f"
                                            else int(train_size))
    if n_train is None:
        n_train = n - n_test
    elif n_test is None:
        n_test = n - n_train
    if n_train + n_test > n:
        raise ValueError(
            f"train_size and test_size ask for {n_train + n_test} samples, but there are only "
            f"{n}; reduce either"
        )
    if n_train == 0 or n_test == 0:
        which = "train" if n_train == 0 else "test"
        raise ValueError(
            f"with {n} samples, test_size={test_size} and train_size={train_size} leave an "
            f"empty {which} split; give more samples or adjust the sizes"
        )
    return n_train, n_test


def _random_state(random_state: Any) -> np.random.RandomState:
    """scikit-learn's convention: None -> NumPy's global RandomState, int -> a new one."""
    if random_state is None:
        return np.random.mtrand._rand
    if isinstance(random_state, (bool, np.bool_)):
        raise TypeError(f"random_state must be None, an int or a RandomState, got {random_state}")
    if isinstance(random_state, (int, np.integer)):
        return np.random.RandomState(int(random_state))
    if isinstance(random_state, np.random.RandomState):
        return random_state
    raise TypeError(
        "random_state must be None, an int or a numpy.random.RandomState, got "
        f"{type(random_state).__name__}"
    )


def _stratified_indices(
    stratify: Any, n: int, n_train: int, n_test: int, rng: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray]:
    """Per-class split in proportion to the class sizes (scikit-learn's
    StratifiedShuffleSplit, so the same random_state gives the same split)."""
    labels = np.asarray(stratify.to_numpy() if hasattr(stratify, "to_numpy") else stratify)
    if labels.ndim == 2:  # one-hot or multi-output rows: each distinct row is a class
        labels = np.array([" ".join(row.astype(str)) for row in labels])
    elif labels.ndim != 1:
        raise ValueError(
            f"stratify needs 1-D class labels or 2-D one-hot rows, got shape {labels.shape}"
        )
    if len(labels) != n:
        raise ValueError(f"stratify has {len(labels)} labels for {n} samples")
    classes, codes = np.unique(labels, return_inverse=True)
    counts = np.bincount(codes.reshape(-1))
    if counts.min() < 2:
        raise ValueError(
            f"class {classes[counts.argmin()]!r} has only 1 member; stratify needs at least 2 "
            "per class (drop or merge rare classes, or split without stratify)"
        )
    for size, name in ((n_train, "train"), (n_test, "test")):
        if size < len(classes):
            raise ValueError(
                f"the {name} split has {size} samples, fewer than the {len(classes)} classes; "
                "a stratified split needs at least one sample of each class on each side"
            )
    members = np.split(np.argsort(codes.reshape(-1), kind="mergesort"), np.cumsum(counts)[:-1])
    take_train = _apportion(counts, n_train, rng)
    take_test = _apportion(counts - take_train, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for idx, k_train, k_test in zip(members, take_train, take_test, strict=True):
        shuffled = idx[rng.permutation(len(idx))]
        train.extend(shuffled[:k_train])
        test.extend(shuffled[k_train : k_train + k_test])
    return rng.permutation(train), rng.permutation(test)


def _apportion(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Integer draws per class closest to proportional: floors first, then the remaining
    draws go to the largest remainders, ties broken at random."""
    exact = counts / counts.sum() * draws
    out = np.floor(exact)
    missing = int(draws - out.sum())
    remainder = exact - out
    for value in np.sort(np.unique(remainder))[::-1]:
        if missing <= 0:
            break
        (tied,) = np.where(remainder == value)
        k = min(len(tied), missing)
        out[rng.choice(tied, size=k, replace=False)] += 1
        missing -= k
    return out.astype(int)


def _take(a: Any, idx: np.ndarray) -> Any:
    """Rows `idx` of `a`, keeping its type (DataFrame/Series, list, NumPy/CuPy array)."""
    if hasattr(a, "iloc"):
        return a.iloc[idx]
    if isinstance(a, (list, tuple)):
        return [a[i] for i in idx]
    if hasattr(a, "shape") and hasattr(a, "__getitem__"):
        return a[idx]
    return np.asarray(a)[idx]


def minibatches(
    X: Any,
    y: Any = None,
    batch_size: int = 32,
    shuffle: bool = True,
    seed: int | None = 0,
    drop_last: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Yield (X_batch, y_batch) pairs covering the data once, shuffled by a seeded generator."""
    X = to_host(X, "X")
    if y is not None:
        y = to_host(y, "y")
        check_same_length(X, y)
    check_positive_int(batch_size, "batch_size")
    n = len(X)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield X[idx], (None if y is None else y[idx])


__all__ = ["one_hot", "Standardizer", "train_test_split", "minibatches"]
