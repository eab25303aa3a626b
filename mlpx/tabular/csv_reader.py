"""CSV and tab-separated files as tables.

With pyarrow installed (the `tabular` extra) its CSV reader parses the file: multi-threaded,
and about the file's size in memory while reading. Without it Python's `csv` module reads the
same files the same way, slower and with more memory, so that `mlpx train` works on a plain
install. Both readers read every cell as text and type the columns by one rule here:

- a cell in `MISSING_TEXT` or `na_values` (any case, spaces trimmed) is missing;
- a column whose present cells are all numbers is numeric (float64). Numbers take `decimal`
  as their decimal mark; `decimal="auto"` also takes a decimal comma (`1,5`) in files not
  separated by commas;
- any other column is text;
- `kinds` (a training file's schema) overrides the rule for the columns it names: a
  categorical column stays text even when the new file holds only numbers, a numeric column
  must hold numbers.
"""

from __future__ import annotations

import codecs
import csv
import importlib.util
import math
from pathlib import Path

import numpy as np

from .columns import MISSING_TEXT, Table, TabularError

#: separators tried by auto-detection, in order of preference on a tie
SEPARATORS = ",;\t|"
DECIMALS = ("auto", ".", ",")
ENGINES = ("auto", "pyarrow", "python")


def has_pyarrow() -> bool:
    return importlib.util.find_spec("pyarrow") is not None


def read_csv(path: Path, sep: str | None = None, decimal: str = "auto",
             kinds: dict[str, str] | None = None, engine: str = "auto",
             na_values: list[str] | tuple[str, ...] = ()) -> Table:
    """The columns of a delimited text file (see the module docstring); `na_values` are
    more cells to read as missing (e.g. "?"), compared as `MISSING_TEXT` is."""
    if decimal not in DECIMALS:
        raise TabularError(f"--decimal must be '.' or ',' (or auto), got {decimal!r}")
    encoding = text_encoding(path)
    raw, sep = read_header(path, sep, encoding)
    header = [h.strip() for h in raw]
    if decimal == "," and sep == ",":
        raise TabularError("--decimal ',' needs a separator other than ',' (a comma cannot mark "
                           "both decimals and columns); give --sep ';' or --sep tab")
    if engine == "auto":
        engine = "pyarrow" if has_pyarrow() else "python"
    kinds = kinds or {}
    reader = _arrow_columns if engine == "pyarrow" else _python_columns
    missing = MISSING_TEXT | {v.strip().lower() for v in na_values}
    columns = reader(path, raw, sep, decimal, kinds, encoding, missing)
    table: Table = {}
    for name, (cells, numbers) in zip(header, columns, strict=True):
        kind = kinds.get(name)
        if kind == "categorical" or (numbers is None and kind is None):
            table[name] = cells
        elif numbers is not None:
            table[name] = numbers
        else:
            bad = next(v for v in cells.tolist()
                       if v is not None and _number(v, decimal, sep) is None)
            raise TabularError(f"column {name!r} was numeric in training but holds {bad!r} "
                               "here")
    return table


def text_encoding(path: Path) -> str:
    """UTF-8 (with or without a byte-order mark) when the whole file decodes as UTF-8, else
    Windows-1252 (what spreadsheets export in Western Europe and the Americas), else Latin-1
    (which decodes any byte)."""
    for encoding in ("utf-8", "cp1252"):
        decoder = codecs.getincrementaldecoder(encoding)()
        try:
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    decoder.decode(block)
            decoder.decode(b"", final=True)
            return "utf-8-sig" if encoding == "utf-8" else encoding
        except UnicodeDecodeError:
            continue
    return "latin-1"


def read_header(path: Path, sep: str | None,
                encoding: str = "utf-8-sig") -> tuple[list[str], str]:
    """The column names as written and the separator (the one that splits the header most).
    Raises TabularError for duplicate or empty names (spaces around names do not count)."""
    with open(path, newline="", encoding=encoding) as f:
        first = ""
        for line in f:
            if line.strip():
                first = line
                break
    if not first:
        raise TabularError(f"{str(path)!r} is empty")
    if sep is None and path.suffix.lower() == ".tsv":
        sep = "\t"
    elif sep is None:  # the separator that splits the header most; a single column: ","
        sep = max(SEPARATORS, key=lambda s: (first.count(s), -SEPARATORS.index(s)))
        sep = sep if first.count(sep) else ","
    raw = next(csv.reader([first], delimiter=sep))
    header = [h.strip() for h in raw]
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise TabularError(f"{str(path)!r}: column name {dup[0]!r} appears more than once")
    if any(not h for h in header):
        raise TabularError(f"{str(path)!r}: column {header.index('') + 1} has no name in the "
                           "header row (the first line must name every column)")
    return raw, sep


