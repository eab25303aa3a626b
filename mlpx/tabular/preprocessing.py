"""`Preprocessing`: how a training table's columns become network inputs and targets, learnt
once from the training file and applied unchanged to every later file.

Numeric columns are standardised; text columns are one-hot encoded (a value the training
rows did not hold encodes as all zeros, with a warning, as scikit-learn's
`OneHotEncoder(handle_unknown="ignore")`; with `max_categories` the rarest values share one
"other" input, as its `max_categories`). Missing cells are refused, dropped, or filled with
the training rows' mean, median or most frequent value (scikit-learn's `SimpleImputer`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .columns import (
    Table,
    TabularError,
    as_kind,
    check_finite,
    did_you_mean,
    missing_mask,
    missing_report,
    names_text,
    require_column,
    rows_text,
)

#: a numeric target with at most this many distinct integer values is taken as class labels
MAX_INTEGER_CLASSES = 20
#: a text feature with more distinct values than this is refused unless max_categories is set
MAX_CATEGORIES = 200
#: ... and one with more than this, mostly unique, is taken for an identifier
MAX_IDENTIFIER_VALUES = 100
#: one-hot inputs of all text columns together, at most
MAX_ONE_HOT_INPUTS = 2000
IMPUTE = ("mean", "median", "most_frequent")
MISSING = (*IMPUTE, "drop")
TASKS = ("classification", "regression")


class TabularWarning(UserWarning):
    """Data that is used, but perhaps not as meant; the message says what to check."""


class UnseenCategoryWarning(TabularWarning):
    """A text column holds values the model was not trained on (encoded as all zeros)."""


@dataclass
class Feature:
    """One input column: its kind, one-hot categories, and the value that fills its missing
    cells (None: missing cells are refused)."""

    name: str
    kind: str  # "numeric" or "categorical"
    categories: list[str] = field(default_factory=list)
    other: bool = False  # one more input for the values outside `categories`
    fill: float | str | None = None

    @property
    def width(self) -> int:
        return 1 if self.kind == "numeric" else len(self.categories) + self.other


@dataclass
class Preprocessing:
    """How file columns become network inputs and targets (and outputs become predictions)."""

    target: str
    task: str  # "classification" or "regression"
    features: list[Feature]
    mean: list[float]
    scale: list[float]
    classes: list[Any] = field(default_factory=list)
    target_mean: float = 0.0
    target_scale: float = 1.0
    array_file: bool = False
    missing: str | None = None  # the --missing strategy the model was trained with
    na_values: list[str] = field(default_factory=list)  # more cells read as missing

    @property
    def n_inputs(self) -> int:
        return sum(f.width for f in self.features)

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.task == "classification" else 1

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def kinds(self) -> dict[str, str]:
        """The schema a new file is read with: every feature's kind, and text class labels
        as text (a file whose labels are all numbers, e.g. "1" and "2", keeps them as text);
        a numeric target is read as it comes: it is optional, used only for the score."""
        kinds = {f.name: f.kind for f in self.features}
        if self.task == "classification" and all(isinstance(c, str) for c in self.classes):
            kinds[self.target] = "categorical"
        return kinds

    # ---- fitting
    @classmethod
    def fit(cls, table: Table, target: str, task: str = "auto", drop: list[str] | None = None,
            array_file: bool = False, missing: str | None = None,
            max_categories: int | None = None,
            na_values: list[str] | None = None) -> Preprocessing:
        """Learn the columns, kinds, categories and classes from a training table (every
        check happens here); `fit_statistics` then learns fills and scales from its
        training rows."""
        target = resolve_target(table, target, array_file)
        drop = list(drop or ())
        for name in drop:
            require_column(table, name, "--drop")
        if missing is not None and missing not in MISSING:
            raise TabularError(f"--missing must be one of {', '.join(MISSING)}, got {missing!r}")
        names = [n for n in table if n != target and n not in drop]
        if not names:
            raise TabularError(f"no feature columns left besides the target {target!r}")
        gaps = missing_report(table, [*names, target])
        if gaps and missing is None:
            raise TabularError(f"missing values in {gaps}; fill them with --missing "
                               "mean|median|most_frequent, or drop those rows with --missing "
                               "drop")
        if missing_mask(table[target]).any():
            raise TabularError(f"target column {target!r} has missing values "
                               f"({rows_text(np.flatnonzero(missing_mask(table[target])))}); "
                               "rows without a target cannot be trained on: remove them")
        for name in [*names, target]:
            check_finite(table[name], name, "target" if name == target else "feature")
        y = table[target]
        if task == "auto":
            task = infer_task(y)
        features = [_feature(table[name], name, max_categories) for name in names]
        _check_one_hot_width(features)
        pre = cls(target=target, task=task, features=features, mean=[], scale=[],
                  array_file=array_file, missing=missing, na_values=list(na_values or []))
        if task == "classification":
            pre.classes = _levels(y)
            if len(pre.classes) < 2:
                raise TabularError(
                    f"target {target!r} has a single class ({pre.classes[0]!r}): "
                    "classification needs at least two; check the file or the --target column")
        elif y.dtype == object:
            raise TabularError(f"target {target!r} holds text; regression needs numbers "
                               "(use --task classification for labels)")
        return pre.fit_statistics(table, np.arange(len(y)))

    def fit_statistics(self, table: Table, rows: np.ndarray) -> Preprocessing:
        """Fill values and standardisation statistics of the given (training) rows, for the
        features and a regression target (population std; constant columns unscaled)."""
        sub = {f.name: table[f.name][rows] for f in self.features}
        for f in self.features:
            f.fill = _fill_value(sub[f.name], f, self.missing) \
                if self.missing in IMPUTE else None
        self.mean, self.scale = [], []
        for f in self.features:  # from counts for one-hot inputs: no dense block
            if f.kind == "numeric":
                values = self._numeric(f, sub[f.name])
                mean, var = np.array([values.mean()]), np.array([values.var()])
            else:
                slots = self._slots(f, sub[f.name], warn=False)
                mean = np.bincount(slots[slots >= 0], minlength=f.width) / max(len(slots), 1)
                var = mean * (1 - mean)
            std = np.sqrt(var)
            self.mean += mean.tolist()
            self.scale += np.where(std > 0, std, 1.0).tolist()
        if self.task == "regression":
            y = table[self.target][rows].astype(np.float64)
            std = float(y.std())
            self.target_mean, self.target_scale = float(y.mean()), std if std > 0 else 1.0
        return self

    # ---- applying
    def features_of(self, table: Table) -> np.ndarray:
        """Standardised float32 inputs (n, n_inputs) of a table with the training columns."""
        if self.array_file:
            table = self._align_array_columns(table)
        absent = [f.name for f in self.features if f.name not in table]
        if absent:
            # a column that is itself a feature is no near miss ('sepal_length' for
            # 'petal_length'): only the columns no feature takes are suggested
            taken = set(self.feature_names)
            spare = [c for c in table if c not in taken]
            hints = "".join(did_you_mean(name, spare, name_it=True) for name in absent)
            raise TabularError(f"feature column{'s' if len(absent) > 1 else ''} "
                               f"{names_text(repr(n) for n in absent)} "
                               f"{'are' if len(absent) > 1 else 'is'} missing from the data"
                               f"{hints} (the model was trained on "
                               f"{names_text(self.feature_names)}; the data has "
                               f"{names_text(table)})")
        # the training kinds, whatever the table holds (tables not read with the schema)
        table = {f.name: as_kind(table[f.name], f.kind, f.name) for f in self.features}
        unfilled = [f.name for f in self.features if f.fill is None]
        gaps = missing_report(table, unfilled)
        if gaps:
            how = ("the model was trained with --missing drop" if self.missing == "drop" else
                   "the model was trained without --missing")
            raise TabularError(f"missing values in {gaps}; {how}: fill those cells or remove "
                               "the rows (or train with --missing mean|median|most_frequent)")
        n = len(table[self.features[0].name])
        X = np.empty((n, self.n_inputs), dtype=np.float32)
        start = 0
        for f in self.features:
            check_finite(table[f.name], f.name, "feature")
            stop = start + f.width
            mean = np.asarray(self.mean[start:stop])
            scale = np.asarray(self.scale[start:stop])
            if f.kind == "numeric":
                X[:, start] = (self._numeric(f, table[f.name]) - mean[0]) / scale[0]
            else:  # every input at its "0" value, then the one hot input of each row
                slots = self._slots(f, table[f.name], warn=True)
                X[:, start:stop] = -mean / scale
                rows = np.flatnonzero(slots >= 0)
                X[rows, start + slots[rows]] = ((1 - mean) / scale)[slots[rows]]
            start = stop
        return X

    def encode(self, table: Table) -> np.ndarray:
        """Numeric columns as they are, text columns one-hot (unscaled, float64)."""
        return np.concatenate([self._encoded(f, table[f.name], warn=False)
                               for f in self.features], axis=1)

    def _encoded(self, f: Feature, col: np.ndarray, warn: bool) -> np.ndarray:
        if f.kind == "numeric":
            return self._numeric(f, col).reshape(-1, 1)
        slots = self._slots(f, col, warn)
        block = np.zeros((len(col), f.width), dtype=np.float64)
        known = np.flatnonzero(slots >= 0)
        block[known, slots[known]] = 1.0
        return block

    @staticmethod
    def _numeric(f: Feature, col: np.ndarray) -> np.ndarray:
        values = col.astype(np.float64)
        if f.fill is not None:
            values = np.where(np.isnan(values), float(f.fill), values)
        return values

    @staticmethod
    def _slots(f: Feature, col: np.ndarray, warn: bool) -> np.ndarray:
        """Each row's one-hot input within the feature; -1 for a value never seen (with an
        "other" input, such values take it)."""
        keys = col if f.fill is None else \
            np.where(missing_mask(col), f.fill, col).astype(object)
        uniques, codes = np.unique(keys.astype(str), return_inverse=True)
        index = {c: i for i, c in enumerate(f.categories)}
        # true/false written in another case ("True" in a CSV, a boolean in a DataFrame)
        index.update({u: index[c] for u in uniques.tolist() if u not in index
                      and u.lower() in ("true", "false")
                      for c in f.categories if c.lower() == u.lower()})
        other = len(f.categories) if f.other else -1
        slots = np.array([index.get(u, other) for u in uniques.tolist()], dtype=np.int64)
        if warn and not f.other and (slots < 0).any():
            unseen = [u for u, s in zip(uniques.tolist(), slots, strict=True) if s < 0]
            rows = np.flatnonzero(slots[codes] < 0)
            warnings.warn(
                f"column {f.name!r} holds {len(unseen)} value(s) the model was not trained on "
                f"({', '.join(repr(u) for u in unseen[:3])}{', ...' if len(unseen) > 3 else ''}"
                f"; {rows_text(rows)}): encoded as all zeros", UnseenCategoryWarning,
                stacklevel=4)
        return slots[codes.reshape(-1)]

    def targets_of(self, table: Table) -> np.ndarray:
        """Integer class indices (classification) or standardised float32 values."""
        y = table[self.target]
        gaps = missing_report(table, [self.target])
        if gaps:
            raise TabularError(f"target column has missing values: {gaps}")
        if self.task == "classification":
            index = {_key(c): i for i, c in enumerate(self.classes)}
            keys = [_key(v) for v in y.tolist()]
            unknown = [k for k in keys if k not in index]
            if unknown:
                raise TabularError(f"target {self.target!r} holds {unknown[0]!r}, a class the "
                                   f"model was not trained on ({names_text(self.classes)})")
            return np.array([index[k] for k in keys], dtype=np.int64)
        if y.dtype == object:
            raise TabularError(f"target {self.target!r} holds text; the model predicts numbers")
        return ((y - self.target_mean) / self.target_scale).astype(np.float32)

    def values_of(self, outputs: np.ndarray) -> np.ndarray:
        """Regression outputs back in the target's units."""
        return np.asarray(outputs, dtype=np.float64).reshape(-1) * self.target_scale \
            + self.target_mean

    def _align_array_columns(self, table: Table) -> Table:
        """An array file without its target column: its columns are the features in order."""
        names = self.feature_names
        if len(table) == len(names) and list(table) != names:
            return dict(zip(names, table.values(), strict=True))
        return table


