"""Data helpers: one_hot, Standardizer, train_test_split (scikit-learn's), minibatches."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx


def test_one_hot():
    out = mlpx.one_hot([2, 0, 1, 2])
    np.testing.assert_array_equal(out, [[0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    assert out.dtype == np.float32
    assert mlpx.one_hot(np.array([1.0, 0.0]), num_classes=4, dtype=np.float64).shape == (2, 4)
    assert mlpx.one_hot([]).shape == (0, 0)
    assert mlpx.one_hot([], num_classes=3).shape == (0, 3)
    with pytest.raises(ValueError, match="does not fit num_classes=2"):
        mlpx.one_hot([0, 2], num_classes=2)
    with pytest.raises(ValueError, match=">= 0"):
        mlpx.one_hot([-1, 0])
    with pytest.raises(ValueError, match="integer labels"):
        mlpx.one_hot([0.5])
    with pytest.raises(ValueError, match="1-D"):
        mlpx.one_hot([[0, 1]])


def test_one_hot_targets_train_like_labels():
    """cross_entropy with one-hot rows gives the same loss and gradients as integer labels."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 3))
    y = rng.integers(0, 4, size=10)
    model = mlpx.MLP([3, 5, 4], dtype="float64", seed=0)
    v1, g1 = model.loss_and_grad(X, y, loss="cross_entropy")
    v2, g2 = model.loss_and_grad(X, mlpx.one_hot(y, 4), loss="cross_entropy")
    assert v1 == pytest.approx(v2, rel=1e-14)
    for a, b in zip(g1, g2, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_standardizer_fit_on_train_apply_on_test():
    rng = np.random.default_rng(0)
    X_train = rng.normal(loc=[5.0, -2.0, 7.0], scale=[2.0, 0.5, 1.0], size=(500, 3))
    X_train[:, 2] = 7.0  # a constant feature: sigma = 0
    X_test = rng.normal(loc=[5.0, -2.0, 7.0], scale=[2.0, 0.5, 1.0], size=(50, 3))
    s = mlpx.Standardizer().fit(X_train)
    Z = s.transform(X_train)
    np.testing.assert_allclose(Z[:, :2].mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z[:, :2].std(axis=0), 1.0, rtol=1e-12)
    assert (Z[:, 2] == 0).all()  # centred, not divided by zero
    Zt = s.transform(X_test)
    assert np.isfinite(Zt).all()
    # the test data uses the training statistics, not its own
    np.testing.assert_allclose(Zt, (X_test - X_train.mean(0)) / np.where(
        X_train.std(0) > 0, X_train.std(0), 1.0))
    np.testing.assert_allclose(s.inverse_transform(Zt), X_test)
    assert s.transform(X_test.astype(np.float32)).dtype == np.float32
    assert s.transform(np.ones((2, 3), dtype=np.int64)).dtype == np.float64
    np.testing.assert_allclose(mlpx.Standardizer().fit_transform(X_train), Z)


def test_standardizer_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        mlpx.Standardizer().transform(np.zeros((2, 2)))
    s = mlpx.Standardizer().fit(np.random.default_rng(0).normal(size=(5, 3)))
    # the Standardizer is not a model: the message names what fixed the width
    with pytest.raises(
        ValueError, match="has 2 features, but the Standardizer was fitted on data with 3 features"
    ):
        s.transform(np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"inverse_transform needs shape \(n_samples, 3\)"):
        s.inverse_transform(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="NaN"):
        mlpx.Standardizer().fit(np.array([[np.nan, 1.0]]))


def test_train_test_split_seeded_and_complete():
    X = np.arange(100).reshape(50, 2)
    y = np.arange(50)
    a = mlpx.train_test_split(X, y, test_size=0.2, random_state=7)
    b = mlpx.train_test_split(X, y, test_size=0.2, random_state=7)
    c = mlpx.train_test_split(X, y, test_size=0.2, random_state=8)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[1], c[1])
    X_tr, X_te, y_tr, y_te = a
    assert len(X_te) == 10 and len(X_tr) == 40
    np.testing.assert_array_equal(np.sort(np.concatenate([y_tr, y_te])), y)  # a partition
    np.testing.assert_array_equal(X_tr[:, 0] // 2, y_tr)  # rows stay paired with labels


def test_train_test_split_stratified():
    y = np.array([0] * 80 + [1] * 16 + [2] * 4)
    X = np.arange(len(y)).reshape(-1, 1)
    _, X_te, y_tr, y_te = mlpx.train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    np.testing.assert_array_equal(np.bincount(y_te), [20, 4, 1])
    np.testing.assert_array_equal(np.bincount(y_tr), [60, 12, 3])
    np.testing.assert_array_equal(y[X_te[:, 0]], y_te)
    # one-hot targets stratify by row: the same split as the labels they encode
    Y = mlpx.one_hot(y, 3)
    _, X_te1, _, Y_te = mlpx.train_test_split(X, Y, test_size=0.25, random_state=0, stratify=Y)
    np.testing.assert_array_equal(Y_te.sum(axis=0), [20, 4, 1])
    np.testing.assert_array_equal(Y[X_te1[:, 0]], Y_te)


def test_minibatches_are_seeded_by_default():
    X = np.arange(40).reshape(-1, 1)
    y = np.arange(40)
    first = [yb for _, yb in mlpx.minibatches(X, y, batch_size=8)]
    again = [yb for _, yb in mlpx.minibatches(X, y, batch_size=8)]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))


