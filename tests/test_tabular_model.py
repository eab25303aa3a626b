"""mlpx.TabularModel: a model trained by `mlpx train` used from Python, with its
preprocessing, on DataFrames, dicts, NumPy arrays and files — the same predictions as
`mlpx predict`."""

from __future__ import annotations

import csv
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from _tabular_files import SPECIES, write_csv

import mlpx
from mlpx import cli
from mlpx.tabular import TabularError, UnseenCategoryWarning


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("tabular_model")
    rng = np.random.default_rng(0)
    n = 150
    y = np.arange(n) % 3
    X = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]])[y] + rng.normal(scale=0.5, size=(n, 2))
    colour = np.array(["red", "green"])[np.arange(n) % 2]
    write_csv(tmp / "train.csv", ["length", "width", "colour", "species"],
              [[f"{a:.4f}", f"{b:.4f}", c, SPECIES[t]] for (a, b), c, t in
               zip(X, colour, y, strict=True)])
    assert cli.main(["train", str(tmp / "train.csv"), "--target", "species", "--epochs", "20",
                     "--lr", "0.01", "--quiet", "--out", str(tmp / "m")]) == 0
    reg = rng.normal(size=(60, 2))
    write_csv(tmp / "reg.csv", ["a", "b", "t"],
              [[a, b, 3 * a - b + 10] for a, b in reg])
    assert cli.main(["train", str(tmp / "reg.csv"), "--target", "t", "--epochs", "2",
                     "--quiet", "--out", str(tmp / "r")]) == 0
    return tmp


def cli_predictions(trained: Path, data: Path, tmp_path: Path) -> list[str]:
    out = tmp_path / "p.csv"
    assert cli.main(["predict", str(trained / "m"), str(data), "--out", str(out)]) == 0
    with open(out, newline="") as f:
        return [r[0] for r in list(csv.reader(f))[1:]]


def test_predicts_on_a_file_as_mlpx_predict_does(trained, tmp_path):
    model = mlpx.TabularModel.load(trained / "m")
    labels = model.predict(trained / "train.csv")
    assert labels.tolist() == cli_predictions(trained, trained / "train.csv", tmp_path)
    assert model.classes_ == list(SPECIES) and model.task == "classification"
    assert model.feature_names_in_ == ["length", "width", "colour"]
    assert np.mean(labels == np.array(SPECIES)[np.arange(150) % 3]) > 0.9
    assert "TabularModel(target='species'" in repr(model)


def test_dataframe_in_any_column_order_and_with_nullable_dtypes(trained):
    pd = pytest.importorskip("pandas", reason="DataFrame input")
    model = mlpx.TabularModel.load(trained / "m")
    df = pd.read_csv(trained / "train.csv")
    expected = model.predict(trained / "train.csv")
    shuffled = df[["colour", "species", "width", "length"]]
    assert model.predict(shuffled).tolist() == expected.tolist()
    assert model.predict(df.convert_dtypes()).tolist() == expected.tolist()
    proba = model.predict_proba(df)
    assert proba.shape == (150, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(np.asarray(model.classes_)[proba.argmax(axis=1)], expected)


def test_dict_structured_and_plain_arrays(trained):
    model = mlpx.TabularModel.load(trained / "m")
    rows = {"length": [0.1, 4.2], "width": [0.0, 0.1], "colour": ["red", "green"]}
    from_dict = model.predict(rows)
    structured = np.array(list(zip(*rows.values(), strict=True)),
                          dtype=[("length", "f8"), ("width", "f8"), ("colour", "U8")])
    plain = np.array([[0.1, 0.0, "red"], [4.2, 0.1, "green"]], dtype=object)
    assert model.predict(structured).tolist() == from_dict.tolist()
    assert model.predict(plain).tolist() == from_dict.tolist()
    assert from_dict.tolist() == ["setosa", "versicolor"]
    with pytest.raises(TabularError, match="one column per feature"):
        model.predict(np.zeros((2, 5)))


def test_unseen_values_warn(trained):
    model = mlpx.TabularModel.load(trained / "m")
    with pytest.warns(UnseenCategoryWarning, match="'colour'.*'blue'"):
        model.predict({"length": [0.1], "width": [0.0], "colour": ["blue"]})


def test_schema_from_training_not_from_the_data(trained):
    """A text column given as numbers (e.g. a DataFrame of ints) is still read as text."""
    model = mlpx.TabularModel.load(trained / "m")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X = model.transform({"length": ["1.5"], "width": [2], "colour": ["red"]})
    assert X.shape == (1, 4)


def test_regression_values_and_no_probabilities(trained):
    model = mlpx.TabularModel.load(trained / "r")
    values = model.predict(trained / "reg.csv")
    assert values.dtype == np.float64 and values.shape == (60,)
    assert model.classes_ == [] and model.task == "regression"
    with pytest.raises(TabularError, match="regression model"):
        model.predict_proba(trained / "reg.csv")


def test_load_errors_are_tabular_errors(trained, tmp_path):
    with pytest.raises(TabularError, match="no model at"):
        mlpx.TabularModel.load(tmp_path / "nowhere")
    shutil.copytree(trained / "m", tmp_path / "m")
    shutil.copy(trained / "r" / "model.json", tmp_path / "m" / "model.json")
    with pytest.raises(TabularError, match="does not match its preprocessing file"):
        mlpx.TabularModel.load(tmp_path / "m")


def test_to_sklearn_is_a_frozen_pipeline_step(trained):
    pytest.importorskip("sklearn.frozen", reason="to_sklearn needs scikit-learn >= 1.6")
    pd = pytest.importorskip("pandas", reason="DataFrame input")
    from sklearn.base import clone
    from sklearn.metrics import accuracy_score
    from sklearn.pipeline import make_pipeline

    model = mlpx.TabularModel.load(trained / "m")
    df = pd.read_csv(trained / "train.csv")
    X, y = df.drop(columns="species"), df["species"]
    pipe = make_pipeline(model.to_sklearn()).fit(X, y)  # fit does nothing: trained already
    assert pipe.predict(X).tolist() == model.predict(X).tolist()
    assert pipe.score(X, y) == pytest.approx(accuracy_score(y, model.predict(X)))
    assert list(pipe.classes_) == list(SPECIES)
    assert np.allclose(pipe.predict_proba(X), model.predict_proba(X))
    assert clone(pipe).predict(X).tolist() == model.predict(X).tolist()
    reg = mlpx.TabularModel.load(trained / "r").to_sklearn()
    reg_df = pd.read_csv(trained / "reg.csv")
    assert -10 < reg.score(reg_df[["a", "b"]], reg_df["t"]) <= 1


def test_an_unreadable_preprocessing_file_is_a_tabular_error(trained, tmp_path):
    shutil.copytree(trained / "m", tmp_path / "m")
    (tmp_path / "m" / "model.json").unlink()
    (tmp_path / "m" / "model.json").mkdir()
    with pytest.raises(TabularError, match="cannot read"):
        mlpx.TabularModel.load(tmp_path / "m")


def test_numbers_mixed_with_text_in_a_dataframe_column(trained):
    """An object column holding 1.0 beside text: the number is the category "1"."""
    from mlpx.tabular.columns import column

    assert column(np.array([1.0, "red", 2, None], dtype=object)).tolist() == \
        ["1", "red", "2", None]