def drop_missing_rows(table: Table, names: list[str]) -> tuple[Table, int]:
    """The table without its rows that miss a value in one of `names`; the count dropped."""
    bad = np.zeros(len(next(iter(table.values()))), dtype=bool)
    for name in names:
        bad |= missing_mask(table[name])
    if not bad.any():
        return table, 0
    keep = ~bad
    return {k: v[keep] for k, v in table.items()}, int(bad.sum())


def _feature(col: np.ndarray, name: str, max_categories: int | None) -> Feature:
    if col.dtype != object:
        return Feature(name, "numeric")
    present = col[~missing_mask(col)]
    values, counts = np.unique(present.astype(str), return_counts=True)
    n = len(values)
    _warn_if_mostly_numbers(name, values, counts)
    if max_categories is None:
        if n > MAX_IDENTIFIER_VALUES and n > len(present) // 2:
            raise TabularError(
                f"feature column {name!r} is text with {n} distinct values in {len(present)} "
                "rows (an identifier or free text?); one-hot encoding would add an input per "
                f"value: leave it out with --drop {name}")
        if n > MAX_CATEGORIES:
            raise TabularError(
                f"feature column {name!r} is text with {n} distinct values: one-hot encoding "
                f"would add {n} inputs (at most {MAX_CATEGORIES} per column); leave it out with "
                f"--drop {name}, or keep its most frequent values with --max-categories "
                f"{min(50, MAX_CATEGORIES)} (the rest share one input)")
    elif n > max_categories:
        order = sorted(range(n), key=lambda i: (-counts[i], values[i]))
        kept = sorted(values[i] for i in order[:max_categories - 1])
        return Feature(name, "categorical", [str(v) for v in kept], other=True)
    return Feature(name, "categorical", [str(v) for v in values])


