"""mlpx.fit_plan: a fit's plan is made from its arguments without changing the model."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.fit_plan import plan_fit


def _data(n=40, d=4):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, d)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64)


def test_planning_changes_nothing_and_plans_the_run():
    X, y = _data()
    model = mlpx.Sequential([mlpx.Dense(8, activation="relu"), mlpx.Dense(2)], seed=0)
    plan = plan_fit(model, X, y, loss="cross_entropy", optimizer="adam", lr=0.01, epochs=3,
                    batch_size=2048, validation_split=0.25, verbose=0)
    assert not model.built and model.loss_ is None and model.optimizer_ is None
    assert model.trainer_ is None
    assert (plan.epochs, plan.batch_size, plan.fit_index, plan.epoch, plan.step) == (
        3, 2048, 0, 0, 0)
    assert plan.build_dim == 4 and plan.data[0].shape == (30, 4) and plan.val[0].shape == (10, 4)
    assert plan.validation_batch_size == 2048  # never below 1024, else the batch size
    assert plan_fit(model, X, y, loss="cross_entropy", batch_size=16).validation_batch_size == 1024


def test_a_later_fit_is_planned_with_the_next_fit_index():
    X, y = _data()
    model = mlpx.MLP([4, 8, 2], seed=0)
    model.fit(X, y, loss="cross_entropy", epochs=1, verbose=0)
    assert plan_fit(model, X, y, epochs=1).fit_index == 1


@pytest.mark.parametrize("bad, error, message", [
    ({"epochs": -1}, ValueError, "epochs must be >= 0"),
    ({"batch_size": 1.5}, TypeError, "batch_size must be an integer"),
    ({"verbose": 3}, ValueError, "verbose must be 0"),
    ({"validation_freq": [0]}, TypeError, "validation_freq must be a positive integer"),
    ({"validation_split": 0.2, "validation_data": (np.zeros((2, 4)), np.zeros(2))},
     ValueError, "not both"),
    # the class, not an object: it has every hook, so only this check catches it
    ({"callbacks": [mlpx.EarlyStopping]}, TypeError,
     r"callbacks=\[EarlyStopping\] holds a class; pass an object: "
     r"callbacks=\[EarlyStopping\(...\)\]"),
])
def test_a_bad_argument_is_named_before_anything_changes(bad, error, message):
    X, y = _data()
    model = mlpx.MLP([4, 8, 2], seed=0)
    before = model.get_weights()
    with pytest.raises(error, match=message):
        plan_fit(model, X, y, loss="cross_entropy", **bad)
    assert model.loss_ is None
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
