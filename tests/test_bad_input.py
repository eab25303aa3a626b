"""Bad input gets a clear error before any kernel runs; interrupted or diverging training
leaves a consistent model."""

from __future__ import annotations

import os
import signal
import warnings

import numpy as np
import pytest

import mlpx


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)  # 3 classes
    return X, y


@pytest.fixture
def model(backend):
    return mlpx.MLP([4, 8, 3], activation="tanh", backend=backend, seed=0)


def _fit(model, X, y, **kw):
    args = dict(loss="cross_entropy", lr=0.1, epochs=1, batch_size=8, verbose=0)
    args.update(kw)
    return model.fit(X, y, **args)


def _unchanged(model, before) -> bool:
    return all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before, strict=True))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_X(model, data, bad):
    X, y = data
    X = X.copy()
    X[3, 2] = bad
    before = model.get_weights()
    for call in (lambda: _fit(model, X, y), lambda: model.predict(X),
                 lambda: model.evaluate(X, y, loss="cross_entropy"),
                 lambda: model.loss_and_grad(X, y, loss="cross_entropy")):
        with pytest.raises(ValueError, match=r"X contains 1 NaN or infinite value"):
            call()
    assert _unchanged(model, before)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_y(backend, bad):
    model = mlpx.MLP([4, 2], backend=backend, seed=0)
    X = np.ones((5, 4))
    y = np.zeros((5, 2))
    y[1, 1] = bad
    with pytest.raises(ValueError, match="y contains 1 NaN or infinite"):
        model.fit(X, y, loss="mse", verbose=0)


def test_non_finite_validation_data(model, data):
    X, y = data
    Xv = X[:5].copy()
    Xv[0, 0] = np.nan
    with pytest.raises(ValueError, match="X_val contains 1 NaN"):
        _fit(model, X, y, validation_data=(Xv, y[:5]))


def test_float64_values_beyond_float32_range(model, data):
    X, y = data
    X = X.astype(np.float64)
    X[0, 0] = 1e300  # finite, but inf once cast to the model's float32
    with pytest.raises(ValueError, match="beyond the range of the model's float32"):
        _fit(model, X, y)
    with pytest.raises(ValueError, match="beyond the range"):
        model.predict(X)
    ok = mlpx.MLP([4, 3], dtype="float64", seed=0)
    assert np.isfinite(ok.predict(X[1:])).all()


def test_wrong_number_of_features(model, data):
    X, y = data
    for call in (lambda: _fit(model, X[:, :3], y), lambda: model.predict(X[:, :3])):
        with pytest.raises(ValueError, match="X has 3 features, but the model expects 4"):
            call()


def test_length_mismatch(model, data):
    X, y = data
    with pytest.raises(ValueError, match="different numbers of samples: 40 and 39"):
        _fit(model, X, y[:-1])


@pytest.mark.parametrize("labels", [[-1], [3], [7]])
def test_labels_out_of_range(model, data, labels):
    X, y = data
    y = y.copy()
    y[: len(labels)] = labels
    before = model.get_weights()
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        _fit(model, X, y)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        model.evaluate(X, y, loss="cross_entropy")
    assert _unchanged(model, before)


def test_non_integer_labels(model, data):
    X, y = data
    with pytest.raises(ValueError, match="integer class labels"):
        _fit(model, X, y + 0.5)


@pytest.mark.parametrize(
    "X", [np.array([["a", "b", "c", "d"]] * 3), np.array([[1, 2, 3, object()]] * 3)],
    ids=["strings", "objects"],
)
def test_non_numeric_X(model, X):
    with pytest.raises(TypeError, match="X must be numeric"):
        _fit(model, X, np.zeros(3, np.int64))


def test_ragged_X(model):
    with pytest.raises(TypeError, match="X could not be converted to a numeric array"):
        _fit(model, [[1.0, 2.0, 3.0, 4.0], [1.0]], [0, 1])


def test_non_numeric_y(model, data):
    X, _ = data
    with pytest.raises(TypeError, match="targets must be numeric"):
        _fit(model, X, np.array(["cat"] * len(X)))


