"""Model API: predict / predict_proba / evaluate, the weight layout, dtypes, building."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx

_special = pytest.importorskip("scipy.special", reason="SciPy gives the reference functions")
expit, softmax = _special.expit, _special.softmax


def _numpy_forward(weights, X, act=np.tanh):
    """The network written out in NumPy from the public weight layout (W (in, out), b)."""
    a = np.asarray(X, dtype=np.float64)
    for i in range(0, len(weights), 2):
        a = a @ weights[i].astype(np.float64) + weights[i + 1].astype(np.float64)
        if i + 2 < len(weights):
            a = act(a)
    return a


@pytest.fixture
def model(backend):
    return mlpx.MLP([4, 6, 3], activation="tanh", backend=backend, seed=0)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4)).astype(np.float32)
    return X, rng.integers(0, 3, size=50)


def test_predict_returns_raw_outputs_as_numpy(model, data):
    X, _ = data
    out = model.predict(X)
    assert isinstance(out, np.ndarray) and out.shape == (50, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out, _numpy_forward(model.get_weights(), X), rtol=1e-5,
                               atol=1e-6)
    assert (out < 0).any()  # logits, not probabilities
    out2 = model.predict(X.tolist())  # lists are accepted too
    np.testing.assert_array_equal(out, out2)


def test_predict_in_batches_equals_one_shot(model):
    X = np.random.default_rng(1).normal(size=(10_000, 4)).astype(np.float32)
    whole = model.predict(X, batch_size=10_000)
    for bs in (7, 4096, 20_000):
        np.testing.assert_allclose(model.predict(X, batch_size=bs), whole, rtol=1e-6,
                                   atol=1e-7)
    np.testing.assert_allclose(model.predict(X[:1]), whole[:1], rtol=1e-6, atol=1e-7)


def test_predict_proba(backend, data):
    X, y = data
    model = mlpx.MLP([4, 6, 3], activation="tanh", backend=backend, seed=0)
    with pytest.raises(ValueError, match="predict_proba needs to know the loss"):
        model.predict_proba(X)
    model.compile(loss="cross_entropy")
    p = model.predict_proba(X)
    np.testing.assert_allclose(p, softmax(model.predict(X).astype(np.float64), axis=1),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    model.compile(loss="bce")
    np.testing.assert_allclose(model.predict_proba(X), expit(model.predict(X)), rtol=1e-5)
    model.compile(loss="mse")
    with pytest.raises(ValueError, match="regression loss"):
        model.predict_proba(X)
    nll = mlpx.MLP([4, 6, 3], output_activation="log_softmax", backend=backend, seed=0)
    nll.compile(loss="nll")
    np.testing.assert_allclose(nll.predict_proba(X).sum(axis=1), 1.0, rtol=1e-5)
    sm = mlpx.MLP([4, 3], output_activation="softmax", backend=backend, seed=0)
    np.testing.assert_array_equal(sm.predict_proba(X), sm.predict(X))  # already probabilities


def test_evaluate(model, data):
    X, y = data
    model64 = mlpx.MLP([4, 6, 3], activation="tanh", dtype="float64", seed=0)
    for m in (model, model64):
        res = m.evaluate(X, y, loss="cross_entropy")
        assert set(res) == {"loss", "accuracy"}
        logits = m.predict(X).astype(np.float64)
        logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        assert res["loss"] == pytest.approx(-logp[np.arange(50), y].mean(), rel=1e-5)
        assert res["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y))
        small = m.evaluate(X, y, loss="cross_entropy", batch_size=7)
        assert small["loss"] == pytest.approx(res["loss"], rel=1e-6)
        assert small["accuracy"] == res["accuracy"]
        value, _ = m.loss_and_grad(X, y, loss="cross_entropy")
        assert value == pytest.approx(res["loss"], rel=1e-6)
    reg = model.evaluate(X, np.zeros((50, 3)), loss="mse")
    assert set(reg) == {"loss"}
    assert reg["loss"] == pytest.approx(np.mean(model.predict(X).astype(np.float64) ** 2),
                                        rel=1e-5)
    with pytest.raises(ValueError, match="no loss given"):
        mlpx.MLP([4, 3], seed=0).evaluate(X, y)


def test_bce_accuracy_is_per_label(backend):
    model = mlpx.MLP([2, 2], backend=backend, seed=0)
    model.set_weights([np.eye(2), np.zeros(2)])
    X = np.array([[1.0, -1.0], [1.0, 1.0]])
    Y = np.array([[1.0, 0.0], [1.0, 0.0]])  # 3 of 4 labels right
    assert model.evaluate(X, Y, loss="bce")["accuracy"] == 0.75


def test_weight_layout(backend):
    model = mlpx.MLP([3, 5, 2], activation="prelu", backend=backend, seed=0)
    ws = model.get_weights()
    assert [w.shape for w in ws] == [(3, 5), (5,), (5,), (5, 2), (2,)]
    assert [p.name for p in model.parameters()] == ["W", "b", "slopes", "W", "b"]
    np.testing.assert_array_equal(ws[2], np.full(5, 0.25, np.float32))  # PReLU's initial slope
    rng = np.random.default_rng(0)
    new = [rng.normal(size=w.shape).astype(np.float32) for w in ws]
    model.set_weights(new)
    for a, b in zip(model.get_weights(), new, strict=True):
        np.testing.assert_array_equal(a, b)
    X = rng.normal(size=(9, 3))
    h = X @ new[0] + new[1]
    h = np.where(h > 0, h, new[2] * h)
    np.testing.assert_allclose(model.predict(X), h @ new[3] + new[4], rtol=1e-5, atol=1e-6)
    got = model.get_weights()
    got[0][...] = 99.0  # copies: changing them does not touch the model
    assert not (model.get_weights()[0] == 99.0).any()


def test_set_weights_converts_dtype_and_accepts_lists(model):
    ws = [w.astype(np.float64).tolist() for w in model.get_weights()]
    model.set_weights(ws)
    assert all(w.dtype == np.float32 for w in model.get_weights())


def test_float64_model(backend, data):
    X, y = data
    model = mlpx.MLP([4, 6, 3], activation="tanh", backend=backend, dtype="float64", seed=0)
    assert all(w.dtype == np.float64 for w in model.get_weights())
    assert model.predict(X).dtype == np.float64
    _, grads = model.loss_and_grad(X, y, loss="cross_entropy")
    assert all(g.dtype == np.float64 for g in grads)
    hist = model.fit(X, y, loss="cross_entropy", lr=0.1, epochs=3, verbose=0)
    assert hist.loss[-1] < hist.loss[0]
    np.testing.assert_allclose(model.predict(X), _numpy_forward(model.get_weights(), X),
                               rtol=1e-12, atol=1e-13)
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        mlpx.MLP([2, 2], dtype="float16")


def test_a_layer_object_used_twice_is_a_clear_error():
    # one layer object at two positions would keep only the last gradient, silently
    shared = mlpx.Dense(4)
    with pytest.raises(ValueError, match=r"Dense\(4.*appears twice in this model"):
        mlpx.Sequential([shared, shared, mlpx.Dense(3)], input_dim=4)
    with pytest.raises(ValueError, match="appears twice"):
        mlpx.Sequential([shared, mlpx.Residual([shared])], input_dim=4)
    with pytest.raises(ValueError, match="appears twice"):
        mlpx.Sequential([mlpx.Residual([shared, shared])], input_dim=4)
    # distinct objects of the same configuration are fine
    model = mlpx.Sequential([mlpx.Dense(4), mlpx.Dense(4), mlpx.Dense(3)], input_dim=4, seed=0)
    assert model.predict(np.ones((2, 4))).shape == (2, 3)


def test_bad_seed_is_a_clear_error():
    with pytest.raises(ValueError, match="seed must be >= 0, got -1"):
        mlpx.MLP([4, 3], seed=-1)
    with pytest.raises(TypeError, match="seed must be an integer"):
        mlpx.MLP([4, 3], seed="0")
    assert mlpx.MLP([4, 3], seed=np.int64(5)).seed == 5


def test_same_seed_same_float32_and_float64_weights():
    a = mlpx.MLP([4, 6, 3], seed=5).get_weights()
    b = mlpx.MLP([4, 6, 3], dtype=np.float64, seed=5).get_weights()
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y.astype(np.float32))


def test_sequential_builds_lazily_on_first_use(backend, data):
    X, y = data
    model = mlpx.Sequential([mlpx.Dense(6, activation="relu"), mlpx.Dense(3)], backend=backend,
                            seed=0)
    assert not model.built
    with pytest.raises(RuntimeError, match="not built yet"):
        model.get_weights()
    model.fit(X, y, loss="cross_entropy", epochs=1, verbose=0)
    assert model.built and model.input_dim == 4 and model.output_dim == 3
    assert model.count_params() == 4 * 6 + 6 + 6 * 3 + 3
    assert "total params: 51" in str(model)
    with pytest.raises(RuntimeError, match="cannot add layers to a built model"):
        model.add(mlpx.Dense(2))


def test_mlp_arguments():
    with pytest.raises(ValueError, match="at least an input and an output size"):
        mlpx.MLP([4])
    with pytest.raises(ValueError, match="every MLP size must be >= 1"):
        mlpx.MLP([4, 0, 2])
    with pytest.raises(ValueError, match="Dense units must be a positive integer"):
        mlpx.Dense(0)
    m = mlpx.MLP([4, 8, 8, 2], activation=mlpx.activations.LeakyReLU(0.1), seed=0)
    assert [layer.activation.name for layer in m.layers] == ["leaky_relu"] * 2 + ["identity"]
    assert m.layers[0].activation.negative_slope == 0.1


def test_loss_and_grad_is_aligned_with_get_weights(model, data):
    X, y = data
    value, grads = model.loss_and_grad(X, y, loss="cross_entropy")
    assert [g.shape for g in grads] == [w.shape for w in model.get_weights()]
    assert np.isfinite(value) and value > 0
    # a small step against the gradient lowers the loss
    model.set_weights([w - 0.1 * g for w, g in zip(model.get_weights(), grads, strict=True)])
    assert model.loss_and_grad(X, y, loss="cross_entropy")[0] < value


def test_fit_documents_every_parameter_with_its_type_and_default():
    """Sequential.fit's numpy-style Parameters section names each parameter of its signature,
    with a type and (keywords) the signature's default, in order."""
    import inspect
    import pydoc
    import re

    fit = mlpx.Sequential.fit
    doc = inspect.getdoc(fit)
    section = doc.split("Parameters\n----------\n", 1)[1].split("\n\nReturns\n", 1)[0]
    entries = re.findall(r"^(\w+) : (.+)$", section, flags=re.M)
    params = [p for p in inspect.signature(fit).parameters.values() if p.name != "self"]
    assert [name for name, _ in entries] == [p.name for p in params]
    for (name, kind), p in zip(entries, params, strict=True):
        if p.default is inspect.Parameter.empty:
            assert "default" not in kind, name
        else:
            assert kind.endswith(f", default {p.default!r}"), (name, kind)
    shown = pydoc.render_doc(fit, renderer=pydoc.plaintext)
    assert "batch_size: 'int' = 32" in shown and "batch_size : int, default 32" in shown
def test_calling_the_model_predicts(backend, data):
    X, _ = data
    model = mlpx.MLP([4, 6, 3], backend=backend, seed=0)
    out = model(X)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, model.predict(X))


def test_summary_prints_and_returns_none(capsys):
    model = mlpx.MLP([4, 6, 3], seed=0)
    assert model.summary() is None
    printed = capsys.readouterr().out
    assert "total params: 51" in printed and printed.rstrip("\n") == str(model)
    lines: list[str] = []
    model.summary(print_fn=lines.append)
    assert lines == [str(model)] and capsys.readouterr().out == ""


def test_str_of_an_unbuilt_model_is_its_repr():
    model = mlpx.Sequential([mlpx.Dense(3)])
    assert str(model) == repr(model)
