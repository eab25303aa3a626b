"""mlpx.tabular.csv_reader: real-world CSV dialects read the same with pyarrow and with
Python's csv module, and a training schema decides how a new file's columns are read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlpx.tabular import TabularError, read_table
from mlpx.tabular.csv_reader import has_pyarrow, read_csv

ENGINES = [
    pytest.param("pyarrow", marks=pytest.mark.skipif(not has_pyarrow(),
                                                     reason="pyarrow is not installed")),
    "python",
]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def same(a: np.ndarray, b: list) -> bool:
    if a.dtype == object:
        return a.tolist() == b
    return np.allclose(a, np.array(b, dtype=float), equal_nan=True)


@pytest.mark.parametrize("engine", ENGINES)
def test_semicolon_file_with_decimal_commas_is_read_as_numbers(tmp_path, engine):
    p = write(tmp_path / "eu.csv", "preis;menge;farbe\n1,5;3;rot\n2,25;;blau\n-0,5;7;rot\n")
    t = read_csv(p, engine=engine)
    assert same(t["preis"], [1.5, 2.25, -0.5]) and same(t["menge"], [3, np.nan, 7])
    assert same(t["farbe"], ["rot", "blau", "rot"])
    explicit = read_csv(p, decimal=",", engine=engine)
    assert same(explicit["preis"], [1.5, 2.25, -0.5])


@pytest.mark.parametrize("engine", ENGINES)
def test_decimal_point_keeps_comma_cells_as_text(tmp_path, engine):
    p = write(tmp_path / "eu.csv", "a;b\n1,5;x\n2,5;y\n")
    assert read_csv(p, decimal=".", engine=engine)["a"].tolist() == ["1,5", "2,5"]


@pytest.mark.parametrize("engine", ENGINES)
def test_thousands_points_are_not_taken_for_decimal_commas(tmp_path, engine):
    p = write(tmp_path / "eu.csv", "a;b\n1.234,5;x\n2,5;y\n")
    assert read_csv(p, engine=engine)["a"].tolist() == ["1.234,5", "2,5"]


def test_decimal_comma_with_comma_separator_is_refused(tmp_path):
    p = write(tmp_path / "d.csv", "a,b\n1,2\n")
    with pytest.raises(TabularError, match="--decimal ',' needs a separator other than"):
        read_csv(p, decimal=",")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("name", ["d.tsv", "d.txt", "d.tab"])
def test_tab_files_are_accepted_by_name(tmp_path, engine, name):
    write(tmp_path / name, "a\tb\tc\n1\t2\tx y\n3\tNA\tz\n")
    t = read_table(tmp_path / name) if engine == "auto" else \
        read_csv(tmp_path / name, engine=engine)
    assert list(t) == ["a", "b", "c"] and same(t["b"], [2, np.nan])
    assert t["c"].tolist() == ["x y", "z"]


@pytest.mark.parametrize("engine", ENGINES)
def test_explicit_separator_and_quoted_cells(tmp_path, engine):
    p = write(tmp_path / "p.csv", 'a|b|"c"\n1|"x|y"|"multi\nline"\n2|z|w\n')
    t = read_csv(p, sep="|", engine=engine)
    assert t["b"].tolist() == ["x|y", "z"] and t["c"].tolist() == ["multi\nline", "w"]


@pytest.mark.parametrize("engine", ENGINES)
def test_missing_markers_spaces_and_booleans(tmp_path, engine):
    p = write(tmp_path / "m.csv", "a,b,c\n 1 , yes ,true\nNA,n/a,False\nnull, x ,\n")
    t = read_csv(p, engine=engine)
    assert same(t["a"], [1, np.nan, np.nan])
    assert t["b"].tolist() == ["yes", None, "x"]
    assert t["c"].tolist() == ["true", "False", None]


@pytest.mark.parametrize("engine", ENGINES)
def test_schema_decides_the_kind_not_the_new_file(tmp_path, engine):
    """A column trained as text (1, 2, 3, 4+) stays text in a file holding only 1, 2, 3."""
    p = write(tmp_path / "new.csv", "rooms,x\n1,0.5\n2,1.5\n3,2\n")
    assert read_csv(p, engine=engine)["rooms"].dtype == np.float64  # no schema: numbers
    t = read_csv(p, kinds={"rooms": "categorical", "x": "numeric"}, engine=engine)
    assert t["rooms"].tolist() == ["1", "2", "3"] and same(t["x"], [0.5, 1.5, 2])


@pytest.mark.parametrize("engine", ENGINES)
def test_text_in_a_numeric_column_of_the_schema_is_named(tmp_path, engine):
    p = write(tmp_path / "new.csv", "x,y\n1,a\nbig,b\n")
    with pytest.raises(TabularError, match="column 'x' was numeric in training but holds 'big'"):
        read_csv(p, kinds={"x": "numeric"}, engine=engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_ragged_line_is_named(tmp_path, engine):
    p = write(tmp_path / "r.csv", "a,b,c\n1,2,x\n3,y\n")
    with pytest.raises(TabularError, match="line 3 has 2 fields, the header has 3"):
        read_csv(p, engine=engine)


@pytest.mark.parametrize("engine", ENGINES)
def test_an_all_missing_column_is_numeric_nan(tmp_path, engine):
    p = write(tmp_path / "e.csv", "a,b\n1,\n2,NA\n")
    assert same(read_csv(p, engine=engine)["b"], [np.nan, np.nan])


def test_engines_agree_on_a_mixed_file(tmp_path):
    pytest.importorskip("pyarrow", reason="compares pyarrow with the csv module")
    rng = np.random.default_rng(0)
    lines = ["num;text;eu;miss"]
    for i in range(500):
        eu = f"{rng.normal():.3f}".replace(".", ",")
        miss = "" if i % 7 == 0 else str(i)
        lines.append(f"{rng.normal():.6g};{'abc'[i % 3]};{eu};{miss}")
    lines[100:100] = [";;;", "NA;NA;NA;NA", "", " ; ; ; "]  # blank rows and missing cells
    p = write(tmp_path / "mix.csv", "\n".join(lines) + "\n")
    a, b = read_csv(p, engine="pyarrow"), read_csv(p, engine="python")
    assert list(a) == list(b) and len(a["num"]) == 500 + 2  # ";;;" and "" skipped
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        if a[name].dtype == object:
            assert a[name].tolist() == b[name].tolist()
        else:
            np.testing.assert_array_equal(a[name], b[name])


def test_separator_name_and_detection(tmp_path):
    from mlpx.tabular.csv_reader import read_header

    assert read_header(write(tmp_path / "a.csv", "x;y;z\n"), None) == (["x", "y", "z"], ";")
    assert read_header(write(tmp_path / "b.csv", "x|y\n"), None) == (["x", "y"], "|")
    assert read_header(write(tmp_path / "c.tsv", "x y\n"), None) == (["x y"], "\t")
    assert read_header(write(tmp_path / "d.csv", "only\n"), None) == (["only"], ",")


def test_without_pyarrow_the_csv_module_reads_the_file(tmp_path, monkeypatch):
    import mlpx.tabular.csv_reader as reader

    def no_arrow(*args, **kwargs):
        raise AssertionError("pyarrow used although it is absent")

    monkeypatch.setattr(reader, "has_pyarrow", lambda: False)
    monkeypatch.setattr(reader, "_arrow_columns", no_arrow)
    p = write(tmp_path / "d.csv", "a;b\n1,5;x\n2;y\n")
    t = read_table(p)
    assert same(t["a"], [1.5, 2.0]) and t["b"].tolist() == ["x", "y"]


@pytest.mark.parametrize("engine", ENGINES)
def test_spaces_around_header_names(tmp_path, engine):
    p = write(tmp_path / "s.csv", "a, b ,c\n1, 2 ,x\n3,4,y\n")
    t = read_csv(p, kinds={"b": "categorical"}, engine=engine)
    assert list(t) == ["a", "b", "c"] and t["b"].tolist() == ["2", "4"]


@pytest.mark.parametrize("engine", ENGINES)
def test_windows_1252_file_from_a_spreadsheet(tmp_path, engine):
    p = tmp_path / "w.csv"
    p.write_bytes("stadt;preis\nKöln;1,5\n€uro;2\n".encode("cp1252"))
    t = read_csv(p, engine=engine)
    assert t["stadt"].tolist() == ["Köln", "€uro"] and same(t["preis"], [1.5, 2.0])


@pytest.mark.parametrize("engine", ENGINES)
def test_explicit_decimal_comma_reads_whole_numbers(tmp_path, engine):
    p = write(tmp_path / "d.csv", "a;b\n3;1,5\n7;2\n")
    t = read_csv(p, decimal=",", engine=engine)
    assert same(t["a"], [3, 7]) and same(t["b"], [1.5, 2])


@pytest.mark.parametrize("engine", ENGINES)
def test_more_missing_markers(tmp_path, engine):
    p = write(tmp_path / "q.csv", "age,job\n39,clerk\n?,?\n50, ? \n")
    t = read_csv(p, na_values=["?"], engine=engine)
    assert same(t["age"], [39, np.nan, 50]) and t["job"].tolist() == ["clerk", None, None]
    assert read_csv(p, engine=engine)["age"].tolist() == ["39", "?", "50"]


def test_more_missing_markers_in_a_parquet_file(tmp_path):
    pa = pytest.importorskip("pyarrow", reason="Parquet needs pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"age": ["39", "?", "50"]}), tmp_path / "q.parquet")
    t = read_table(tmp_path / "q.parquet", na_values=["?"])
    assert same(t["age"], [39, np.nan, 50])