def test_empty_X(model):
    with pytest.raises(ValueError, match=r"X is empty \(0 samples\)"):
        _fit(model, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    with pytest.raises(ValueError, match="X is empty"):
        model.predict(np.zeros((0, 4)))


def test_one_dimensional_X(model):
    with pytest.raises(ValueError, match=r"X must be 2-D.*reshape"):
        model.predict(np.zeros(4))


@pytest.mark.parametrize("bs,exc", [(0, ValueError), (-3, ValueError), (1.5, TypeError),
                                    (True, TypeError)])
def test_bad_batch_size(model, data, bs, exc):
    X, y = data
    with pytest.raises(exc, match="batch_size must be an integer >= 1|batch_size must be >= 1"):
        _fit(model, X, y, batch_size=bs)
    with pytest.raises(exc, match="batch_size"):
        model.predict(X, batch_size=bs)


@pytest.mark.parametrize("lr", [0.0, -0.1, np.nan, np.inf])
def test_bad_learning_rate(model, data, lr):
    X, y = data
    before = model.get_weights()
    with pytest.raises(ValueError, match="learning rate must be a positive finite number"):
        _fit(model, X, y, lr=lr)
    with pytest.raises(ValueError, match="learning rate must be a positive finite number"):
        mlpx.optim.SGD(lr=lr)
    assert _unchanged(model, before)


def test_learning_rate_not_a_number(model, data):
    X, y = data
    with pytest.raises(TypeError, match="learning rate must be a number"):
        _fit(model, X, y, lr="fast")


def test_bad_epochs_and_verbose(model, data):
    X, y = data
    with pytest.raises(ValueError, match="epochs must be >= 0"):
        _fit(model, X, y, epochs=-1)
    with pytest.raises(ValueError, match="verbose must be 0"):
        _fit(model, X, y, verbose=3)


def test_unknown_names_list_the_valid_ones(model, data):
    X, y = data
    with pytest.raises(ValueError, match=r"unknown activation 'rleu'; valid names are .*relu"):
        mlpx.Dense(3, activation="rleu")
    with pytest.raises(ValueError, match=r"unknown activation.*sigmoid.*tanh"):
        mlpx.MLP([2, 2], activation="sigmod")
    with pytest.raises(ValueError, match=r"unknown loss 'crossentropyy'; valid names are .*mse"):
        _fit(model, X, y, loss="crossentropyy")
    with pytest.raises(ValueError, match=r"unknown initialiser 'he'; valid names are .*he_normal"):
        mlpx.Dense(3, init="he")
    with pytest.raises(ValueError, match=r"unknown optimizer 'sgdd'; valid names are .*sgd"):
        _fit(model, X, y, optimizer="sgdd")
    with pytest.raises(ValueError, match=r"unknown backend 'gpu'; valid names are cpu, cuda"):
        mlpx.get_backend("gpu")


@pytest.mark.parametrize("out_act", ["softmax", "sigmoid"])
@pytest.mark.parametrize("loss", ["cross_entropy", "bce"])
def test_squashing_output_with_logits_loss_warns(backend, out_act, loss):
    model = mlpx.MLP([4, 3], output_activation=out_act, backend=backend, seed=0)
    X = np.random.default_rng(0).normal(size=(6, 4))
    y = np.array([0, 1, 2, 0, 1, 2]) if loss == "cross_entropy" else np.ones((6, 3))
    with pytest.warns(UserWarning, match=rf"expects logits.*applies '{out_act}'"):
        model.fit(X, y, loss=loss, epochs=1, verbose=0)


def test_logits_output_does_not_warn(model, data):
    X, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fit(model, X, y)


def test_nll_without_log_softmax_warns(model, data):
    X, y = data
    with pytest.warns(UserWarning, match="log-probabilities.*log_softmax"):
        _fit(model, X, y, loss="nll")


def test_step_activation_cannot_be_trained(backend, data):
    X, y = data
    model = mlpx.MLP([4, 5, 3], activation="step", backend=backend, seed=0)
    before = model.get_weights()
    with pytest.raises(ValueError, match="step.*cannot be trained by backpropagation.*Perceptron"):
        _fit(model, X, y)
    with pytest.raises(ValueError, match="step.*cannot be trained"):
        model.loss_and_grad(X, y, loss="cross_entropy")
    assert _unchanged(model, before)
    model.predict(X)  # inference with a step unit is fine


class _Recorder(mlpx.Callback):
    def __init__(self):
        self.weights: list[list[np.ndarray]] = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


@pytest.mark.parametrize("batch_size", [16, 64])
def test_diverging_training_raises_and_keeps_last_finite_epoch(backend, batch_size):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 4)).astype(np.float32)
    y = X @ rng.normal(size=(4, 1)).astype(np.float32)
    model = mlpx.MLP([4, 1], backend=backend, seed=0)
    rec = _Recorder()
    with np.errstate(all="ignore"), pytest.raises(mlpx.NonFiniteLossError,
                                                  match=r"epoch \d+.*last finite epoch"):
        model.fit(X, y, loss="mse", lr=100.0, epochs=500, batch_size=batch_size, verbose=0,
                  callbacks=[rec])
    assert len(rec.weights) >= 1, "the run should have had finite epochs first"
    after = model.get_weights()
    assert all(np.isfinite(w).all() for w in after)
    assert _unchanged(model, rec.weights[-1])
    assert len(model.history_.loss) == len(rec.weights)
    assert np.isfinite(model.history_.loss).all()


