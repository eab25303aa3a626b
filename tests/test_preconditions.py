"""Input conversion: pandas' nullable dtypes are numbers; missing values are a clear error."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.preconditions import as_host_or_device

pd = pytest.importorskip("pandas")


def _frame():
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"age": rng.integers(18, 80, 40), "score": rng.normal(size=40),
                       "member": rng.random(40) < 0.5})
    return df.convert_dtypes(), df  # Int64, Float64, boolean; and the NumPy-backed original


def test_nullable_columns_convert_like_their_numpy_twins():
    nullable, plain = _frame()
    assert str(nullable["age"].dtype) == "Int64" and str(nullable["member"].dtype) == "boolean"
    np.testing.assert_array_equal(as_host_or_device(nullable, "X"), plain.to_numpy(float))
    assert as_host_or_device(nullable["age"], "y").dtype == np.int64
    assert as_host_or_device(nullable["member"], "y").dtype == bool


def test_fit_predict_and_helpers_accept_nullable_frames():
    nullable, plain = _frame()
    target = (plain["score"] > 0).astype(int)
    results = []
    for X, y, w in ((nullable, target.convert_dtypes(), nullable["age"]),
                    (plain, target, plain["age"])):
        scaler = mlpx.Standardizer().fit(X)
        model = mlpx.MLP([3, 8, 2], dtype="float64", seed=0)
        model.fit(scaler.transform(X), y, loss="cross_entropy", epochs=2, verbose=0,
                  sample_weight=w)
        results.append((model.predict(scaler.transform(X)), model.evaluate(
            scaler.transform(X), y), mlpx.one_hot(y), scaler.inverse_transform(
                pd.DataFrame(scaler.transform(X)).convert_dtypes())))
    for a, b in zip(*results, strict=True):
        if isinstance(a, dict):
            assert a == pytest.approx(b, rel=1e-12)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-12)


def test_missing_values_in_nullable_columns_are_a_clear_error():
    nullable, _ = _frame()
    nullable.loc[3, "score"] = pd.NA
    nullable.loc[5, "age"] = pd.NA
    model = mlpx.MLP([3, 4, 2], seed=0)
    with pytest.raises(ValueError, match=r"X holds 2 missing value\(s\) \(pd.NA\) in "
                                         r"column\(s\) age, score; impute or drop"):
        model.fit(nullable, np.zeros(40, dtype=int), loss="cross_entropy", verbose=0)
    labels = pd.Series([0, 1, None, 1]).convert_dtypes()
    with pytest.raises(ValueError, match="labels holds 1 missing value"):
        mlpx.one_hot(labels)


def test_text_columns_are_still_refused_with_the_hint():
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).convert_dtypes()
    with pytest.raises(TypeError, match="convert strings or categories"):
        mlpx.MLP([2, 2], seed=0).predict(df)
