"""Residual blocks, PReLU layers and the layer registry."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.layers import BatchNorm, Dense, Dropout, LayerNorm, PReLU, Residual
from mlpx.layers.registry import layer_from_spec, layer_spec


def test_residual_adds_the_input():
    inner = Dense(4, init="zeros")
    model = mlpx.Sequential([Residual([inner])], input_dim=4, dtype="float64", seed=0)
    X = np.random.default_rng(0).normal(size=(3, 4))
    np.testing.assert_array_equal(model.predict(X), X)  # f(x) = 0 -> identity
    model.set_weights([np.eye(4), np.ones(4)])
    np.testing.assert_allclose(model.predict(X), 2 * X + 1)


def test_residual_width_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match=r"keep the width.*4 features.*output 3.*Dense\(4\)"):
        mlpx.Sequential([Residual([Dense(8), Dense(3)])], input_dim=4)


def test_residual_parameters_children_and_weights_order():
    a, b = Dense(6, activation="relu"), Dense(4)
    block = Residual([a, b])
    model = mlpx.Sequential([Dense(4), block, Dense(2)], input_dim=3, seed=0)
    assert block.children() == [a, b]
    assert [w.shape for w in model.get_weights()] == [
        (3, 4), (4,), (4, 6), (6,), (6, 4), (4,), (4, 2), (2,)
    ]
    assert model.count_params() == 12 + 4 + 24 + 6 + 24 + 4 + 8 + 2


def test_residual_moves_between_backends():
    model = mlpx.Sequential(
        [Dense(5), Residual([Dense(5, activation="tanh"), BatchNorm(), Dense(5)]), Dense(2)],
        input_dim=3, dtype="float64", seed=0,
    )
    X = np.random.default_rng(1).normal(size=(8, 3))
    model.forward(model.ops.asarray(X), training=True)  # update running statistics
    before = model.predict(X)
    model.to("reference")
    inner = model.layers[1].layers
    assert all(layer.ops is model.ops for layer in inner)
    np.testing.assert_allclose(model.predict(X), before, rtol=1e-13)  # tanh: last-bit diffs


def test_prelu_layer_learns_slopes():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 1))
    y = np.where(X > 0, X, -0.5 * X)  # |x| on one side, slope -0.5 on the other
    model = mlpx.Sequential([PReLU()], input_dim=1, dtype="float64", seed=0)
    model.fit(X, y, loss="mse", lr=0.5, epochs=30, batch_size=64, verbose=0)
    np.testing.assert_allclose(model.get_weights()[0], [-0.5], atol=1e-3)


@pytest.mark.parametrize(
    "layer",
    [
        Dense(3, activation=mlpx.activations.LeakyReLU(0.2), init="he_uniform", use_bias=False),
        Dropout(0.3, name="drop"), BatchNorm(momentum=None, eps=1e-3), LayerNorm(eps=1e-4),
        PReLU(init=0.1), Residual([Dense(4, activation="gelu"), LayerNorm(), Dense(4)]),
    ],
    ids=lambda layer: type(layer).__name__,
)
def test_layers_round_trip_through_their_config(layer):
    spec = layer_spec(layer)
    again = layer_from_spec(spec)
    assert type(again) is type(layer)
    assert layer_spec(again) == spec


def test_unknown_layer_class_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown layer class 'Conv2d'.*register_layer"):
        layer_from_spec({"class": "Conv2d", "config": {}})

    class Custom(mlpx.Layer):
        pass

    with pytest.raises(TypeError, match="not registered"):
        layer_spec(Custom())
