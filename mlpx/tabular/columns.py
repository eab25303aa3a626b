"""Columns of a table: the error type, how cells become typed columns, and the messages that
name columns (every missing value, the near-miss of a mistyped name)."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any

import numpy as np

#: cells read as missing (compared case-insensitively after trimming spaces)
MISSING_TEXT = frozenset({"", "na", "n/a", "nan", "null", "none", "#n/a", "#na", "<na>", "-nan"})
#: the column kinds of a schema: how a file's column is read and encoded
KINDS = ("numeric", "categorical")

#: A table: column name -> 1-D array, in file order. Numeric columns are float64 (missing:
#: NaN), text columns object arrays of str (missing: None).
Table = dict[str, np.ndarray]


class TabularError(ValueError):
    """A data file or column that cannot be used; the message says what to change."""


def is_missing(v: Any) -> bool:
    """None, NaN, or pandas' NA / NaT."""
    if v is None:
        return True
    if isinstance(v, float):
        return math.isnan(v)
    return type(v).__name__ in ("NAType", "NaTType")


def missing_mask(col: np.ndarray) -> np.ndarray:
    if col.dtype == object:
        return np.fromiter((v is None for v in col), dtype=bool, count=len(col))
    return np.isnan(col)


def number_text(v: float) -> str:
    """A number as a category: 3.0 -> "3", 2.5 -> "2.5"."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def column(values: Any) -> np.ndarray:
    """A 1-D array from a file or a DataFrame as a table column: numbers as float64, booleans
    as "true"/"false", anything else as text (missing: NaN or None)."""
    values = np.asarray(values)
    if values.dtype.kind in "iuf":
        return values.astype(np.float64)
    if values.dtype.kind == "b":
        return np.where(values, "true", "false").astype(object)
    out: list[Any] = []
    numeric = True
    for v in values.tolist():
        if is_missing(v):
            out.append(None)
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            numeric = False
        out.append(str(v).lower() if isinstance(v, bool) else v)
    if numeric:
        return np.array([math.nan if v is None else float(v) for v in out], dtype=np.float64)
    # a number among text is written as a category is: 3.0 -> "3"
    return np.array([None if v is None else number_text(v)
                     if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)
                     for v in out], dtype=object)


def without_markers(col: np.ndarray, markers: frozenset[str]) -> np.ndarray:
    """A text column with the cells in `markers` (lower case, trimmed) as missing; numeric
    when what is left is all numbers."""
    if col.dtype != object or not markers:
        return col
    cells = [None if v is None or v.strip().lower() in markers else v for v in col.tolist()]
    try:
        return np.array([math.nan if v is None else float(v) for v in cells], dtype=np.float64)
    except ValueError:
        return np.array(cells, dtype=object)


def as_kind(col: np.ndarray, kind: str, name: str) -> np.ndarray:
    """A column read as the schema says: a categorical column of numbers becomes their text,
    a numeric column of text must hold numbers."""
    if kind == "categorical" and col.dtype != object:
        return np.array([None if math.isnan(v) else number_text(v) for v in col.tolist()],
                        dtype=object)
    if kind == "numeric" and col.dtype == object:
        out = np.empty(len(col), dtype=np.float64)
        for i, v in enumerate(col.tolist()):
            if v is None:
                out[i] = math.nan
                continue
            try:
                out[i] = float(v)
            except ValueError:
                raise TabularError(f"column {name!r} was numeric in training but holds "
                                   f"{v!r} here") from None
        return out
    return col


def names_text(names: Iterable[Any]) -> str:
    """Every name, comma-separated (a user looking for a column needs to see them all)."""
    return ", ".join(str(n) for n in names)


def require_column(table: Table | Iterable[str], name: str, option: str) -> None:
    """A clear error for an unknown column: the near-misses, then every column."""
    columns = list(table)
    if name in columns:
        return
    raise TabularError(f"{option}: no column named {name!r}{did_you_mean(name, columns)}; "
                       f"the columns are {names_text(columns)}")


def did_you_mean(name: str, columns: list[str], name_it: bool = False) -> str:
    lowered = {c.lower(): c for c in columns}
    close = [lowered[name.lower()]] if name.lower() in lowered else []
    close += [c for c in difflib.get_close_matches(name, columns, n=3, cutoff=0.6)
              if c not in close]
    if not close:
        return ""
    which = f" for {name!r}" if name_it else ""
    return f" (did you mean {' or '.join(repr(c) for c in close)}{which}?)"


def rows_text(rows: np.ndarray) -> str:
    """Data rows (1-based, the header not counted), the first three."""
    shown = ", ".join(str(r + 1) for r in rows[:3]) + (", ..." if len(rows) > 3 else "")
    return f"{len(rows)} row{'s' if len(rows) != 1 else ''}: {shown}"


def missing_report(table: Table, names: Iterable[str]) -> str:
    """'b' (2 rows: 3, 9), 'c' (1 row: 4) for the named columns with missing cells; ""
    when none has any."""
    parts = []
    for name in names:
        rows = np.flatnonzero(missing_mask(table[name]))
        if len(rows):
            parts.append(f"{name!r} ({rows_text(rows)})")
    return ", ".join(parts)


def check_finite(col: np.ndarray, name: str, what: str) -> None:
    """inf is not a missing value that imputation could fill: refuse it."""
    if col.dtype == object:
        return
    rows = np.flatnonzero(np.isinf(col))
    if len(rows):
        raise TabularError(f"{what} column {name!r} has non-finite values (inf) in data "
                           f"{rows_text(rows)}; fix or remove those rows")
