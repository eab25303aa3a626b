"""XOR needs a hidden layer: a 2-2-1 sigmoid network learns it, Rosenblatt's perceptron cannot."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
XOR = np.array([0, 1, 1, 0])
AND = np.array([0, 0, 0, 1])
OR = np.array([0, 1, 1, 1])


@pytest.mark.parametrize("seed,lr", [(1, 5.0), (2, 2.0)])
def test_2_2_1_sigmoid_network_learns_xor(backend, seed, lr):
    # 2-2-1 has local minima (about a third of seeds solve XOR at these settings); the
    # seeds are fixed so the test is deterministic
    model = mlpx.MLP([2, 2, 1], activation="sigmoid", backend=backend, seed=seed)
    hist = model.fit(X, XOR.astype(np.float32), loss="bce", lr=lr, epochs=1500, batch_size=4,
                     verbose=0)
    assert hist.loss[-1] < 0.01 < hist.loss[0]
    np.testing.assert_array_equal(model.predict(X)[:, 0] > 0, XOR.astype(bool))
    assert model.evaluate(X, XOR.astype(np.float32))["accuracy"] == 1.0
    proba = model.predict_proba(X)[:, 0]
    assert (np.abs(proba - XOR) < 0.05).all()


def test_wider_hidden_layer_learns_xor_from_most_seeds(backend):
    solved = 0
    for seed in range(10):
        model = mlpx.MLP([2, 4, 1], activation="sigmoid", backend=backend, seed=seed)
        model.fit(X, XOR, loss="bce", lr=5.0, epochs=1500, batch_size=4, verbose=0)
        solved += bool(((model.predict(X)[:, 0] > 0) == XOR.astype(bool)).all())
    assert solved >= 8


def test_perceptron_cannot_learn_xor():
    p = mlpx.Perceptron(lr=1.0, max_epochs=100, seed=0).fit(X, XOR)
    assert not p.converged_
    assert len(p.errors_) == 100 and min(p.errors_) > 0  # never a clean epoch
    assert p.score(X, XOR) < 1.0


@pytest.mark.parametrize("target", [AND, OR], ids=["and", "or"])
def test_perceptron_learns_linearly_separable_gates(target):
    p = mlpx.Perceptron(lr=1.0, max_epochs=100, seed=0).fit(X, target)
    assert p.converged_ and p.errors_[-1] == 0
    np.testing.assert_array_equal(p.predict(X), target)
    assert p.score(X, target) == 1.0


def test_default_init_solves_xor_on_the_reference_recipe():
    """2-2-1, sigmoid on both layers, zero biases, MSE, full-batch SGD lr 2, 5000 epochs: the
    recipe docs/guide.md's solve rate is measured on (89% of 200 seeds with the defaults; Xavier
    with gain 4 for sigmoid, the former default, 41.5%)."""
    Y = XOR.astype(np.float32)[:, None]
    solved = []
    for seed in range(6):
        model = mlpx.MLP([2, 2, 1], activation="sigmoid", output_activation="sigmoid",
                         seed=seed)
        assert (model.get_weights()[1] == 0).all() and (model.get_weights()[3] == 0).all()
        model.fit(X, Y, loss="mse", optimizer="sgd", lr=2.0, epochs=5000, batch_size=4,
                  verbose=0)
        solved.append(bool(((model.predict(X)[:, 0] > 0.5) == XOR.astype(bool)).all()))
    assert sum(solved) >= 5, solved
