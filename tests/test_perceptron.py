"""Rosenblatt's perceptron: the learning rule, convergence on separable data, label conventions."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx


def _separable(rng, n=200):
    X = rng.normal(size=(n, 3))
    w = np.array([1.5, -2.0, 0.5])
    margin = X @ w + 0.3
    keep = np.abs(margin) > 0.2  # a clear margin: the convergence theorem bounds the epochs
    return X[keep], (margin[keep] > 0).astype(int)


def test_converges_on_separable_data(rng):
    X, y = _separable(rng)
    p = mlpx.Perceptron(max_epochs=1000, seed=0).fit(X, y)
    assert p.converged_ and p.errors_[-1] == 0
    assert p.score(X, y) == 1.0
    assert p.errors_[0] > 0  # it did have to learn


def test_one_update_follows_the_rule():
    # w <- w + lr (t - y_hat) x ; b <- b + lr (t - y_hat), with step(0) = 1
    X = np.array([[2.0, -1.0]])
    p = mlpx.Perceptron(lr=0.5, max_epochs=1, shuffle=False).fit(X, [0])
    # start w = 0, b = 0 -> y_hat = step(0) = 1, t = 0: err = -1
    np.testing.assert_array_equal(p.w_, [-1.0, 0.5])
    assert p.b_ == -0.5
    assert p.errors_ == [1]


def test_minus_one_plus_one_labels(rng):
    X, y = _separable(rng)
    y_pm = np.where(y == 1, 1, -1)
    p = mlpx.Perceptron(max_epochs=1000, seed=0).fit(X, y_pm)
    assert set(np.unique(p.predict(X))) == {-1, 1}
    assert p.score(X, y_pm) == 1.0


def test_seeded_and_deterministic(rng):
    X, y = _separable(rng)
    a = mlpx.Perceptron(seed=3).fit(X, y)
    b = mlpx.Perceptron(seed=3).fit(X, y)
    np.testing.assert_array_equal(a.w_, b.w_)
    assert a.errors_ == b.errors_


def test_bad_input():
    with pytest.raises(ValueError, match="binary labels"):
        mlpx.Perceptron().fit(np.zeros((3, 2)), [0, 1, 2])
    with pytest.raises(ValueError, match="learning rate"):
        mlpx.Perceptron(lr=0.0)
    with pytest.raises(TypeError, match="learning rate must be a number"):
        mlpx.Perceptron(lr="fast")
    with pytest.raises(RuntimeError, match="not fitted"):
        mlpx.Perceptron().predict(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="NaN"):
        mlpx.Perceptron().fit(np.array([[np.nan, 1.0]]), [1])
    with pytest.raises(ValueError, match="different numbers of samples"):
        mlpx.Perceptron().fit(np.zeros((3, 2)), [0, 1])
    p = mlpx.Perceptron().fit(np.array([[1.0, 0.0], [0.0, 1.0]]), [0, 1])
    with pytest.raises(ValueError, match="has 3 features, but the model expects 2"):
        p.predict(np.zeros((1, 3)))
