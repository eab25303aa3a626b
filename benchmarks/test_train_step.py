"""Throughput of one training step (pytest-benchmark). `make test` runs these once, untimed."""

import numpy as np
import pytest

import mlpx


@pytest.mark.parametrize("batch", [256, 1024])
def test_train_step_cpu(benchmark, batch):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(batch, 784)).astype(np.float32)
    y = rng.integers(0, 10, size=batch)
    model = mlpx.MLP([784, 1024, 1024, 10], activation="relu", backend="cpu", seed=0)
    model.fit(X, y, loss="cross_entropy", lr=0.01, epochs=1, batch_size=batch, verbose=0)
    benchmark(model.fit, X, y, epochs=1, batch_size=batch, verbose=0, shuffle=False)
    assert np.isfinite(model.history_.loss[-1])
