"""`mlpx train` / `mlpx predict`: tabular files train in one command, predictions round-trip,
and every bad file or column is a one-line usage error (exit 2) before any training."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _tabular_files import SPECIES, write_csv

from mlpx.commands import cli
from mlpx.tabular import TabularError, infer_task, read_table
from mlpx.tabular.schema_file import preprocessing_from_json, preprocessing_json


def blobs(n: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])
    X = centres[y] * 10 + 100 + rng.normal(scale=5.0, size=(n, 2))  # far from unit scale
    return X, y


def classification_csv(path: Path, n: int = 150, seed: int = 0) -> Path:
    X, y = blobs(n, seed)
    colour = np.array(["red", "green"])[np.arange(n) % 2]  # a text feature: one-hot encoded
    return write_csv(path, ["length", "width", "colour", "species"],
                     [[*x, c, SPECIES[t]] for x, c, t in zip(X, colour, y, strict=True)])


def regression_data(n: int = 200, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3)) * [1.0, 50.0, 0.01]
    y = 3 * X[:, 0] - 0.04 * X[:, 1] + 100 * X[:, 2] + 500 + rng.normal(scale=0.1, size=n)
    return X, y


def train(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(["train", *argv, "--quiet"])
    out = capsys.readouterr()
    return code, out.out, out.err


def read_predictions(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def test_csv_classification_with_string_labels_trains_and_predicts(tmp_path, capsys):
    data = classification_csv(tmp_path / "flowers.csv")
    code, out, err = train([str(data), "--target", "species", "--hidden", "16",
                            "--epochs", "15", "--lr", "0.01", "--out", str(tmp_path / "m")],
                           capsys)
    assert code == 0, err
    assert "classification, 3 classes" in out
    acc = float(out.split("test accuracy: ")[1].split()[0])
    assert acc >= 0.9, out
    model_dir = tmp_path / "m"
    assert (model_dir / "model.safetensors").exists()
    pre = json.loads((model_dir / "model.json").read_text())
    assert pre["classes"] == list(SPECIES) and pre["task"] == "classification"
    colour = next(f for f in pre["features"] if f["name"] == "colour")
    assert colour["kind"] == "categorical" and colour["categories"] == ["green", "red"]
    try:
        import matplotlib  # noqa: F401

        assert (model_dir / "loss_curves.png").stat().st_size > 0
    except ImportError:
        assert "plot skipped" in out

    # predict on new rows without the target column: labels come back as the class names
    X, y = blobs(60, seed=5)
    new = write_csv(tmp_path / "new.csv", ["width", "length", "colour"],  # columns reordered
                    [[x[1], x[0], "red"] for x in X])
    preds = tmp_path / "preds.csv"
    assert cli.main(["predict", str(model_dir), str(new), "--out", str(preds), "--proba"]) == 0
    header, rows = read_predictions(preds)
    assert header == ["species", *(f"proba_{s}" for s in SPECIES)]
    assert len(rows) == 60
    labels = [r[0] for r in rows]
    assert set(labels) <= set(SPECIES)
    assert np.mean([lab == SPECIES[t] for lab, t in zip(labels, y, strict=True)]) >= 0.9
    proba = np.array([[float(v) for v in r[1:]] for r in rows])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    assert [SPECIES[i] for i in proba.argmax(axis=1)] == labels


def test_regression_csv_trains_to_a_high_r2_and_predicts_in_target_units(tmp_path, capsys):
    X, y = regression_data()
    data = write_csv(tmp_path / "house.csv", ["a", "b", "c", "price"],
                     [[*x, t] for x, t in zip(X, y, strict=True)])
    code, out, err = train([str(data), "--target", "price", "--hidden", "32",
                            "--epochs", "40", "--lr", "0.01", "--out", str(tmp_path / "m")],
                           capsys)
    assert code == 0, err
    assert "regression" in out
    r2 = float(out.split("test R²: ")[1].split(",")[0])
    assert r2 >= 0.9, out
    preds = tmp_path / "p.csv"
    assert cli.main(["predict", str(tmp_path / "m" / "model.safetensors"), str(data),
                     "--out", str(preds)]) == 0
    assert "R²" in capsys.readouterr().out  # the file has the target: its score is reported
    header, rows = read_predictions(preds)
    assert header == ["price"]
    values = np.array([float(r[0]) for r in rows])
    assert 1 - np.mean((values - y) ** 2) / np.var(y) >= 0.9  # in the target's units


def test_integer_target_with_few_levels_is_classification_and_task_overrides(tmp_path, capsys):
    X, y = blobs(90)
    data = write_csv(tmp_path / "d.csv", ["x0", "x1", "label"],
                     [[*x, t] for x, t in zip(X, y, strict=True)])
    code, out, _ = train([str(data), "--target", "label", "--epochs", "1",
                          "--out", str(tmp_path / "a")], capsys)
    assert code == 0 and "classification, 3 classes" in out
    code, out, _ = train([str(data), "--target", "label", "--task", "regression",
                          "--epochs", "1", "--out", str(tmp_path / "b")], capsys)
    assert code == 0 and "(regression" in out
    assert infer_task(np.arange(100.0)) == "regression"
    assert infer_task(np.array([0.5, 1.5, 0.5])) == "regression"
    assert infer_task(np.array(["yes", "no"], dtype=object)) == "classification"


def test_npy_target_is_a_column_index_and_predict_takes_the_features_alone(tmp_path, capsys):
    X, y = blobs(90)
    np.save(tmp_path / "d.npy", np.column_stack([X, y]))
    code, out, err = train([str(tmp_path / "d.npy"), "--target", "-1", "--epochs", "10",
                            "--lr", "0.01", "--out", str(tmp_path / "m")], capsys)
    assert code == 0, err
    np.save(tmp_path / "x.npy", X)  # without the target column
    assert cli.main(["predict", str(tmp_path / "m"), str(tmp_path / "x.npy"),
                     "--out", str(tmp_path / "p.csv")]) == 0
    header, rows = read_predictions(tmp_path / "p.csv")
    assert header == ["2"] and len(rows) == 90
    assert np.mean(np.array([int(r[0]) for r in rows]) == y) >= 0.9


def test_npz_with_a_feature_matrix_and_a_target_array(tmp_path, capsys):
    X, y = blobs(90)
    np.savez(tmp_path / "d.npz", X=X, y=np.array(SPECIES)[y])
    code, out, err = train([str(tmp_path / "d.npz"), "--target", "y", "--epochs", "10",
                            "--lr", "0.01", "--out", str(tmp_path / "m")], capsys)
    assert code == 0, err
    assert "2 inputs" in out
    assert float(out.split("test accuracy: ")[1].split()[0]) >= 0.9
    table = read_table(tmp_path / "d.npz")
    assert list(table) == ["X0", "X1", "y"]


def test_semicolon_and_tab_separated_files_and_quoted_cells(tmp_path):
    (tmp_path / "s.csv").write_text('a;b;"name"\n1;2.5;"x; y"\n3;;z\n')
    (tmp_path / "t.csv").write_text("a\tb\n1\tNA\n")
    s = read_table(tmp_path / "s.csv")
    assert list(s) == ["a", "b", "name"] and list(s["name"]) == ["x; y", "z"]
    assert s["b"][0] == 2.5 and np.isnan(s["b"][1])  # an empty cell is missing
    t = read_table(tmp_path / "t.csv")
    assert list(t) == ["a", "b"] and np.isnan(t["b"][0])


def test_parquet_file(tmp_path, capsys):
    pa = pytest.importorskip("pyarrow", reason="Parquet support needs pyarrow")
    import pyarrow.parquet as pq

    X, y = blobs(90)
    pq.write_table(pa.table({"a": X[:, 0], "b": X[:, 1], "ok": y == 0}), tmp_path / "d.parquet")
    table = read_table(tmp_path / "d.parquet")
    assert table["ok"].dtype == object and set(table["ok"]) == {"true", "false"}
    code, out, err = train([str(tmp_path / "d.parquet"), "--target", "ok", "--epochs", "5",
                            "--out", str(tmp_path / "m")], capsys)
    assert code == 0, err
    assert "classification, 2 classes" in out


def test_parquet_without_an_engine_names_the_package(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_parquet(name, *args, **kwargs):
        if name.split(".")[0] in ("pyarrow", "pandas"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    (tmp_path / "d.parquet").write_bytes(b"PAR1")
    monkeypatch.setattr(builtins, "__import__", no_parquet)
    with pytest.raises(TabularError, match="pip install pyarrow"):
        read_table(tmp_path / "d.parquet")


def _bad_files(tmp: Path) -> dict[str, Path]:
    good = classification_csv(tmp / "good.csv", n=30)
    (tmp / "empty.csv").write_text("")
    (tmp / "header.csv").write_text("a,b,species\n")
    (tmp / "ragged.csv").write_text("a,b,species\n1,2,x\n3,y\n")
    (tmp / "data.xlsx").write_text("a,b\n1,2\n")
    (tmp / "broken.npy").write_bytes(b"not numpy")
    write_csv(tmp / "nan.csv", ["a", "b", "species"],
              [[1, 2, "x"], [3, "", "y"], [5, 6, "x"], [7, 8, "y"]])
    write_csv(tmp / "inf.csv", ["a", "species"], [[1, "x"], ["inf", "y"], [2, "x"]])
    write_csv(tmp / "one.csv", ["a", "b", "species"], [[i, i * 2, "same"] for i in range(9)])
    write_csv(tmp / "ids.csv", ["id", "a", "y"], [[f"user{i}", i, i % 2] for i in range(300)])
    write_csv(tmp / "onlytarget.csv", ["species"], [["x"], ["y"]])
    write_csv(tmp / "textreg.csv", ["a", "species"], [[i, SPECIES[i % 3]] for i in range(9)])
    return {"good": good}


BAD_TRAIN = [
    (["missing.csv", "--target", "y"], "does not exist"),
    (["data.xlsx", "--target", "b"], "must end in .csv, .tsv"),
    (["empty.csv", "--target", "y"], "is empty"),
    (["header.csv", "--target", "species"], "no data rows"),
    (["ragged.csv", "--target", "species"], "line 3 has 2 fields"),
    (["broken.npy", "--target", "-1"], "cannot read"),
    (["good.csv", "--target", "nope"], "no column named 'nope'; the columns are length"),
    (["onlytarget.csv", "--target", "species"], "no feature columns"),
    (["good.csv", "--target", "species", "--drop", "nope"], "--drop: no column named 'nope'"),
    (["nan.csv", "--target", "species"], "missing values in 'b' (1 row: 2)"),
    (["inf.csv", "--target", "species"], "non-finite"),
    (["one.csv", "--target", "species"], "single class ('same')"),
    (["ids.csv", "--target", "y"], "--drop id"),
    (["textreg.csv", "--target", "species", "--task", "regression"], "regression needs numbers"),
    (["good.csv", "--target", "species", "--val-fraction", "0.5", "--test-fraction", "0.5"],
     "must be below 1"),
    (["good.csv", "--target", "species", "--val-fraction", "1.5"], "must be in [0, 1)"),
    (["good.csv", "--target", "species", "--hidden", "0"], "--hidden must be positive"),
    (["good.csv", "--target", "species", "--lr", "-1"], "--lr must be > 0"),
    (["good.csv", "--target", "species", "--optimizer", "nadamax"], "unknown optimizer"),
    (["good.csv", "--target", "species", "--activation", "nope"], "--activation"),
    (["good.csv"], "--target"),
]


@pytest.mark.parametrize("argv, message", BAD_TRAIN,
                         ids=[" ".join(a) for a, _ in BAD_TRAIN])
def test_bad_training_input_is_one_line_and_exit_2_before_training(argv, message, tmp_path,
                                                                   capsys, monkeypatch):
    _bad_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", *argv, "--out", "m"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mlpx train: ") and message in err[0], err
    assert not (tmp_path / "m").exists()  # nothing trained, nothing written


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("trained")
    classification_csv(tmp / "good.csv", n=60)
    assert cli.main(["train", str(tmp / "good.csv"), "--target", "species", "--epochs", "2",
                     "--quiet", "--out", str(tmp / "m")]) == 0
    X, y = regression_data(40)
    write_csv(tmp / "reg.csv", ["a", "b", "c", "t"], [[*x, t] for x, t in zip(X, y, strict=True)])
    assert cli.main(["train", str(tmp / "reg.csv"), "--target", "t", "--epochs", "1",
                     "--quiet", "--out", str(tmp / "r")]) == 0
    return tmp


def test_bad_prediction_input_is_one_line_and_exit_2(trained, tmp_path, capsys):
    write_csv(tmp_path / "nolength.csv", ["width", "colour"], [[1, "red"]])
    write_csv(tmp_path / "text.csv", ["length", "width", "colour"], [["long", 1, "red"]])
    write_csv(tmp_path / "nan.csv", ["length", "width", "colour"], [["", 1, "red"]])
    (tmp_path / "nojson").mkdir()
    shutil.copy(trained / "m" / "model.safetensors", tmp_path / "nojson")
    cases = [
        ([str(trained / "m"), str(tmp_path / "nolength.csv")], "'length' is missing"),
        ([str(trained / "m"), str(tmp_path / "text.csv")], "was numeric in training"),
        ([str(trained / "m"), str(tmp_path / "nan.csv")], "missing"),
        ([str(trained / "m"), str(tmp_path / "absent.csv")], "does not exist"),
        ([str(tmp_path / "nowhere"), str(trained / "good.csv")], "no model at"),
        ([str(tmp_path / "nojson"), str(trained / "good.csv")], "model.json' is missing"),
        ([str(trained / "r"), str(trained / "reg.csv"), "--proba"], "regression model"),
    ]
    assert cli.main(["predict", str(trained / "m"), str(trained / "good.csv"), "--out",
                     str(tmp_path / "no" / "dir.csv")]) == 2
    assert "--out" in capsys.readouterr().err
    for argv, message in cases:
        out = tmp_path / "p.csv"
        assert cli.main(["predict", *argv, "--out", str(out)]) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("mlpx predict: "), err
        assert message in err[0], (argv, err)
        assert not out.exists()


def test_a_damaged_preprocessing_file_is_refused(trained, tmp_path, capsys):
    shutil.copytree(trained / "m", tmp_path / "m")
    (tmp_path / "m" / "model.json").write_text('{"format": "something else"}')
    assert cli.main(["predict", str(tmp_path / "m"), str(trained / "good.csv")]) == 2
    assert "not a valid mlpx preprocessing file" in capsys.readouterr().err
    shutil.copy(trained / "m" / "model.json", tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\x00" * 20)  # a damaged checkpoint
    assert cli.main(["predict", str(tmp_path / "m"), str(trained / "good.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mlpx predict: "), err
    pre = preprocessing_from_json((trained / "m" / "model.json").read_text())
    assert preprocessing_from_json(preprocessing_json(pre)) == pre


def test_standardisation_comes_from_the_training_rows_and_is_saved(trained):
    pre = preprocessing_from_json((trained / "m" / "model.json").read_text())
    table = read_table(trained / "good.csv")
    X = pre.features_of(table)
    assert X.shape == (60, 4)  # length, width, colour one-hot (2)
    assert np.all(np.abs(X.mean(axis=0)) < 0.5) and np.all(np.abs(X.std(axis=0) - 1) < 0.3)
    assert pre.mean[0] > 50  # the raw scale (about 100) was learnt, not assumed


def test_help_reads_well(capsys):
    assert cli.main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    for words in ("--target COLUMN", "--hidden", "--val-fraction", "--task", ".npz",
                  "pip install pyarrow", "mlpx predict"):
        assert words in text, words
    assert cli.main(["predict", "--help"]) == 0
    assert "--proba" in capsys.readouterr().out
    assert cli.main(["--help"]) == 0
    top = capsys.readouterr().out
    assert "train" in top and "predict" in top


def test_bad_file_in_a_process_has_no_traceback(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    proc = subprocess.run([sys.executable, "-m", "mlpx", "train", "empty.csv", "--target", "y"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# --------------------------------------------------- the training schema reads later files
def rooms_csv(path: Path, n: int = 240, seed: int = 0) -> Path:
    """A text column whose values look like numbers except one ("4+")."""
    rng = np.random.default_rng(seed)
    rooms = np.array(["1", "2", "3", "4+"])[np.arange(n) % 4]
    x = rng.normal(size=n)
    label = np.where((rooms == "4+") | (rooms == "1"), "big", "small")
    return write_csv(path, ["rooms", "x", "label"],
                     [[r, f"{v:.3f}", t] for r, v, t in zip(rooms, x, label, strict=True)])


def test_predictions_do_not_depend_on_the_rest_of_the_file(tmp_path, capsys):
    rooms_csv(tmp_path / "train.csv")
    code, _, err = train([str(tmp_path / "train.csv"), "--target", "label", "--epochs", "40",
                          "--lr", "0.01", "--out", str(tmp_path / "m")], capsys)
    assert code == 0, err
    rows = [["1", "0.1"], ["2", "0.2"], ["3", "-0.3"]]
    write_csv(tmp_path / "numbers_only.csv", ["rooms", "x"], rows)
    write_csv(tmp_path / "with_text.csv", ["rooms", "x"], [*rows, ["4+", "0.0"]])
    for name in ("numbers_only", "with_text"):
        assert cli.main(["predict", str(tmp_path / "m"), str(tmp_path / f"{name}.csv"),
                         "--out", str(tmp_path / f"{name}_p.csv")]) == 0
    alone = read_predictions(tmp_path / "numbers_only_p.csv")[1]
    mixed = read_predictions(tmp_path / "with_text_p.csv")[1]
    assert alone == mixed[:3]
    assert [r[0] for r in alone] == ["big", "small", "small"]  # rooms 1 is big: one-hot read


def test_unseen_values_warn_on_stderr(tmp_path, capsys):
    rooms_csv(tmp_path / "train.csv")
    assert train([str(tmp_path / "train.csv"), "--target", "label", "--epochs", "1",
                  "--out", str(tmp_path / "m")], capsys)[0] == 0
    write_csv(tmp_path / "new.csv", ["rooms", "x"], [["7", "0"], ["2", "0"]])
    assert cli.main(["predict", str(tmp_path / "m"), str(tmp_path / "new.csv")]) == 0
    err = capsys.readouterr().err
    assert "mlpx predict: warning: column 'rooms' holds 1 value(s) the model was not trained " \
           "on ('7'; 1 row: 1): encoded as all zeros" in err


@pytest.mark.parametrize("content", [b"\xff\xfe\x00\x81 not text", b'{"format": "mlpx-tabular"',
                                     "mean"])
def test_a_damaged_preprocessing_file_is_one_line_and_exit_2(trained, tmp_path, content):
    shutil.copytree(trained / "m", tmp_path / "m")
    side = tmp_path / "m" / "model.json"
    if content == "mean":  # a hand edit that leaves valid JSON with the wrong lengths
        doc = json.loads(side.read_text())
        doc["mean"] = doc["mean"][:-1]
        side.write_text(json.dumps(doc))
    else:
        side.write_bytes(content)
    proc = subprocess.run([sys.executable, "-m", "mlpx", "predict", str(tmp_path / "m"),
                           str(trained / "good.csv")], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "not a valid mlpx preprocessing file" in err[0], err


# ------------------------------------------------------------------ real-world CSV files
def test_semicolon_file_with_decimal_commas_trains_on_numbers(tmp_path, capsys):
    X, y = blobs(150)
    lines = ["länge;breite;art"] + [f"{a:.3f};{b:.3f};{SPECIES[t]}".replace(".", ",")
                                    for (a, b), t in zip(X, y, strict=True)]
    (tmp_path / "eu.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = train([str(tmp_path / "eu.csv"), "--target", "art", "--epochs", "15",
                            "--lr", "0.01", "--out", str(tmp_path / "m")], capsys)
    assert code == 0, err
    assert "2 inputs from 2 columns" in out
    pre = json.loads((tmp_path / "m" / "model.json").read_text())
    assert [f["kind"] for f in pre["features"]] == ["numeric", "numeric"]


def test_tsv_file_and_explicit_separator(tmp_path, capsys):
    X, y = blobs(90)
    rows = [f"{a}\t{b}\t{SPECIES[t]}" for (a, b), t in zip(X, y, strict=True)]
    (tmp_path / "d.tsv").write_text("a\tb\tk\n" + "\n".join(rows) + "\n")
    assert train([str(tmp_path / "d.tsv"), "--target", "k", "--epochs", "1",
                  "--out", str(tmp_path / "m")], capsys)[0] == 0
    (tmp_path / "d.txt").write_text("a|b|k\n" + "\n".join(r.replace("\t", "|") for r in rows))
    assert train([str(tmp_path / "d.txt"), "--target", "k", "--sep", "|", "--epochs", "1",
                  "--out", str(tmp_path / "m2")], capsys)[0] == 0
    assert cli.main(["train", str(tmp_path / "d.txt"), "--target", "k", "--sep", "ab"]) == 2
    assert "--sep must be one character" in capsys.readouterr().err


def test_missing_values_imputed_in_training_and_prediction(tmp_path, capsys):
    X, y = blobs(120)
    rows = [[f"{a:.3f}" if i % 10 else "", f"{b:.3f}", "" if i % 15 == 1 else "ab"[i % 2],
             SPECIES[t]] for i, ((a, b), t) in enumerate(zip(X, y, strict=True))]
    data = write_csv(tmp_path / "gaps.csv", ["a", "b", "c", "k"], rows)
    code, _, err = train([str(data), "--target", "k", "--out", str(tmp_path / "m")], capsys)
    assert code == 2 and "'a' (12 rows: 1, 11, 21, ...), 'c' (8 rows: 2, 17, 32, ...)" in err
    code, _, err = train([str(data), "--target", "k", "--missing", "median", "--epochs", "2",
                          "--out", str(tmp_path / "m")], capsys)
    assert code == 0, err
    pre = json.loads((tmp_path / "m" / "model.json").read_text())
    assert pre["missing"] == "median" and isinstance(pre["features"][0]["fill"], float)
    assert pre["features"][2]["fill"] in ("a", "b")
    # as SimpleImputer: every feature has a fill value, also b that had no gaps in training
    write_csv(tmp_path / "new.csv", ["a", "b", "c"], [["", "1", ""], ["3", "", "a"]])
    assert cli.main(["predict", str(tmp_path / "m"), str(tmp_path / "new.csv")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    code, out, err = train([str(data), "--target", "k", "--missing", "drop", "--epochs", "1",
                            "--out", str(tmp_path / "d")], capsys)
    assert code == 0, err
    assert "20 rows with missing values left out (--missing drop)" in out


def test_a_text_column_with_thousands_of_values_is_refused_with_the_fix(tmp_path, capsys):
    n = 4000
    rows = [[f"city{i % 800}", i % 7, i % 2] for i in range(n)]  # 800 values, 5 times each
    data = write_csv(tmp_path / "wide.csv", ["city", "x", "y"], rows)
    code, _, err = train([str(data), "--target", "y", "--out", str(tmp_path / "m")], capsys)
    assert code == 2
    assert "'city' is text with 800 distinct values" in err
    assert "--drop city" in err and "--max-categories" in err
    code, out, err = train([str(data), "--target", "y", "--max-categories", "20",
                            "--epochs", "1", "--out", str(tmp_path / "m")], capsys)
    assert code == 0, err
    assert "21 inputs from 2 columns" in out


def test_a_wrong_target_says_did_you_mean_and_lists_every_column(tmp_path, capsys):
    names = [f"feature_{i}" for i in range(14)] + ["Outcome"]
    data = write_csv(tmp_path / "w.csv", names, [list(range(15)), list(range(1, 16))])
    assert cli.main(["train", str(data), "--target", "outcom"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'Outcome'?" in err and all(n in err for n in names)


def test_question_marks_in_a_numeric_column(tmp_path, capsys):
    X, y = blobs(120)
    rows = [["?" if i % 12 == 5 else f"{a:.3f}", f"{b:.3f}", SPECIES[t]]
            for i, ((a, b), t) in enumerate(zip(X, y, strict=True))]
    data = write_csv(tmp_path / "q.csv", ["a", "b", "k"], rows)
    code, _, err = train([str(data), "--target", "k", "--epochs", "1",
                          "--out", str(tmp_path / "m")], capsys)
    assert code == 2  # read as text: a wide text column
    code, _, err = train([str(data), "--target", "k", "--na-values", "?", "--missing", "mean",
                          "--epochs", "1", "--out", str(tmp_path / "m")], capsys)
    assert code == 0, err
    pre = json.loads((tmp_path / "m" / "model.json").read_text())
    assert pre["na_values"] == ["?"] and pre["features"][0]["kind"] == "numeric"
    write_csv(tmp_path / "new.csv", ["a", "b"], [["?", "1"], ["2", "3"]])
    assert cli.main(["predict", str(tmp_path / "m"), str(tmp_path / "new.csv")]) == 0


def test_a_few_words_in_a_column_of_numbers_warn(tmp_path, capsys):
    rows = [["unknown" if i % 10 == 3 else str(i % 4), i % 2] for i in range(60)]  # 10 %
    data = write_csv(tmp_path / "w.csv", ["level", "y"], rows)
    code, _, err = train([str(data), "--target", "y", "--epochs", "1",
                          "--out", str(tmp_path / "m")], capsys)
    assert code == 0, err
    assert "mlpx train: warning: column 'level' holds numbers and 6 cells that are not " \
           "('unknown')" in err and "--na-values unknown" in err


def test_train_help_lists_every_cell_read_as_missing(capsys):
    """--na-values adds to a built-in list: its help names that list in full."""
    from mlpx.tabular.columns import MISSING_TEXT

    assert cli.main(["train", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.lower().split())
    for marker in sorted(MISSING_TEXT - {""}):
        assert f" {marker}," in text or f" {marker})" in text, marker