def test_train_test_split_random_state_none_draws_from_numpy_global_state():
    """scikit-learn's convention: random_state=None uses (and advances) np.random's state."""
    X = np.arange(40).reshape(-1, 1)
    np.random.seed(3)
    a = mlpx.train_test_split(X)
    b = mlpx.train_test_split(X)
    assert not np.array_equal(a[1], b[1])  # a new split each call
    np.random.seed(3)
    np.testing.assert_array_equal(mlpx.train_test_split(X)[1], a[1])
    rs = np.random.RandomState(5)
    np.testing.assert_array_equal(
        mlpx.train_test_split(X, random_state=rs)[1],
        mlpx.train_test_split(X, random_state=np.random.RandomState(5))[1],
    )


def test_train_test_split_errors():
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        mlpx.train_test_split(np.zeros((4, 1)), np.zeros(4), test_size=1.5)
    with pytest.raises(ValueError, match="between 1 and 3"):
        mlpx.train_test_split(np.zeros((4, 1)), np.zeros(4), test_size=4)
    with pytest.raises(ValueError, match="different numbers of samples: 4, 3"):
        mlpx.train_test_split(np.zeros((4, 1)), np.zeros(3))
    with pytest.raises(ValueError, match="empty train split"):
        mlpx.train_test_split(np.zeros((2, 1)), np.zeros(2), test_size=0.9)
    with pytest.raises(ValueError, match="exceeds 1"):
        mlpx.train_test_split(np.zeros((10, 1)), test_size=0.6, train_size=0.6)
    with pytest.raises(ValueError, match="only 1 member"):
        mlpx.train_test_split(np.zeros((5, 1)), stratify=[0, 0, 0, 1, 2])
    with pytest.raises(ValueError, match="needs shuffle=True"):
        mlpx.train_test_split(np.zeros((4, 1)), shuffle=False, stratify=[0, 0, 1, 1])
    with pytest.raises(TypeError, match="random_state must be"):
        mlpx.train_test_split(np.zeros((4, 1)), random_state="seven")
    with pytest.raises(ValueError, match="at least one array"):
        mlpx.train_test_split()


def test_train_test_split_seed_is_a_deprecated_alias():
    X = np.arange(30).reshape(-1, 1)
    with pytest.warns(DeprecationWarning, match="random_state"):
        old = mlpx.train_test_split(X, seed=4)
    np.testing.assert_array_equal(old[1], mlpx.train_test_split(X, random_state=4)[1])
    y = np.array([0, 1] * 15)
    with pytest.warns(DeprecationWarning, match="stratify=y"):
        a = mlpx.train_test_split(X, y, random_state=0, stratify=True)
    b = mlpx.train_test_split(X, y, random_state=0, stratify=y)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    with pytest.raises(TypeError, match="not both"):
        mlpx.train_test_split(X, seed=1, random_state=1)


