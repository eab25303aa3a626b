"""Gradient accumulation: k mini-batches then one step equal one step on the joined batch,
in fit (gradient_accumulation_steps) and in the hand-written loop (backward twice)."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx


def _data(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)
    return X, y


def _fit(X, y, batch_size, k, optimizer="sgd", backend="cpu", **kw):
    model = mlpx.MLP([5, 12, 3], activation="tanh", dtype="float64", seed=0, backend=backend)
    hist = model.fit(X, y, loss="cross_entropy", optimizer=optimizer, lr=0.05, epochs=3,
                     batch_size=batch_size, verbose=0, gradient_accumulation_steps=k, **kw)
    return model, hist


def _assert_same_weights(a, b):
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(wa, wb, rtol=1e-10, atol=1e-12)


# 64 rows: whole groups; 76 rows: a last group of 2 batches (12 rows) in each epoch
@pytest.mark.parametrize("n", [64, 76])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_k_batches_then_one_step_equal_one_step_on_the_k_times_larger_batch(n, optimizer,
                                                                           backend):
    X, y = _data(n)
    big, big_hist = _fit(X, y, batch_size=32, k=1, optimizer=optimizer, backend=backend)
    acc, acc_hist = _fit(X, y, batch_size=8, k=4, optimizer=optimizer, backend=backend)
    _assert_same_weights(acc, big)
    np.testing.assert_allclose(acc_hist.history["loss"], big_hist.history["loss"], rtol=1e-12)
    assert acc.optimizer_.step_count == big.optimizer_.step_count == 3 * -(-n // 32)


def test_accumulation_takes_sample_weights_as_the_joined_batch_would():
    X, y = _data(76)
    w = np.random.default_rng(1).uniform(0.1, 3.0, size=76)
    big, _ = _fit(X, y, batch_size=32, k=1, sample_weight=w)
    acc, _ = _fit(X, y, batch_size=8, k=4, sample_weight=w)
    _assert_same_weights(acc, big)


def test_accumulation_differs_from_small_steps():
    X, y = _data(64)
    small, _ = _fit(X, y, batch_size=8, k=1)
    acc, _ = _fit(X, y, batch_size=8, k=4)
    assert not np.allclose(small.get_weights()[0], acc.get_weights()[0])


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_accumulation_steps_are_clear_errors(bad):
    X, y = _data(16)
    with pytest.raises(ValueError, match="gradient_accumulation_steps must be a positive"):
        _fit(X, y, batch_size=8, k=bad)


def test_accumulation_with_distributed_is_refused():
    X, y = _data(16)
    model = mlpx.MLP([5, 3], seed=0)
    with pytest.raises(ValueError, match="not supported with distributed=True"):
        model.fit(X, y, loss="cross_entropy", gradient_accumulation_steps=2, distributed=True,
                  verbose=0)


def _loop_step(model, xb, yb, scale=1.0):
    out = model.forward(xb, training=True)
    _, grad = model.compute_loss(out, yb, "cross_entropy")
    model.backward(grad * scale)


def test_a_second_backward_adds_to_the_pending_gradients(backend):
    X, y = _data(32)
    model = mlpx.MLP([5, 12, 3], activation="tanh", dtype="float64", seed=0, backend=backend)
    opt = mlpx.optim.SGD(model.parameters(), lr=0.1)
    _loop_step(model, X, y)
    once = [mlpx.to_numpy(p.grad).copy() for p in model.parameters()]
    _loop_step(model, X, y)
    for g, g1 in zip(model.parameters(), once, strict=True):
        np.testing.assert_allclose(mlpx.to_numpy(g.grad), 2 * g1, rtol=1e-12)
    opt.zero_grad()  # discards everything accumulated
    assert not any(np.any(mlpx.to_numpy(p.grad)) for p in model.parameters())


def test_the_hand_written_loop_accumulates_like_one_large_batch():
    X, y = _data(32)
    joined = mlpx.MLP([5, 12, 3], activation="tanh", dtype="float64", seed=0)
    opt = mlpx.optim.SGD(joined.parameters(), lr=0.1)
    _loop_step(joined, X, y)
    opt.step()

    model = mlpx.MLP([5, 12, 3], activation="tanh", dtype="float64", seed=0)
    opt = mlpx.optim.SGD(model.parameters(), lr=0.1)
    for xb, yb in mlpx.minibatches(X, y, batch_size=8, shuffle=False):
        _loop_step(model, xb, yb, scale=8 / 32)  # each batch's share of the mean
    opt.step()
    opt.zero_grad()
    _assert_same_weights(model, joined)


@pytest.mark.parametrize("k", [1, 4])
def test_fit_after_a_hand_written_backward_starts_from_fresh_gradients(k):
    X, y = _data(64)
    fresh, _ = _fit(X, y, batch_size=8, k=k)
    model = mlpx.MLP([5, 12, 3], activation="tanh", dtype="float64", seed=0)
    mlpx.optim.SGD(model.parameters(), lr=0.1)  # a hand-written loop's optimiser ...
    _loop_step(model, X, y)  # ... and gradients it never used
    model.fit(X, y, loss="cross_entropy", optimizer="sgd", lr=0.05, epochs=3, batch_size=8,
              verbose=0, gradient_accumulation_steps=k)
    _assert_same_weights(model, fresh)


def test_backward_can_be_told_to_add_or_replace():
    X, y = _data(32)
    model = mlpx.MLP([5, 12, 3], activation="tanh", dtype="float64", seed=0)
    out = model.forward(X, training=True)
    _, grad = model.compute_loss(out, y, "cross_entropy")
    model.backward(grad)
    once = [mlpx.to_numpy(p.grad).copy() for p in model.parameters()]
    model.forward(X, training=True)
    model.backward(grad, accumulate=True)
    for p, g1 in zip(model.parameters(), once, strict=True):
        np.testing.assert_allclose(mlpx.to_numpy(p.grad), 2 * g1, rtol=1e-12)
    model.forward(X, training=True)
    model.backward(grad)  # no hand-written loop: a backward replaces (the default rule)
    for p, g1 in zip(model.parameters(), once, strict=True):
        np.testing.assert_allclose(mlpx.to_numpy(p.grad), g1, rtol=1e-12)
