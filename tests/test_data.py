"""Data helpers: one_hot, Standardizer, seeded (stratified) train_test_split, minibatches."""

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
    a = mlpx.train_test_split(X, y, test_size=0.2, seed=7)
    b = mlpx.train_test_split(X, y, test_size=0.2, seed=7)
    c = mlpx.train_test_split(X, y, test_size=0.2, seed=8)
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
    _, X_te, y_tr, y_te = mlpx.train_test_split(X, y, test_size=0.25, seed=0, stratify=True)
    np.testing.assert_array_equal(np.bincount(y_te), [20, 4, 1])
    np.testing.assert_array_equal(np.bincount(y_tr), [60, 12, 3])
    np.testing.assert_array_equal(y[X_te[:, 0]], y_te)
    # one-hot targets stratify by row: the same split as the labels they encode
    Y = mlpx.one_hot(y, 3)
    _, X_te1, _, Y_te = mlpx.train_test_split(X, Y, test_size=0.25, seed=0, stratify=True)
    np.testing.assert_array_equal(Y_te.sum(axis=0), [20, 4, 1])
    np.testing.assert_array_equal(Y[X_te1[:, 0]], Y_te)


def test_split_and_minibatches_are_seeded_by_default():
    X = np.arange(40).reshape(-1, 1)
    y = np.arange(40)
    a, b = mlpx.train_test_split(X, y), mlpx.train_test_split(X, y)
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0][:, 0], np.sort(a[0][:, 0]))  # still shuffled
    first = [yb for _, yb in mlpx.minibatches(X, y, batch_size=8)]
    again = [yb for _, yb in mlpx.minibatches(X, y, batch_size=8)]
    np.testing.assert_array_equal(np.concatenate(first), np.concatenate(again))


def test_train_test_split_errors():
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        mlpx.train_test_split(np.zeros((4, 1)), np.zeros(4), test_size=1.5)
    with pytest.raises(ValueError, match="different numbers of samples"):
        mlpx.train_test_split(np.zeros((4, 1)), np.zeros(3))
    with pytest.raises(ValueError, match="empty split"):
        mlpx.train_test_split(np.zeros((2, 1)), np.zeros(2), test_size=0.1)


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
