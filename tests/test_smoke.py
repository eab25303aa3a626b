"""Smoke test: a small MLP learns a linearly separable rule on every backend."""

from __future__ import annotations

import numpy as np

import mlpx


def test_fit_reduces_loss(backend):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(512, 8)).astype(np.float32)
    y = (X[:, 0] - X[:, 1] > 0).astype(np.int64)
    model = mlpx.MLP([8, 16, 2], activation="relu", backend=backend, seed=0)
    hist = model.fit(X, y, loss="cross_entropy", lr=0.1, epochs=5, batch_size=32, verbose=0)
    assert hist.loss[-1] < hist.loss[0] * 0.7
    assert model.evaluate(X, y)["accuracy"] > 0.9
