"""The hand-written training loop of docs/training-loop.md: the same weights as `fit`, and an
error (never silence) for each way of getting it wrong."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx


def _data(n=96, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) + (X[:, 1] > 0.5)
    return X, y


@pytest.mark.parametrize("opt_name, kw", [("SGD", {"lr": 0.1}),
                                          ("SGD", {"lr": 0.05, "momentum": 0.9}),
                                          ("Adam", {"lr": 1e-2})])
def test_the_documented_loop_gives_the_weights_of_fit(backend, opt_name, kw):
    X, y = _data()
    fitted = mlpx.MLP([6, 16, 3], activation="tanh", backend=backend, seed=0)
    fitted.fit(X, y, loss="cross_entropy", optimizer=getattr(mlpx.optim, opt_name)(**kw),
               epochs=3, batch_size=32, shuffle=False, verbose=0)

    # the loop as docs/training-loop.md shows it
    model = mlpx.MLP([6, 16, 3], activation="tanh", backend=backend, seed=0)
    opt = getattr(mlpx.optim, opt_name)(model.parameters(), **kw)
    for _epoch in range(3):
        for xb, yb in mlpx.minibatches(X, y, batch_size=32, shuffle=False):
            out = model.forward(xb, training=True)
            loss, grad = model.compute_loss(out, yb, "cross_entropy")
            model.backward(grad)
            opt.step()
            opt.zero_grad()

    for a, b in zip(model.get_weights(), fitted.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert np.isfinite(loss)


def test_sgd_takes_parameters_positionally_or_by_keyword():
    model = mlpx.MLP([3, 4, 2], seed=0)
    for opt in (mlpx.optim.SGD(model.parameters(), lr=0.1),
                mlpx.optim.SGD(params=model.parameters(), lr=0.1),
                mlpx.optim.RMSprop(model.parameters(), lr=0.01),
                mlpx.optim.AdamW(model.parameters())):
        assert opt.params == model.parameters() and opt.ops is model.ops
    assert mlpx.optim.SGD(0.3).lr == 0.3  # the lr alone still works (bound later by fit)


def test_a_step_without_parameters_is_an_error():
    with pytest.raises(RuntimeError, match=r"no parameters.*SGD\(model.parameters\(\)"):
        mlpx.optim.SGD(lr=0.1).step()


def test_parameters_of_no_model_are_refused():
    with pytest.raises(TypeError, match=r"SGD\(model.parameters\(\), lr=0.1\)"):
        mlpx.optim.SGD([1, 2], lr=0.1)


def _step(model, X, y):
    out = model.forward(X, training=True)
    _, grad = model.compute_loss(out, y, "cross_entropy")
    model.backward(grad)


def test_a_second_backward_accumulates_and_zero_grad_discards():
    X, y = _data()
    model = mlpx.MLP([6, 8, 3], seed=0)
    opt = mlpx.optim.SGD(model.parameters(), lr=0.1)
    _step(model, X, y)
    _step(model, X, y)  # adds to the first gradients (PyTorch), see test_accumulation.py
    opt.zero_grad()  # discarding them is a choice, not an error
    assert all(not np.any(g) for g in (mlpx.to_numpy(p.grad) for p in model.parameters()))
    _step(model, X, y)
    opt.step()


def test_an_optimiser_of_another_model_is_an_error():
    X, y = _data()
    model, other = mlpx.MLP([6, 8, 3], seed=0), mlpx.MLP([6, 8, 3], seed=1)
    opt = mlpx.optim.SGD(other.parameters(), lr=0.1)
    before = other.get_weights()
    _step(model, X, y)
    with pytest.raises(RuntimeError, match="another model's parameters"):
        opt.step()
    for a, b in zip(other.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)  # nothing was updated


def test_a_wrong_input_width_in_forward_is_a_clear_error():
    model = mlpx.MLP([6, 8, 3], seed=0)
    with pytest.raises(ValueError, match=r"shape \(batch, 6\).*got shape \(4, 5\)"):
        model.forward(np.zeros((4, 5), np.float32))
    with pytest.raises(ValueError, match="x.reshape\\(1, -1\\)"):
        model.forward(np.zeros(6, np.float32))


def test_compute_loss_checks_the_targets():
    X, y = _data()
    model = mlpx.MLP([6, 8, 3], seed=0)
    out = model.forward(X)
    with pytest.raises(ValueError, match="96 outputs but 10 targets"):
        model.compute_loss(out, y[:10], "cross_entropy")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        model.compute_loss(out, y + 5, "cross_entropy")