def _warn_if_mostly_numbers(name: str, values: np.ndarray, counts: np.ndarray) -> None:
    """A column of numbers with a few cells such as "?" is text, one-hot encoded: say so."""
    words = [i for i, v in enumerate(values.tolist()) if not _is_number(v)]
    if len(words) > 3 or counts[words].sum() * 5 > counts.sum():  # at most 1 cell in 5
        return
    shown = ", ".join(repr(str(values[i])) for i in words)
    warnings.warn(
        f"column {name!r} holds numbers and {int(counts[words].sum())} cells that are not "
        f"({shown}): it is read as text and one-hot encoded; if these cells mark missing "
        f"values, give --na-values {','.join(str(values[i]) for i in words)} (and --missing)",
        TabularWarning, stacklevel=4)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _check_one_hot_width(features: list[Feature]) -> None:
    text = sorted((f for f in features if f.kind == "categorical"), key=lambda f: -f.width)
    total = sum(f.width for f in text)
    if total > MAX_ONE_HOT_INPUTS:
        widest = ", ".join(f"{f.name!r} ({f.width})" for f in text[:5])
        raise TabularError(
            f"the text columns would one-hot encode to {total} inputs (at most "
            f"{MAX_ONE_HOT_INPUTS}); the widest: {widest}; leave some out with --drop, or "
            "limit each to its most frequent values with --max-categories N")


