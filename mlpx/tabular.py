"""Tabular files for `mlpx train` and `mlpx predict`: read CSV, Parquet, `.npy` and `.npz`
files into named columns, and turn columns into a network's inputs and targets.

A table is a dict of equal-length 1-D arrays, in file order: numeric columns as float64
(missing cells are NaN), text and boolean columns as object arrays of strings (missing
cells are None). `.npy` files hold a 2-D array whose columns are named by their index
("0", "1", ...); `.npz` files hold either one 1-D array per column (the keys name the
columns) or a 2-D feature array next to 1-D arrays (the target, e.g. `y`).

`Preprocessing` is everything `mlpx predict` needs to read a new file the way the training
file was read: feature columns and their kinds, one-hot categories, standardisation
statistics, the task, class names or the target's scale. It is saved as JSON (no pickle).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "mlpx-tabular"
FORMAT_VERSION = 1
#: a numeric target with at most this many distinct integer values is taken as class labels
MAX_INTEGER_CLASSES = 20
#: a text feature with more distinct values than this (and mostly unique) is refused
MAX_CATEGORIES = 100
MISSING_TEXT = frozenset({"", "na", "n/a", "nan", "null", "none"})
SUFFIXES = (".csv", ".parquet", ".pq", ".npy", ".npz")


class TabularError(ValueError):
    """A data file or column that cannot be used; the message says what to change."""


Table = dict[str, np.ndarray]


# ------------------------------------------------------------------------------- reading
def read_table(path: str | os.PathLike) -> Table:
    """The columns of a CSV, Parquet, .npy or .npz file (see the module docstring)."""
    p = Path(path)
    if not p.exists():
        raise TabularError(f"{str(p)!r} does not exist")
    if p.is_dir():
        raise TabularError(f"{str(p)!r} is a directory, not a data file")
    suffix = p.suffix.lower()
    readers = {".csv": _read_csv, ".parquet": _read_parquet, ".pq": _read_parquet,
               ".npy": _read_npy, ".npz": _read_npz}
    if suffix not in readers:
        raise TabularError(f"cannot read {str(p)!r}: the file name must end in "
                           f"{', '.join(SUFFIXES)}")
    try:
        table = readers[suffix](p)
    except TabularError:
        raise
    except (OSError, ValueError, UnicodeDecodeError, csv.Error) as e:
        raise TabularError(f"cannot read {str(p)!r} as {suffix[1:]}: "
                           f"{' '.join(str(e).split())}") from None
    if not table:
        raise TabularError(f"{str(p)!r} has no columns")
    if len(next(iter(table.values()))) == 0:
        raise TabularError(f"{str(p)!r} has no data rows")
    return table


def _read_csv(p: Path) -> Table:
    with open(p, newline="", encoding="utf-8-sig") as f:
        first = f.readline()
        f.seek(0)
        # the separator that splits the header most: comma, semicolon or tab
        delimiter = max(",;\t", key=first.count) if first.strip() else ","
        rows = [r for r in csv.reader(f, delimiter=delimiter) if any(c.strip() for c in r)]
    if not rows:
        raise TabularError(f"{str(p)!r} is empty")
    header = [h.strip() for h in rows[0]]
    body = rows[1:]
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise TabularError(f"{str(p)!r}: column name {dup[0]!r} appears more than once")
    if any(not h for h in header):
        raise TabularError(f"{str(p)!r}: column {header.index('') + 1} has no name in the "
                           "header row (the first line must name every column)")
    for i, row in enumerate(body):
        if len(row) != len(header):
            raise TabularError(f"{str(p)!r}: line {i + 2} has {len(row)} fields, the header "
                               f"has {len(header)}")
    return {h: _typed([row[j] for row in body]) for j, h in enumerate(header)}


def _typed(cells: list[str]) -> np.ndarray:
    """float64 when every present cell is a number, else strings (missing: None)."""
    values = [c.strip() for c in cells]
    missing = [v.lower() in MISSING_TEXT for v in values]
    try:
        return np.array([math.nan if m else float(v) for v, m in zip(values, missing, strict=True)],
                        dtype=np.float64)
    except ValueError:
        return np.array([None if m else v for v, m in zip(values, missing, strict=True)],
                        dtype=object)


def _read_parquet(p: Path) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        pq = None
    if pq is not None:
        frame = pq.read_table(p).to_pandas() if _has("pandas") else None
        if frame is None:
            data = pq.read_table(p).to_pydict()
            return {str(k): _column(np.array(v, dtype=object)) for k, v in data.items()}
    else:
        try:
            import pandas as pd

            frame = pd.read_parquet(p)  # pandas' own engine choice (fastparquet)
        except ImportError:
            raise TabularError('reading Parquet needs pyarrow: pip install pyarrow (or '
                               'pip install "mlpx[tabular]")') from None
    return {str(k): _column(frame[k].to_numpy(dtype=object)) for k in frame.columns}


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _column(values: np.ndarray) -> np.ndarray:
    """A 1-D array from a file as a table column: numbers as float64, else strings."""
    values = np.asarray(values)
    if values.dtype.kind in "iuf":
        return values.astype(np.float64)
    if values.dtype.kind == "b":
        return np.array([str(bool(v)).lower() for v in values], dtype=object)
    out = []
    numeric = True
    for v in values.tolist():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            out.append(None)
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            numeric = False
        out.append(str(v).lower() if isinstance(v, bool) else v)
    if numeric:
        return np.array([math.nan if v is None else float(v) for v in out], dtype=np.float64)
    return np.array([None if v is None else str(v) for v in out], dtype=object)


def _read_npy(p: Path) -> Table:
    a = np.load(p, allow_pickle=False)
    if a.ndim == 1:
        raise TabularError(f"{str(p)!r} holds a 1-D array; mlpx train needs a 2-D array "
                           "(rows x columns) with the target as one column")
    if a.ndim != 2:
        raise TabularError(f"{str(p)!r} holds an array of shape {a.shape}; expected a 2-D "
                           "array (rows x columns)")
    return {str(j): _column(a[:, j]) for j in range(a.shape[1])}


def _read_npz(p: Path) -> Table:
    with np.load(p, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if not arrays:
        raise TabularError(f"{str(p)!r} holds no arrays")
    lengths = {k: len(a) if a.ndim else -1 for k, a in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise TabularError(f"{str(p)!r}: arrays of different lengths "
                           f"({', '.join(f'{k}: {n}' for k, n in lengths.items())}); every "
                           "array must have one entry per row")
    table: Table = {}
    for k, a in arrays.items():
        if a.ndim == 1:
            table[k] = _column(a)
        elif a.ndim == 2:  # a feature matrix: one column per feature
            for j in range(a.shape[1]):
                table[f"{k}{j}"] = _column(a[:, j])
        else:
            raise TabularError(f"{str(p)!r}: array {k!r} has shape {a.shape}; expected 1-D "
                               "columns or a 2-D feature matrix")
    return table


# ----------------------------------------------------------------------- preprocessing
@dataclass
class Feature:
    name: str
    kind: str  # "numeric" or "categorical"
    categories: list[str] = field(default_factory=list)


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

    @property
    def n_inputs(self) -> int:
        return len(self.mean)

    @property
    def n_outputs(self) -> int:
        return len(self.classes) if self.task == "classification" else 1

    # ---- fitting
    @classmethod
    def fit(cls, table: Table, target: str, task: str = "auto", drop: list[str] | None = None,
            array_file: bool = False) -> Preprocessing:
        """Learn the encoding from a training table (every check happens here)."""
        target = resolve_target(table, target, array_file)
        for name in drop or ():
            _require_column(table, name, "--drop")
        y = table[target]
        if task == "auto":
            task = infer_task(y)
        features = []
        for name, col in table.items():
            if name == target or name in (drop or ()):
                continue
            _check_no_missing(col, name, "feature")
            if col.dtype == object:
                cats = sorted(set(col.tolist()))
                if len(cats) > MAX_CATEGORIES and len(cats) > len(col) // 2:
                    raise TabularError(
                        f"feature column {name!r} is text with {len(cats)} distinct values "
                        "(an identifier or free text?); mlpx one-hot encodes text columns "
                        f"with few values only: leave it out with --drop {name}")
                features.append(Feature(name, "categorical", cats))
            else:
                features.append(Feature(name, "numeric"))
        if not features:
            raise TabularError(f"no feature columns left besides the target {target!r}")
        pre = cls(target=target, task=task, features=features, mean=[], scale=[],
                  array_file=array_file)
        _check_no_missing(y, target, "target")
        if task == "classification":
            pre.classes = _levels(y)
            if len(pre.classes) < 2:
                raise TabularError(
                    f"target {target!r} has a single class ({pre.classes[0]!r}): "
                    "classification needs at least two; check the file or the --target column")
        else:
            if y.dtype == object:
                raise TabularError(f"target {target!r} holds text; regression needs numbers "
                                   "(use --task classification for labels)")
        return pre.fit_scaling(table, np.arange(len(y)))

    def fit_scaling(self, table: Table, rows: np.ndarray) -> Preprocessing:
        """Standardisation statistics of the given (training) rows, features and a
        regression target (the Standardizer's: population std, constant columns unscaled)."""
        from .data import Standardizer

        scaler = Standardizer().fit(self.encode(table)[rows])
        self.mean, self.scale = scaler.mean_.tolist(), scaler.scale_.tolist()
        if self.task == "regression":
            y = Standardizer().fit(table[self.target][rows].astype(np.float64))
            self.target_mean, self.target_scale = float(y.mean_[0]), float(y.scale_[0])
        return self

    # ---- applying
    def features_of(self, table: Table) -> np.ndarray:
        """Standardised float32 inputs (n, n_inputs) of a table with the training columns."""
        if self.array_file:
            table = self._align_array_columns(table)
        missing = [f.name for f in self.features if f.name not in table]
        if missing:
            trained = _names(f.name for f in self.features)
            raise TabularError(f"feature column {missing[0]!r} is missing from the data "
                               f"(the model was trained on {trained})")
        for f in self.features:
            _check_no_missing(table[f.name], f.name, "feature")
            if f.kind == "numeric" and table[f.name].dtype == object:
                bad = next(v for v in table[f.name] if not _is_number(v))
                raise TabularError(f"feature column {f.name!r} was numeric in training but "
                                   f"holds {bad!r} here")
        X = (self.encode(table) - np.asarray(self.mean)) / np.asarray(self.scale)
        return X.astype(np.float32)

    def targets_of(self, table: Table) -> np.ndarray:
        """Integer class indices (classification) or standardised float32 values."""
        y = table[self.target]
        _check_no_missing(y, self.target, "target")
        if self.task == "classification":
            index = {_key(c): i for i, c in enumerate(self.classes)}
            keys = [_key(v) for v in y.tolist()]
            unknown = [k for k in keys if k not in index]
            if unknown:
                raise TabularError(f"target {self.target!r} holds {unknown[0]!r}, a class the "
                                   f"model was not trained on ({_names(self.classes)})")
            return np.array([index[k] for k in keys], dtype=np.int64)
        return ((y.astype(np.float64) - self.target_mean) / self.target_scale).astype(np.float32)

    def values_of(self, outputs: np.ndarray) -> np.ndarray:
        """Regression outputs back in the target's units."""
        return np.asarray(outputs, dtype=np.float64).reshape(-1) * self.target_scale \
            + self.target_mean

    def encode(self, table: Table) -> np.ndarray:
        """Numeric columns as they are, text columns one-hot (unseen values: all zeros)."""
        cols = []
        for f in self.features:
            col = table[f.name]
            if f.kind == "numeric":
                cols.append(col.astype(np.float64).reshape(-1, 1))
            else:
                keys = np.array([str(v) for v in col.tolist()], dtype=object)
                cols.append(np.stack([keys == c for c in f.categories], axis=1)
                            .astype(np.float64))
        return np.concatenate(cols, axis=1)

    def _align_array_columns(self, table: Table) -> Table:
        """An array file without its target column: its columns are the features in order."""
        names = [f.name for f in self.features]
        if len(table) == len(names) and list(table) != names:
            return dict(zip(names, table.values(), strict=True))
        return table

    # ---- saving
    def to_json(self) -> str:
        doc = {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(self)}
        return json.dumps(doc, indent=1)

    @classmethod
    def from_json(cls, text: str, where: str = "preprocessing file") -> Preprocessing:
        try:
            doc = json.loads(text)
            if doc.get("format") != FORMAT:
                raise ValueError(f"not an {FORMAT} document")
            if doc.get("format_version") != FORMAT_VERSION:
                raise ValueError(f"format_version {doc.get('format_version')!r} is not "
                                 f"{FORMAT_VERSION}")
            doc = {k: v for k, v in doc.items() if k not in ("format", "format_version")}
            doc["features"] = [Feature(**f) for f in doc["features"]]
            pre = cls(**doc)
            if pre.task not in ("classification", "regression") or \
                    len(pre.mean) != len(pre.scale):
                raise ValueError("inconsistent entries")
            return pre
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise TabularError(f"{where} is not a valid mlpx preprocessing file: {e}") from None


def resolve_target(table: Table, target: str, array_file: bool = False) -> str:
    """The target's column name; in array files an index such as -1 (the last column)."""
    if target not in table and array_file:
        try:
            i = int(target)
        except ValueError:
            i = None
        if i is not None and -len(table) <= i < len(table):
            return list(table)[i]
    _require_column(table, target, "--target")
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
    if isinstance(v, float) and v == round(v):
        return int(v)
    return v


def _is_number(v: Any) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _check_no_missing(col: np.ndarray, name: str, what: str) -> None:
    bad = np.array([v is None for v in col]) if col.dtype == object else ~np.isfinite(col)
    if bad.any():
        rows = np.flatnonzero(bad)
        first = ", ".join(str(r + 1) for r in rows[:3]) + (", ..." if len(rows) > 3 else "")
        kind = "missing or non-finite values (NaN)" if col.dtype != object else "missing values"
        raise TabularError(f"{what} column {name!r} has {len(rows)} {kind} (data rows "
                           f"{first}); fill or drop those rows first")


def _require_column(table: Table, name: str, option: str) -> None:
    if name not in table:
        raise TabularError(f"{option}: no column named {name!r}; the columns are "
                           f"{_names(table)}")


def _names(names: Any) -> str:
    names = [str(n) for n in names]
    shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
    return shown
