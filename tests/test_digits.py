"""scikit-learn's digits data set with the demo recipe (plain SGD) reaches >= 95 % test accuracy."""

from __future__ import annotations

import numpy as np

import mlpx
from mlpx.commands.demo import load_digits_split


def test_digits_reaches_95_percent_with_sgd(backend):
    X_tr, X_te, y_tr, y_te = load_digits_split(seed=0)
    assert X_tr.shape == (1347, 64) and X_te.shape == (450, 64) and X_tr.dtype == np.float32
    model = mlpx.MLP([64, 128, 64, 10], activation="relu", backend=backend, seed=0)
    hist = model.fit(X_tr, y_tr, loss="cross_entropy", optimizer="sgd", lr=0.05, epochs=30,
                     batch_size=32, validation_data=(X_te, y_te), verbose=0)
    result = model.evaluate(X_te, y_te)
    assert result["accuracy"] >= 0.95, result
    assert result["accuracy"] == hist.val_accuracy[-1]
    assert hist.loss[-1] < 0.1 * hist.loss[0]
    labels = model.predict(X_te).argmax(axis=1)
    assert np.mean(labels == y_te) == result["accuracy"]


def test_digits_split_is_standardised_and_stratified():
    X_tr, X_te, y_tr, y_te = load_digits_split(seed=0)
    np.testing.assert_allclose(X_tr.mean(axis=0), 0.0, atol=1e-5)
    # constant pixels (always 0 in training) stay 0 instead of dividing by zero
    assert np.isfinite(X_te).all()
    counts_tr, counts_te = np.bincount(y_tr), np.bincount(y_te)
    assert np.all(np.abs(counts_te / counts_tr - 1 / 3) < 0.05)
