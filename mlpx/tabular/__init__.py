"""Tabular files for `mlpx train`, `mlpx predict` and `TabularModel`: read CSV/TSV, Parquet,
`.npy` and `.npz` files into named columns, and turn columns into a network's inputs and
targets.

A table is a dict of equal-length 1-D arrays, in file order: numeric columns as float64
(missing cells are NaN), text and boolean columns as object arrays of strings (missing
cells are None). `.npy` files hold a 2-D array whose columns are named by their index
("0", "1", ...); `.npz` files hold either one 1-D array per column (the keys name the
columns) or a 2-D feature array next to 1-D arrays (the target, e.g. `y`).

`Preprocessing` is everything a prediction needs to read a new file the way the training
file was read: the schema (feature columns and their kinds), one-hot categories, fill values
for missing cells, standardisation statistics, the task, class names or the target's scale.
It is saved as JSON (no pickle).
"""

from .columns import MISSING_TEXT, Table, TabularError
from .csv_reader import read_csv
from .preprocessing import (
    MAX_CATEGORIES,
    MAX_INTEGER_CLASSES,
    Feature,
    Preprocessing,
    TabularWarning,
    UnseenCategoryWarning,
    describe_task,
    drop_missing_rows,
    infer_task,
    resolve_target,
)
from .reading import SUFFIXES, read_table, table_of
from .schema_file import FORMAT, FORMAT_VERSION

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_CATEGORIES",
    "MAX_INTEGER_CLASSES",
    "MISSING_TEXT",
    "SUFFIXES",
    "Feature",
    "Preprocessing",
    "Table",
    "TabularError",
    "TabularWarning",
    "UnseenCategoryWarning",
    "describe_task",
    "drop_missing_rows",
    "infer_task",
    "read_csv",
    "read_table",
    "resolve_target",
    "table_of",
]
