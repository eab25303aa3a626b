"""Output probabilities of a few rows in one compiled call (mlpx.backends.proba): NumPy's
float64 formulas to the bit (sums in NumPy's pairwise order; exp within one unit in the last
place of the output, where NumPy has its own SIMD exp), taken by predict_proba and the
scikit-learn classifier on a few rows, with the same errors."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx import losses
from mlpx import model as model_module
from mlpx.backends import proba, proba_kernels
from mlpx.backends.cpu import CPUBackend
from mlpx.layers import Dense


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPX_CACHE_DIR", str(tmp_path))


def _z(rows, cols, dtype, seed=0, scale=5.0):
    return (np.random.default_rng(seed).standard_normal((rows, cols)) * scale).astype(dtype)


def _numpy_softmax64(z):
    z = z.astype(np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _same(got, want):
    """Equal bits, or (where NumPy's exp is not the C library's) a few units in the last
    place: with AVX-512, NumPy's float64 exp is its own vectorised one, which can differ from
    the C library's by one unit; normalising the row (a sum, a division) can double that."""
    assert got.dtype == want.dtype and got.shape == want.shape
    if not np.array_equal(got, want):
        np.testing.assert_array_max_ulp(got, want, maxulp=3)


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 15, 16, 17, 127, 128, 129, 136, 257, 1000, 4099])
def test_pairwise_sum_is_numpys_sum_to_the_bit(n):
    a = np.random.default_rng(n).standard_normal(n) * 10 ** np.random.default_rng(1).uniform(
        -8, 8, n)
    assert proba_kernels.pairwise_sum(a, n) == np.add.reduce(a)
    assert proba_kernels.pairwise_sum(a, n) == a.reshape(1, -1).sum(axis=1)[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 3, 10, 130, 300])
def test_kernels_compute_the_numpy_formulas(dtype, n):
    ops = CPUBackend()
    z = _z(64, n, dtype, seed=n)
    _same(proba.loss_proba_in_place(losses.CrossEntropyLoss(), z.copy()),
          losses.CrossEntropyLoss().proba(ops, z))
    _same(proba.loss_proba_in_place(losses.BCEWithLogitsLoss(), z.copy()),
          losses.BCEWithLogitsLoss().proba(ops, z))
    _same(proba.softmax64(z), _numpy_softmax64(z))
    scipy_special = pytest.importorskip("scipy.special")
    _same(proba.expit64(z), scipy_special.expit(z.astype(np.float64)))


def test_in_place_writes_over_the_outputs_and_leaves_other_losses_alone():
    z = _z(4, 5, np.float32)
    assert proba.loss_proba_in_place(losses.CrossEntropyLoss(), z) is z
    np.testing.assert_allclose(z.sum(axis=1), 1.0, rtol=1e-6)
    z = _z(4, 5, np.float32)
    assert proba.loss_proba_in_place(losses.NLLLoss(), z) is None  # exp, not softmax
    assert proba.loss_proba_in_place(losses.MSELoss(), z) is None

    class Tempered(losses.CrossEntropyLoss):
        def proba(self, ops, out):
            return super().proba(ops, out / 2)

    assert proba.loss_proba_in_place(Tempered(), z) is None


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_outputs_are_left_to_numpy(bad):
    z = _z(3, 4, np.float32)
    z[1, 2] = bad
    assert proba.softmax64(z) is None
    assert proba.loss_proba_in_place(losses.CrossEntropyLoss(), z.copy()) is None
    if bad != bad:
        assert proba.expit64(z) is None
        assert proba.loss_proba_in_place(losses.BCEWithLogitsLoss(), z.copy()) is None


@pytest.mark.parametrize("loss", ["cross_entropy", "bce", "nll"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_predict_proba_on_a_few_rows_takes_the_compiled_transform(loss, dtype, monkeypatch):
    last = "log_softmax" if loss == "nll" else None
    model = mlpx.Sequential([Dense(32, activation="relu"), Dense(6, activation=last)],
                            input_dim=20, dtype=dtype, seed=0)
    model.compile(loss=loss)
    calls = []
    real = model_module.loss_proba_in_place
    monkeypatch.setattr(model_module, "loss_proba_in_place",
                        lambda lo, out: calls.append(out.shape[0]) or real(lo, out))
    for rows in (1, 5, 64):
        x = _z(rows, 20, dtype, seed=rows, scale=1.0)
        got = model.predict_proba(x)
        want = model.loss_.proba(model.ops, model.predict(x))
        _same(got, want)
    assert calls == [1, 5, 64]
    model.predict_proba(_z(65, 20, dtype))  # above 64 rows: the general path
    assert calls == [1, 5, 64]


def test_predict_proba_nan_rows_get_the_general_error():
    model = mlpx.MLP([6, 4, 3], seed=0)
    model.compile(loss="cross_entropy")
    x = _z(2, 6, np.float32)
    x[1, 2] = np.nan
    with pytest.raises(ValueError, match="1 NaN or infinite") as proba_error:
        model.predict_proba(x)
    with pytest.raises(ValueError) as predict_error:
        model.predict(x)
    assert str(proba_error.value) == str(predict_error.value)


def test_overflowing_outputs_give_numpys_result():
    model = mlpx.Sequential([Dense(3)], input_dim=2, seed=0)
    model.compile(loss="cross_entropy")
    model.layers[0].W.data[...] = np.array([[3e38, -3e38, 0], [3e38, 0, 1]], np.float32)
    x = np.ones((2, 2), np.float32)  # outputs inf, -inf: NumPy's softmax gives NaN there
    with np.errstate(all="ignore"):
        want = model.loss_.proba(model.ops, model.predict(x))
        got = model.predict_proba(x)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_the_classifier_takes_the_compiled_transform_with_the_same_bits(n_classes,
                                                                       monkeypatch):
    sk = pytest.importorskip("mlpx.sklearn")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 12)).astype(np.float32)
    y = rng.integers(0, n_classes, 200)
    with pytest.warns(Warning):  # few iterations: not converged
        clf = sk.MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=0).fit(X, y)
    calls = []
    name = "softmax64" if n_classes > 2 else "expit64"
    real = getattr(sk, name)
    monkeypatch.setattr(sk, name, lambda z: calls.append(z.shape[0]) or real(z))
    for rows in (1, 7, 64):
        x = X[:rows]
        z = clf.model_.predict(x).astype(np.float64)
        if n_classes > 2:
            want = _numpy_softmax64(z)
        else:
            p = pytest.importorskip("scipy.special").expit(z)
            want = np.hstack([1.0 - p, p])
        _same(clf.predict_proba(x), want)
        assert clf.predict(x).tolist() == clf.classes_[want.argmax(axis=1)].tolist()
    assert calls == [1, 1, 7, 7, 64, 64]
    bad = X[:3].copy()
    bad[2, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        clf.predict_proba(bad)
    assert calls == [1, 1, 7, 7, 64, 64]
