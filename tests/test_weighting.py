"""Sample and class weights: the weighted loss and its gradient (PyTorch, finite differences),
fit with weights against fit on repeated samples, class_weight, and bad weights."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx import losses
from mlpx.weighting import check_sample_weight, class_weights


def _case(name, rng, n=7, k=4):
    out = rng.normal(size=(n, k))
    if name == "cross_entropy":
        return out, rng.integers(0, k, size=n)
    if name == "cross_entropy_soft":
        t = rng.random((n, k))
        return out, t / t.sum(axis=1, keepdims=True)
    if name == "nll":
        z = out - np.log(np.exp(out).sum(axis=1, keepdims=True))
        return z, rng.integers(0, k, size=n)
    if name == "bce":
        return out, (rng.random((n, k)) < 0.5).astype(float)
    return out, rng.normal(size=(n, k))


def _torch_loss(name, out, target, w):
    import torch
    import torch.nn.functional as F

    o = torch.tensor(out, dtype=torch.float64, requires_grad=True)
    t = torch.tensor(target)
    if name in ("cross_entropy", "cross_entropy_soft"):
        per = F.cross_entropy(o, t, reduction="none")
    elif name == "nll":
        per = F.nll_loss(o, t, reduction="none")
    elif name == "bce":
        per = F.binary_cross_entropy_with_logits(o, t.double(), reduction="none").mean(dim=1)
    elif name == "mse":
        per = F.mse_loss(o, t.double(), reduction="none").mean(dim=1)
    else:
        per = F.l1_loss(o, t.double(), reduction="none").mean(dim=1)
    wt = torch.tensor(w)
    loss = (per * wt).sum() / wt.sum()
    loss.backward()
    return float(loss.detach()), o.grad.numpy()


@pytest.mark.parametrize("name", ["cross_entropy", "cross_entropy_soft", "nll", "bce", "mse",
                                  "l1"])
def test_weighted_loss_and_gradient_match_pytorch(ops, name):
    pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    out, target = _case(name, rng)
    w = rng.random(out.shape[0]) * 3
    w[2] = 0.0  # a sample that does not count
    loss = losses.get("cross_entropy" if name == "cross_entropy_soft" else name)
    grad = ops.empty(out.shape, np.float64)
    value = loss.weighted(ops, ops.asarray(out), ops.asarray(target), ops.asarray(w), grad)
    expected, expected_grad = _torch_loss(name, out, target, w)
    assert ops.to_float(value) == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(ops.to_numpy(grad), expected_grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["cross_entropy", "bce", "mse", "l1"])
def test_unit_weights_give_the_plain_mean(ops, name):
    rng = np.random.default_rng(2)
    out, target = _case(name, rng)
    loss = losses.get(name)
    g1, g2 = ops.empty(out.shape, np.float64), ops.empty(out.shape, np.float64)
    o, t = ops.asarray(out), ops.asarray(target)
    plain = loss(ops, o, t, g1)
    weighted = loss.weighted(ops, o, t, ops.asarray(np.full(out.shape[0], 2.5)), g2)
    assert ops.to_float(weighted) == pytest.approx(ops.to_float(plain), rel=1e-12)
    np.testing.assert_allclose(ops.to_numpy(g2), ops.to_numpy(g1), rtol=1e-12)


def test_weighted_parameter_gradients_match_finite_differences():
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(9, 3)), rng.integers(0, 3, size=9)
    w = rng.random(9) * 2
    model = mlpx.MLP([3, 5, 3], activation="tanh", dtype="float64", seed=0)
    _, grads = model.loss_and_grad(X, y, loss="cross_entropy", sample_weight=w)
    weights = model.get_weights()
    eps = 1e-6
    for i, W in enumerate(weights):
        for idx in [(0,) * W.ndim, tuple(s - 1 for s in W.shape)]:
            values = []
            for sign in (1, -1):
                shifted = [a.copy() for a in weights]
                shifted[i][idx] += sign * eps
                model.set_weights(shifted)
                values.append(model.loss_and_grad(X, y, loss="cross_entropy",
                                                  sample_weight=w)[0])
            model.set_weights(weights)
            assert grads[i][idx] == pytest.approx((values[0] - values[1]) / (2 * eps),
                                                  rel=1e-6, abs=1e-9)


def test_integer_weights_train_like_repeated_samples(backend):
    """Full-batch SGD: weight 2 is the same as showing the sample twice."""
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(12, 3)), rng.integers(0, 2, size=12)
    w = rng.integers(0, 4, size=12)
    w[0] = 1
    rep = np.repeat(np.arange(12), w)
    a = mlpx.MLP([3, 4, 2], activation="tanh", backend=backend, dtype="float64", seed=0)
    b = mlpx.MLP([3, 4, 2], activation="tanh", backend=backend, dtype="float64", seed=0)
    ha = a.fit(X, y, loss="cross_entropy", lr=0.5, epochs=3, batch_size=100, verbose=0,
               sample_weight=w)
    hb = b.fit(X[rep], y[rep], loss="cross_entropy", lr=0.5, epochs=3, batch_size=100,
               verbose=0)
    for p, q in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ha.loss, hb.loss, rtol=1e-12)
    np.testing.assert_allclose(ha.accuracy, hb.accuracy, rtol=1e-12)


def test_epoch_loss_is_the_weighted_mean_over_batches(backend):
    rng = np.random.default_rng(5)
    X, y = rng.normal(size=(10, 3)), rng.integers(0, 2, size=10)
    w = rng.random(10)
    model = mlpx.MLP([3, 4, 2], activation="tanh", backend=backend, dtype="float64", seed=0)
    start = model.evaluate(X, y, loss="cross_entropy", sample_weight=w)
    hist = model.fit(X, y, loss="cross_entropy", lr=1e-12, epochs=1, batch_size=3,
                     verbose=0, sample_weight=w)
    assert hist.loss[0] == pytest.approx(start["loss"], rel=1e-9)
    assert hist.accuracy[0] == pytest.approx(start["accuracy"], rel=1e-12)
    correct = (model.predict(X).argmax(axis=1) == y)
    assert start["accuracy"] == pytest.approx((w * correct).sum() / w.sum(), rel=1e-12)


def test_class_weight_is_a_per_class_sample_weight(backend):
    rng = np.random.default_rng(6)
    X, y = rng.normal(size=(20, 3)), rng.integers(0, 3, size=20)
    kw = dict(loss="cross_entropy", lr=0.1, epochs=2, batch_size=6, verbose=0)
    a = mlpx.MLP([3, 4, 3], backend=backend, dtype="float64", seed=0)
    b = mlpx.MLP([3, 4, 3], backend=backend, dtype="float64", seed=0)
    a.fit(X, y, class_weight={0: 1.0, 2: 4.0}, **kw)
    b.fit(X, y, sample_weight=np.array([1.0, 1.0, 4.0])[y], **kw)
    for p, q in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(p, q)


def test_balanced_class_weight_matches_scikit_learn():
    sklearn_utils = pytest.importorskip("sklearn.utils")
    y = np.array([0, 0, 0, 0, 1, 2, 2, 0])
    ours = class_weights("balanced", y, losses.get("cross_entropy"), 3)
    table = sklearn_utils.compute_class_weight("balanced", classes=np.arange(3), y=y)
    np.testing.assert_allclose(ours, table[y])


def test_class_weight_of_a_binary_bce_target_and_one_hot_rows():
    bce = class_weights({1: 5.0}, np.array([[0.0], [1.0], [1.0]]), losses.get("bce"), 1)
    np.testing.assert_array_equal(bce, [1.0, 5.0, 5.0])
    onehot = class_weights({2: 3.0}, np.eye(3)[[0, 2, 1]], losses.get("cross_entropy"), 3)
    np.testing.assert_array_equal(onehot, [1.0, 3.0, 1.0])


@pytest.mark.parametrize("weights, match", [
    (np.ones(3), r"shape \(4,\)"),
    (np.array([1.0, -1.0, 1.0, 1.0]), "non-negative"),
    (np.zeros(4), "zero for every sample"),
    (np.array([1.0, np.nan, 1.0, 1.0]), "NaN"),
    (np.array(["a", "b", "c", "d"]), "numbers"),
])
def test_bad_sample_weights_are_refused(weights, match):
    with pytest.raises((ValueError, TypeError), match=match):
        check_sample_weight(weights, 4)


def test_bad_weights_leave_the_model_untouched():
    rng = np.random.default_rng(7)
    X, y = rng.normal(size=(8, 3)), rng.integers(0, 2, size=8)
    model = mlpx.MLP([3, 2], seed=0)
    before = model.get_weights()
    with pytest.raises(ValueError, match="regression loss"):
        model.fit(X, rng.normal(size=(8, 2)), loss="mse", class_weight={0: 2.0}, verbose=0)
    with pytest.raises(ValueError, match="class indices"):
        model.fit(X, y, loss="cross_entropy", class_weight={"cat": 2.0}, verbose=0)
    with pytest.raises(ValueError, match="shape"):
        model.fit(X, y, loss="cross_entropy", sample_weight=np.ones(7), verbose=0)
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)
    assert model.history_ is None


def test_validation_weights_from_a_third_element_and_from_validation_split():
    rng = np.random.default_rng(8)
    X, y = rng.normal(size=(20, 3)), rng.integers(0, 2, size=20)
    w = rng.random(20)
    model = mlpx.MLP([3, 4, 2], dtype="float64", seed=0)
    h = model.fit(X[:15], y[:15], loss="cross_entropy", lr=1e-12, epochs=1, verbose=0,
                  validation_data=(X[15:], y[15:], w[15:]))
    expected = model.evaluate(X[15:], y[15:], sample_weight=w[15:])
    assert h.val_loss[0] == pytest.approx(expected["loss"], rel=1e-9)
    split = mlpx.MLP([3, 4, 2], dtype="float64", seed=0)
    h2 = split.fit(X, y, loss="cross_entropy", lr=1e-12, epochs=1, verbose=0,
                   validation_split=0.25, sample_weight=w, shuffle=False)
    assert h2.val_loss[0] == pytest.approx(expected["loss"], rel=1e-9)


@pytest.mark.parametrize("name", ["cross_entropy", "cross_entropy_soft", "nll", "bce", "mse",
                                  "l1"])
def test_a_batch_whose_weights_are_all_zero_contributes_nothing(ops, name):
    rng = np.random.default_rng(3)
    out, target = _case(name, rng)
    loss = losses.get("cross_entropy" if name == "cross_entropy_soft" else name)
    grad = ops.empty(out.shape, np.float64)
    value = loss.weighted(ops, ops.asarray(out), ops.asarray(target),
                          ops.asarray(np.zeros(out.shape[0])), grad)
    assert ops.to_float(value) == 0.0
    np.testing.assert_array_equal(ops.to_numpy(grad), 0.0)


@pytest.mark.parametrize("name", ["cross_entropy", "bce", "mse", "l1"])
def test_fit_skips_zero_weight_batches_in_the_update_and_the_epoch_mean(backend, name):
    rng = np.random.default_rng(4)
    k = 3
    X = rng.normal(size=(40, 5))
    _, y = _case(name, rng, n=40, k=k)
    w = np.ones(40)
    w[:8] = 0.0  # the whole first batch

    def fit(X, y, w):
        model = mlpx.MLP([5, 16, k], backend=backend, dtype="float64", seed=0)
        hist = model.fit(X, y, loss=name, optimizer="sgd", lr=0.1, epochs=2, batch_size=8,
                         shuffle=False, sample_weight=w, verbose=0)
        return model, hist.history["loss"]

    weighted, loss = fit(X, y, w)
    plain, plain_loss = fit(X[8:], y[8:], None)  # the same later batches, without the first
    assert np.all(np.isfinite(loss))
    np.testing.assert_allclose(loss, plain_loss, rtol=1e-12)
    for a, b in zip(weighted.get_weights(), plain.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