@pytest.mark.parametrize("case", range(40))
def test_train_test_split_gives_scikit_learns_split(case):
    """Same arguments, same random_state: the very same rows as scikit-learn."""
    sk = pytest.importorskip("sklearn.model_selection")
    rng = np.random.RandomState(case)
    n = int(rng.randint(12, 150))
    k = int(rng.randint(2, 5))
    X = rng.normal(size=(n, 3))
    y = np.repeat(np.arange(k), 3)
    y = np.concatenate([y, rng.randint(0, k, n - y.size)])
    kw: dict = {"random_state": case}
    kind = case % 5
    if kind == 0:
        kw["test_size"] = float(rng.uniform(0.1, 0.5))
    elif kind == 1:
        kw["train_size"] = int(rng.randint(k + 1, n - k - 1))
    elif kind == 2:
        kw.update(test_size=0.3, train_size=0.5)
    elif kind == 3:
        kw["shuffle"] = False
    if case % 2 == 0 and kind != 3:
        kw["stratify"] = y
    ours = mlpx.train_test_split(X, y, **kw)
    theirs = sk.train_test_split(X, y, **kw)
    assert len(ours) == len(theirs) == 4
    for u, v in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(u, v)


def test_train_test_split_keeps_pandas_and_list_types():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"a": range(10), "b": list("abcdefghij")}, index=range(100, 110))
    s = pd.Series(list("xxxxxyyyyy"), index=df.index)
    X_tr, X_te, y_tr, y_te, l_tr, l_te = mlpx.train_test_split(
        df, s, list(range(10)), test_size=0.4, random_state=1, stratify=s
    )
    assert isinstance(X_tr, pd.DataFrame) and isinstance(y_te, pd.Series)
    assert isinstance(l_tr, list) and len(l_te) == 4
    assert (X_tr.index == y_tr.index).all()  # rows stay paired
    assert sorted(y_te) == ["x", "x", "y", "y"]
    assert [i + 100 for i in l_tr] == list(X_tr.index)


def test_standardizer_on_a_1d_target():
    y = np.array([1.0, 2.0, 3.0, 6.0])
    s = mlpx.Standardizer().fit(y)
    z = s.transform(y)
    assert z.shape == (4,)  # stays 1-D
    np.testing.assert_allclose(z, (y - y.mean()) / y.std())
    np.testing.assert_allclose(s.inverse_transform(z), y)
    assert s.transform(y.reshape(-1, 1)).shape == (4, 1)  # a column works too
    np.testing.assert_allclose(mlpx.Standardizer().fit_transform(y), z)
    assert s.n_features_in_ == 1
    with pytest.raises(ValueError, match="fitted on data with 1 features"):
        s.transform(np.zeros((2, 2)))
    # a 1-D array given to a multi-feature Standardizer is an error, not a broadcast
    s3 = mlpx.Standardizer().fit(np.random.default_rng(0).normal(size=(5, 3)))
    with pytest.raises(ValueError, match="1-D"):
        s3.transform(np.zeros(3))


def test_standardizer_matches_scikit_learns_standard_scaler():
    skp = pytest.importorskip("sklearn.preprocessing")
    X = np.random.default_rng(0).normal([3, -1, 0], [2, 0.1, 1], size=(50, 3))
    X[:, 2] = 4.0
    ref = skp.StandardScaler().fit(X)
    ours = mlpx.Standardizer().fit(X)
    for attr in ("mean_", "var_", "scale_"):
        np.testing.assert_allclose(getattr(ours, attr), getattr(ref, attr), rtol=1e-12)
    np.testing.assert_allclose(ours.transform(X), ref.transform(X), rtol=1e-12, atol=1e-15)


def test_minibatches():
    X = np.arange(20).reshape(10, 2)
    y = np.arange(10)
    batches = list(mlpx.minibatches(X, y, batch_size=4, seed=0))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    seen = np.concatenate([b[1] for b in batches])
    np.testing.assert_array_equal(np.sort(seen), y)  # every sample exactly once
    assert not np.array_equal(seen, y)  # shuffled
    for xb, yb in batches:
        np.testing.assert_array_equal(xb[:, 0] // 2, yb)
    again = np.concatenate([b[1] for b in mlpx.minibatches(X, y, batch_size=4, seed=0)])
    np.testing.assert_array_equal(seen, again)  # seeded
    ordered = list(mlpx.minibatches(X, batch_size=3, shuffle=False, drop_last=True))
    assert [b[1] for b in ordered] == [None] * 3
    np.testing.assert_array_equal(np.concatenate([b[0] for b in ordered]), X[:9])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        list(mlpx.minibatches(X, y, batch_size=0))
    with pytest.raises(ValueError, match="different numbers of samples"):
        list(mlpx.minibatches(X, y[:3]))