# ------------------------------------------------------------------------------- readers
# Each yields (cells, numbers) per column of `header` (the names as written), in order: cells
# as a NumPy object array of trimmed str (None where missing), numbers the float64 column when
# every present cell is a number, else None. `kinds` is keyed by the trimmed names.
def _arrow_columns(path: Path, header: list[str], sep: str, decimal: str,
                   kinds: dict[str, str], encoding: str, missing_text: frozenset[str]):
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pcsv

    ragged: list[int] = []

    def invalid(row) -> str:
        ragged.append(row.actual_columns)
        return "error"

    try:
        table = pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(
                use_threads=True, encoding="utf8" if encoding == "utf-8-sig" else encoding),
            parse_options=pcsv.ParseOptions(delimiter=sep, newlines_in_values=True,
                                            invalid_row_handler=invalid),
            convert_options=pcsv.ConvertOptions(
                column_types={h: pa.string() for h in header}, null_values=[""],
                strings_can_be_null=True, quoted_strings_can_be_null=True))
    except pa.ArrowInvalid as e:
        if ragged:  # the Python reader names the line
            yield from _python_columns(path, header, sep, decimal, kinds, encoding,
                                       missing_text)
            return
        raise TabularError(f"cannot read {str(path)!r} as CSV: {' '.join(str(e).split())}") \
            from None
    blank = pc.is_null(table.column(0))
    for column in table.columns[1:]:
        blank = pc.and_(blank, pc.is_null(column))
    if pc.any(blank).as_py():  # rows of empty cells only (",,,"): skipped, as blank lines
        table = table.filter(pc.invert(blank))
    # one column at a time, dropped from the Arrow table once converted: less peak memory
    while table.num_columns:
        name, chunks = table.column_names[0].strip(), table.column(0)
        table = table.remove_column(0)
        text = pc.utf8_trim_whitespace(chunks.combine_chunks())
        del chunks
        missing = pc.is_in(pc.utf8_lower(text), value_set=pa.array(sorted(missing_text)))
        text = pc.if_else(missing, pa.scalar(None, pa.string()), text)
        numbers = None if kinds.get(name) == "categorical" else \
            _arrow_numbers(text, decimal, sep)
        if numbers is not None:
            yield None, numbers
            continue
        encoded = pc.dictionary_encode(text)
        del text
        values = np.append(encoded.dictionary.to_numpy(zero_copy_only=False),
                           np.array([None], dtype=object))
        codes = encoded.indices.fill_null(len(values) - 1).to_numpy()
        yield values[codes], numbers


def _arrow_numbers(text, decimal: str, sep: str) -> np.ndarray | None:
    import pyarrow as pa
    import pyarrow.compute as pc

    def cast(strings) -> np.ndarray | None:
        try:
            return pc.cast(strings, pa.float64()).to_numpy(zero_copy_only=False)
        except pa.ArrowInvalid:
            return None

    if decimal != ",":
        numbers = cast(text)
        if numbers is not None or decimal == "." or sep == ",":
            return numbers
    # decimal commas: one comma and no point in every cell (a point may group thousands)
    if pc.any(pc.match_substring(text, ".")).as_py() or \
            pc.any(pc.greater(pc.count_substring(text, ","), 1)).as_py():
        return None
    return cast(pc.replace_substring(text, ",", "."))


def _python_columns(path: Path, header: list[str], sep: str, decimal: str,
                    kinds: dict[str, str], encoding: str, missing_text: frozenset[str]):
    with open(path, newline="", encoding=encoding) as f:
        rows = csv.reader(f, delimiter=sep)
        cells: list[list[str]] = [[] for _ in header]
        seen_header = False
        for row in rows:
            if not any(row):  # a blank line, or empty cells only
                continue
            if not seen_header:
                seen_header = True
                continue
            if len(row) != len(header):
                raise TabularError(f"{str(path)!r}: line {rows.line_num} has {len(row)} fields, "
                                   f"the header has {len(header)}")
            for store, cell in zip(cells, row, strict=True):
                store.append(cell)
    for store in cells:
        values = np.array([None if c.strip().lower() in missing_text else c.strip()
                           for c in store], dtype=object)
        store.clear()
        yield values, _numbers(values, decimal, sep)


# -------------------------------------------------------------------------------- typing
def _numbers(cells: np.ndarray, decimal: str, sep: str) -> np.ndarray | None:
    """float64 values when every present cell is a number, else None."""
    present = np.fromiter((v is not None for v in cells), dtype=bool, count=len(cells))
    out = np.full(len(cells), math.nan)
    if decimal != ",":
        try:
            out[present] = cells[present].astype(np.float64)  # float() of each cell, in C
            return out
        except ValueError:
            if decimal == "." or sep == ",":
                return None
    for i in np.flatnonzero(present):  # decimal commas: cell by cell
        x = _number(cells[i], decimal, sep)
        if x is None:
            return None
        out[i] = x
    return out


def _number(text: str, decimal: str, sep: str) -> float | None:
    if decimal in (".", "auto"):
        try:
            return float(text)
        except ValueError:
            if decimal == "." or sep == ",":
                return None
    if text.count(",") > 1 or "." in text:  # a point may group thousands: not a number here
        return None
    try:
        return float(text.replace(",", "."))
    except ValueError:
        return None
