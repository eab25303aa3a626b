"""Files and in-memory data as tables: CSV/TSV, Parquet, `.npy`, `.npz`, and (for
`TabularModel`) DataFrames, dicts of columns and NumPy arrays.

`kinds` is a training file's schema ({column: "numeric" | "categorical"}): when given, the
named columns are read as those kinds whatever the new data holds, so a prediction never
depends on what else is in the file.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from .columns import Table, TabularError, as_kind, column, without_markers
from .csv_reader import read_csv

CSV_SUFFIXES = (".csv", ".tsv", ".tab", ".txt")
SUFFIXES = (*CSV_SUFFIXES, ".parquet", ".pq", ".npy", ".npz")


def read_table(path: str | os.PathLike, sep: str | None = None, decimal: str = "auto",
               kinds: dict[str, str] | None = None,
               na_values: list[str] | tuple[str, ...] = ()) -> Table:
    """The columns of a CSV/TSV, Parquet, .npy or .npz file (see the package docstring);
    cells equal to one of `na_values` (e.g. "?") are missing."""
    p = Path(path)
    if not p.exists():
        raise TabularError(f"{str(p)!r} does not exist")
    if p.is_dir():
        raise TabularError(f"{str(p)!r} is a directory, not a data file")
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise TabularError(f"cannot read {str(p)!r}: the file name must end in "
                           f"{', '.join(SUFFIXES)}")
    try:
        if suffix in CSV_SUFFIXES:
            table = read_csv(p, sep, decimal, kinds, na_values=na_values)
        else:
            readers = {".parquet": _read_parquet, ".pq": _read_parquet, ".npy": _read_npy,
                       ".npz": _read_npz}
            table = with_kinds(with_markers(readers[suffix](p), na_values), kinds)
    except TabularError:
        raise
    except (OSError, ValueError, UnicodeDecodeError, csv.Error) as e:
        kind = "text" if suffix in CSV_SUFFIXES else suffix[1:]
        raise TabularError(f"cannot read {str(p)!r} as {kind}: "
                           f"{' '.join(str(e).split())}") from None
    if not table:
        raise TabularError(f"{str(p)!r} has no columns")
    if len(next(iter(table.values()))) == 0:
        raise TabularError(f"{str(p)!r} has no data rows")
    return table


def with_markers(table: Table, na_values: list[str] | tuple[str, ...]) -> Table:
    markers = frozenset(v.strip().lower() for v in na_values)
    return {name: without_markers(col, markers) for name, col in table.items()}


def with_kinds(table: Table, kinds: dict[str, str] | None) -> Table:
    for name, kind in (kinds or {}).items():
        if name in table:
            table[name] = as_kind(table[name], kind, name)
    return table


def table_of(data: Any, feature_names: list[str], kinds: dict[str, str] | None = None,
             na_values: list[str] | tuple[str, ...] = ()) -> Table:
    """A table from a pandas DataFrame, a dict of columns, a NumPy structured array, or a
    2-D array whose columns are the features in training order."""
    if hasattr(data, "columns") and hasattr(data, "dtypes"):  # a pandas DataFrame
        table = {str(k): _frame_column(data[k]) for k in data.columns}
    elif isinstance(data, dict):
        table = {str(k): column(v) for k, v in data.items()}
    else:
        a = np.asarray(data)
        if a.dtype.names:
            table = {n: column(a[n]) for n in a.dtype.names}
        elif a.ndim == 2:
            if a.shape[1] != len(feature_names):
                raise TabularError(f"a 2-D array needs one column per feature "
                                   f"({len(feature_names)}: {', '.join(feature_names)}), got "
                                   f"{a.shape[1]}; pass a DataFrame to match columns by name")
            table = {n: column(a[:, j]) for j, n in enumerate(feature_names)}
        else:
            raise TabularError(f"expected a DataFrame, a dict of columns, a structured array, "
                               f"a 2-D array or a file path, got {type(data).__name__} of "
                               f"shape {a.shape}")
    if not table or len(next(iter(table.values()))) == 0:
        raise TabularError("the data has no rows")
    lengths = {len(v) for v in table.values()}
    if len(lengths) != 1:
        raise TabularError(f"columns of different lengths {sorted(lengths)}")
    return with_kinds(with_markers(table, na_values), kinds)


def _frame_column(series: Any) -> np.ndarray:
    import pandas as pd

    if pd.api.types.is_numeric_dtype(series.dtype) and \
            not pd.api.types.is_bool_dtype(series.dtype):  # nullable Int64/Float64 too
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    return column(series.to_numpy(dtype=object))


def _read_parquet(p: Path) -> Table:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise TabularError('reading Parquet needs pyarrow: pip install pyarrow (or '
                           'pip install "mlpx[tabular]")') from None
    data = pq.read_table(p)
    table: Table = {}
    while data.num_columns:  # one column at a time: less peak memory
        name, values = data.column_names[0], data.column(0)
        data = data.remove_column(0)
        table[str(name)] = column(values.to_numpy())
    return table


def _read_npy(p: Path) -> Table:
    a = np.load(p, allow_pickle=False)
    if a.ndim == 1:
        raise TabularError(f"{str(p)!r} holds a 1-D array; mlpx train needs a 2-D array "
                           "(rows x columns) with the target as one column")
    if a.ndim != 2:
        raise TabularError(f"{str(p)!r} holds an array of shape {a.shape}; expected a 2-D "
                           "array (rows x columns)")
    return {str(j): column(a[:, j]) for j in range(a.shape[1])}


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
            table[k] = column(a)
        elif a.ndim == 2:  # a feature matrix: one column per feature
            for j in range(a.shape[1]):
                table[f"{k}{j}"] = column(a[:, j])
        else:
            raise TabularError(f"{str(p)!r}: array {k!r} has shape {a.shape}; expected 1-D "
                               "columns or a 2-D feature matrix")
    return table
