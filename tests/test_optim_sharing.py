"""One optimiser object given to the fits of two models: each model trains with its own
state, as if it had been given a fresh optimiser."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx import optim


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(64, 5))
    return X, (X[:, 0] > 0).astype(np.int64)


def _model(seed):
    return mlpx.MLP([5, 12, 2], dtype="float64", seed=seed)


def _fit(model, opt, epochs=3):
    X, y = _data()
    return model.fit(X, y, loss="cross_entropy", optimizer=opt, epochs=epochs, batch_size=16,
                     verbose=0)


def _weights_equal(a, b):
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("make", [lambda: optim.Adam(lr=0.01),
                                  lambda: optim.SGD(lr=0.1, momentum=0.9),
                                  lambda: optim.Adagrad(lr=0.1)])
def test_a_shared_optimizer_object_does_not_carry_state_between_models(make):
    shared = make()
    a, b = _model(1), _model(2)
    _fit(a, shared)
    a_steps, a_state = a.optimizer_.step_count, a.optimizer_.state_dict()
    _fit(b, shared)
    alone = _model(2)
    _fit(alone, make())
    _weights_equal(b, alone)  # as with an optimiser of its own
    assert a.optimizer_ is not b.optimizer_
    assert b.optimizer_.step_count == alone.optimizer_.step_count == 12
    # the first model's optimiser still holds its own state: continuing it is unaffected
    assert a.optimizer_.step_count == a_steps
    for s, saved in zip(a.optimizer_.state_dict()["state"], a_state["state"], strict=True):
        for k in s:
            np.testing.assert_array_equal(s[k], saved[k])


def test_compile_with_another_models_optimizer_starts_fresh():
    a, b = _model(1), _model(2)
    _fit(a, optim.Adam(lr=0.01))
    b.compile(loss="cross_entropy", optimizer=a.optimizer_)
    assert b.optimizer_ is not a.optimizer_ and b.optimizer_.step_count == 0
    assert b.optimizer_.get_config() == a.optimizer_.get_config()


def test_refitting_the_same_model_keeps_its_optimizer_and_state():
    opt = optim.Adam(lr=0.01)
    a = _model(1)
    _fit(a, opt, epochs=1)
    _fit(a, opt, epochs=1)
    assert a.optimizer_ is opt and opt.step_count == 8
