"""mlpx.tabular.preprocessing: the training table's schema decides how later tables are
encoded; missing values are refused (every column named), dropped or imputed as scikit-learn's
SimpleImputer does; a text column cannot silently become thousands of inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from mlpx.tabular import (
    MAX_CATEGORIES,
    Preprocessing,
    TabularError,
    UnseenCategoryWarning,
    drop_missing_rows,
)


def table(**cols) -> dict[str, np.ndarray]:
    out = {}
    for k, v in cols.items():
        v = list(v)
        text = any(isinstance(x, str) for x in v)
        out[k] = np.array(v, dtype=object) if text else np.array(
            [np.nan if x is None else x for x in v], dtype=np.float64)
    return out


def test_unseen_category_warns_and_encodes_as_zeros():
    pre = Preprocessing.fit(table(c=["a", "b", "a", "b"], y=[0, 1, 0, 1]), "y")
    with pytest.warns(UnseenCategoryWarning, match=r"column 'c' holds 1 value.*'zz'.*1 row: 2"):
        X = pre.features_of(table(c=["a", "zz"]))
    raw = pre.encode(table(c=["a", "zz"]))
    assert raw.tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert X.shape == (2, 2)


def test_known_categories_do_not_warn():
    pre = Preprocessing.fit(table(c=["a", "b", "a", "b"], y=[0, 1, 0, 1]), "y")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pre.features_of(table(c=["b", "a"]))


def test_every_column_with_missing_values_is_named():
    t = table(a=[1, None, 3, 4], b=["x", "y", None, None], c=[1, 2, 3, 4], y=[0, 1, 0, 1])
    with pytest.raises(TabularError) as e:
        Preprocessing.fit(t, "y")
    msg = str(e.value)
    assert "'a' (1 row: 2)" in msg and "'b' (2 rows: 3, 4)" in msg and "'c'" not in msg
    assert "--missing mean|median|most_frequent" in msg and "--missing drop" in msg


@pytest.mark.parametrize("strategy, numeric_fill", [("mean", 8 / 3), ("median", 3.0),
                                                      ("most_frequent", 1.0)])
def test_imputation_matches_scikit_learn(strategy, numeric_fill):
    t = table(a=[1, None, 3, 4, 1], b=["x", "y", None, "y", "x"], y=[0, 1, 0, 1, 0])
    rows = np.array([0, 1, 2, 3])  # the statistics come from the training rows only
    pre = Preprocessing.fit(t, "y", missing=strategy).fit_statistics(t, rows)
    a, b = pre.features
    assert a.fill == pytest.approx(numeric_fill)
    assert b.fill == "y"  # text columns: the most frequent value
    sklearn = pytest.importorskip("sklearn.impute", reason="compares with SimpleImputer")
    ref = sklearn.SimpleImputer(strategy=strategy).fit(t["a"][rows].reshape(-1, 1))
    assert a.fill == pytest.approx(ref.statistics_[0])
    encoded = pre.encode(t)
    assert encoded[1, 0] == pytest.approx(numeric_fill)
    assert encoded[2, 1:].tolist() == [0.0, 1.0]  # b's missing cell is "y"


def test_fill_values_are_applied_to_new_tables():
    t = table(a=[1.0, 2.0, 3.0, 6.0], y=[0, 1, 0, 1])
    pre = Preprocessing.fit(t, "y", missing="median")
    X = pre.features_of(table(a=[None]))
    assert X[0, 0] == pytest.approx((2.5 - pre.mean[0]) / pre.scale[0])


def test_a_model_without_fill_values_refuses_missing_cells_at_prediction():
    pre = Preprocessing.fit(table(a=[1.0, 2.0, 3.0], y=[0, 1, 0]), "y")
    with pytest.raises(TabularError, match="missing values in 'a'.*without --missing"):
        pre.features_of(table(a=[1.0, None]))


def test_drop_missing_rows():
    t = table(a=[1, None, 3], b=["x", "y", None], y=[0, 1, 0])
    kept, n = drop_missing_rows(t, ["a", "b"])
    assert n == 2 and kept["a"].tolist() == [1.0] and kept["y"].tolist() == [0.0]


def test_many_distinct_text_values_are_refused_with_the_fix():
    n = 5 * (MAX_CATEGORIES + 50)
    t = table(city=[f"c{i % (MAX_CATEGORIES + 50)}" for i in range(n)], y=[i % 2 for i in range(n)])
    with pytest.raises(TabularError) as e:
        Preprocessing.fit(t, "y")
    msg = str(e.value)
    assert f"{MAX_CATEGORIES + 50} distinct values" in msg
    assert "--drop city" in msg and "--max-categories" in msg


def test_identifiers_are_refused():
    t = table(id=[f"user{i}" for i in range(300)], y=[i % 2 for i in range(300)])
    with pytest.raises(TabularError, match="identifier.*--drop id"):
        Preprocessing.fit(t, "y")


def test_max_categories_keeps_the_most_frequent_and_one_other_input():
    values = ["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d", "e"]
    t = table(c=values, y=[i % 2 for i in range(len(values))])
    pre = Preprocessing.fit(t, "y", max_categories=3)
    f = pre.features[0]
    assert f.categories == ["a", "b"] and f.other and pre.n_inputs == 3
    raw = pre.encode(table(c=["a", "c", "zz"]))
    assert raw.tolist() == [[1, 0, 0], [0, 0, 1], [0, 0, 1]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # values outside the kept ones go to "other": no warning
        pre.features_of(table(c=["zz"]))


def test_target_did_you_mean_and_every_column_listed():
    names = [f"col{i}" for i in range(14)] + ["Species"]
    t = {n: np.zeros(3) for n in names}
    with pytest.raises(TabularError) as e:
        Preprocessing.fit(t, "species")
    msg = str(e.value)
    assert "did you mean 'Species'" in msg and all(n in msg for n in names)
    with pytest.raises(TabularError, match="did you mean 'col1'"):
        Preprocessing.fit(t, "col1x")


def test_kinds_are_the_training_schema():
    t = table(c=["1", "2", "4+"], x=[1.0, 2.0, 3.0], y=["p", "q", "p"])
    pre = Preprocessing.fit(t, "y")
    assert pre.kinds() == {"c": "categorical", "x": "numeric", "y": "categorical"}
    numeric_target = Preprocessing.fit(table(x=[1.0, 2.0, 3.0], y=[0, 1, 0]), "y")
    assert "y" not in numeric_target.kinds()  # optional at prediction: read as it comes


def test_inf_is_refused_not_imputed():
    t = table(a=[1.0, np.inf, 2.0], y=[0, 1, 0])
    with pytest.raises(TabularError, match="non-finite"):
        Preprocessing.fit(t, "y", missing="mean")


def test_booleans_match_whatever_their_case():
    """A CSV's True/False and a DataFrame's booleans (read as true/false) are the same values."""
    pre = Preprocessing.fit(table(flag=["True", "False", "True", "False"], y=[0, 1, 0, 1]), "y")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        raw = pre.encode({"flag": np.array(["true", "false", "TRUE"], dtype=object)})
    assert raw.tolist() == [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]


def test_many_text_columns_together_are_refused_when_too_wide():
    from mlpx.tabular.preprocessing import MAX_ONE_HOT_INPUTS

    per_column = 150
    n_columns = MAX_ONE_HOT_INPUTS // per_column + 1
    n = 2 * per_column
    cols = {f"t{j}": [f"v{i % per_column}" for i in range(n)] for j in range(n_columns)}
    t = table(**cols, y=[i % 2 for i in range(n)])
    with pytest.raises(TabularError, match=r"one-hot encode to \d+ inputs.*'t0' \(150\)"):
        Preprocessing.fit(t, "y")
    assert Preprocessing.fit(t, "y", max_categories=10).n_inputs == 10 * n_columns


def test_every_absent_feature_is_named_with_its_near_miss():
    pre = Preprocessing.fit(table(length=[1.0, 2.0], width=[1.0, 3.0], y=[0, 1]), "y")
    with pytest.raises(TabularError) as e:
        pre.features_of(table(Length=[1.0], other=[2.0]))
    msg = str(e.value)
    assert "feature columns 'length', 'width' are missing" in msg
    assert "did you mean 'Length' for 'length'?" in msg and "the data has Length, other" in msg


def test_a_feature_present_in_the_data_is_not_offered_as_a_near_miss():
    """iris without its petal columns: 'sepal_length' is there as itself, not a misspelt
    'petal_length'."""
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    pre = Preprocessing.fit(table(**{n: [1.0, 2.0] for n in names}, y=[0, 1]), "y")
    with pytest.raises(TabularError) as e:
        pre.features_of(table(sepal_length=[1.0], sepal_width=[2.0], Petal_Width=[3.0]))
    msg = str(e.value)
    assert "'petal_length', 'petal_width' are missing from the data (did you mean" in msg
    assert "(did you mean 'Petal_Width' for 'petal_width'?)" in msg
    assert "'sepal_length' for" not in msg and "'sepal_width' for" not in msg


def test_a_table_read_without_the_schema_is_encoded_with_it():
    pre = Preprocessing.fit(table(rooms=["1", "2", "4+", "1"], x=[1.0, 2.0, 3.0, 4.0],
                                  y=[0, 1, 0, 1]), "y")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X = pre.features_of(table(rooms=[1.0, 2.0], x=["2.5", "1"]))  # kinds as a file says
    assert np.array_equal(X, pre.features_of(table(rooms=["1", "2"], x=[2.5, 1.0])))
    with pytest.raises(TabularError, match="'x' was numeric in training but holds 'big'"):
        pre.features_of(table(rooms=["1"], x=["big"]))
