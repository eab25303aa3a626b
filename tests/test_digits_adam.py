"""The two-hidden-layer network on scikit-learn's digits reaches >= 96.5 % test accuracy with
Adam (64-128-64-10, ReLU, lr 1e-3, batch 32, 30 epochs; seeds 0-2) on the demo's stratified
split (scikit-learn's train_test_split rows for random_state=0; 450 test images, so one
image is 0.22 %)."""

from __future__ import annotations

import pytest

import mlpx

pytest.importorskip("sklearn")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_digits_two_hidden_layers_adam(backend, seed):
    from mlpx.commands.demo import load_digits_split

    X_tr, X_te, y_tr, y_te = load_digits_split(seed=0)
    model = mlpx.MLP([64, 128, 64, 10], activation="relu", backend=backend, seed=seed)
    hist = model.fit(X_tr, y_tr, loss="cross_entropy", optimizer="adam", lr=1e-3, epochs=30,
                     batch_size=32, verbose=0)
    assert hist.loss[-1] < 0.01  # Adam fits the training set
    acc = model.evaluate(X_te, y_te)["accuracy"]
    assert acc >= 0.965, f"test accuracy {acc:.4f}"