def _fill_value(col: np.ndarray, f: Feature, strategy: str) -> float | str:
    present = col[~missing_mask(col)]
    if len(present) == 0:
        raise TabularError(f"feature column {f.name!r} has no values in the training rows: "
                           f"nothing to fill it with; leave it out with --drop {f.name}")
    if f.kind == "numeric" and strategy == "mean":
        return float(present.mean())
    if f.kind == "numeric" and strategy == "median":
        return float(np.median(present))
    # most_frequent, and text columns under every strategy (the smallest value on a tie)
    values, counts = np.unique(present.astype(str) if f.kind != "numeric" else present,
                               return_counts=True)
    best = values[np.argmax(counts)]
    return str(best) if f.kind != "numeric" else float(best)


def resolve_target(table: Table, target: str, array_file: bool = False) -> str:
    """The target's column name; in array files an index such as -1 (the last column)."""
    if target not in table and array_file:
        try:
            i = int(target)
        except ValueError:
            i = None
        if i is not None and -len(table) <= i < len(table):
            return list(table)[i]
    require_column(table, target, "--target")
    return target


def infer_task(y: np.ndarray) -> str:
    """Text and booleans, or few integer levels: classification; other numbers: regression."""
    if y.dtype == object:
        return "classification"
    present = y[~np.isnan(y)]
    if np.all(present == np.round(present)) and len(np.unique(present)) <= MAX_INTEGER_CLASSES:
        return "classification"
    return "regression"


def describe_task(y: np.ndarray, task: str) -> str:
    if y.dtype == object:
        return f"{len(set(y.tolist()))} text labels"
    levels = len(np.unique(y[~np.isnan(y)]))
    if task == "classification":
        return f"{levels} integer levels"
    return f"numbers with {levels} distinct values"


def _levels(y: np.ndarray) -> list[Any]:
    if y.dtype == object:
        return sorted(set(y.tolist()))
    return [int(v) if v == round(v) else float(v) for v in np.unique(y)]


def _key(v: Any) -> Any:
    """A label as the class list spells it (5.0 in a CSV column is the class 5)."""
    if isinstance(v, float) and not math.isnan(v) and v == round(v):
        return int(v)
    return v