def _training_steps(model, monkeypatch, at_step: int, action):
    """Run `action()` inside optimiser step number `at_step` (1-based), before its update."""
    opt_step = mlpx.optim.SGD.step
    count = {"n": 0}

    def step(self):
        count["n"] += 1
        if count["n"] == at_step:
            action()
        opt_step(self)

    monkeypatch.setattr(mlpx.optim.SGD, "step", step)
    return count


class _Stop(Exception):
    pass


def test_ctrl_c_finishes_the_step_and_leaves_a_consistent_model(backend, data, monkeypatch):
    X, y = data
    model = mlpx.MLP([4, 8, 3], activation="tanh", backend=backend, seed=0)
    initial = model.get_weights()
    count = _training_steps(model, monkeypatch, 3, lambda: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        _fit(model, X, y, epochs=2)
    assert count["n"] == 3  # stopped right after the interrupted step, not later
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    interrupted = model.get_weights()
    assert all(np.isfinite(w).all() for w in interrupted)
    assert not _unchanged(model, initial)

    # replay: same seed, same data, stopped by an exception right after step 3 (a batch hook
    # raising keeps the completed step)
    monkeypatch.undo()
    replay = mlpx.MLP([4, 8, 3], activation="tanh", backend=backend, seed=0)
    with pytest.raises(_Stop):
        _fit(replay, X, y, epochs=2, callbacks=[_StopAfterBatch(2)])
    assert _unchanged(replay, interrupted)
    # and the weights are not those of step 2
    two = mlpx.MLP([4, 8, 3], activation="tanh", backend=backend, seed=0)
    with pytest.raises(_Stop):
        _fit(two, X, y, epochs=2, callbacks=[_StopAfterBatch(1)])
    assert not _unchanged(two, interrupted)


class _StopAfterBatch(mlpx.callbacks.Callback):
    def __init__(self, batch: int):
        self.batch = batch

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.batch:
            raise _Stop


def test_model_still_trains_after_an_interrupt(backend, data, monkeypatch):
    X, y = data
    model = mlpx.MLP([4, 8, 3], activation="tanh", backend=backend, seed=0)
    _training_steps(model, monkeypatch, 2, lambda: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt):
        _fit(model, X, y, epochs=3)
    monkeypatch.undo()
    hist = _fit(model, X, y, epochs=2)
    assert np.isfinite(hist.loss).all() and len(hist.loss) == 2


def test_set_weights_validation_leaves_weights_unchanged(model):
    before = model.get_weights()
    bad_shape = [w.copy() for w in before]
    bad_shape[-1] = np.zeros(5)
    with pytest.raises(ValueError, match=r"weight 3 \(b\) must have shape \(3,\)"):
        model.set_weights([w + 1 for w in before[:-1]] + [bad_shape[-1]])
    nan = [w + 1 for w in before]
    nan[2][0, 0] = np.nan
    with pytest.raises(ValueError, match="must be finite"):
        model.set_weights(nan)
    with pytest.raises(ValueError, match="set_weights got 3 arrays, the model has 4"):
        model.set_weights(before[:3])
    assert _unchanged(model, before)
