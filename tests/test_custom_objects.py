"""User-defined activations, losses and layers, written as the docs show them, are first-class:
they train on every backend (through the reference path: no kernel of another op stands in
for them), pass `mlpx check`, and save and load by their registered names or through
`mlpx.load(..., custom_objects=...)`. A part the loader cannot find is a clear error."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx import activations, losses
from mlpx.commands.check import run_check
from mlpx.saving.container import CheckpointError


# --- the parts, as docs/extending.md writes them (registered by the fixture below) ---------
class Square(mlpx.activations.Activation):
    def formula(self, ops, z):
        return z * z

    def derivative(self, ops, dy, z, y):
        return dy * 2.0 * z


def huber(out, target):
    d = out - target
    small = abs(d) <= 1.0
    loss = np.where(small, 0.5 * d * d, abs(d) - 0.5).mean()
    return loss, np.where(small, d, np.sign(d)) / d.size


class HalfMSE(mlpx.losses.Loss):
    def compute(self, ops, out, target):
        d = out - target
        return 0.5 * (d * d).mean(), d / d.size


class Scale(mlpx.Layer):
    """y = x * s with one learned scale per feature."""

    def build(self, input_dim, rng):
        self.s = self.add_parameter("s", np.ones(input_dim))
        return input_dim

    def forward(self, x, training=False):
        self._x = x
        return x * self.s.data

    def backward(self, dy, need_input_grad=True):
        self.s.grad[...] = (dy * self._x).sum(axis=0)
        return dy * self.s.data


@pytest.fixture(autouse=True, scope="module")
def registered():
    """Register the parts for this module's tests only; other tests see the built-ins."""
    from mlpx.layers import registry

    mlpx.register_activation("test_square")(Square)
    mlpx.register_loss("test_huber")(huber)
    mlpx.register_loss("test_mse_subclass")(HalfMSE)
    mlpx.register_layer(Scale)
    yield
    activations.NAMES.unregister("test_square")
    for name in ("test_huber", "test_mse_subclass"):
        losses.NAMES.unregister(name)
    for name in ("Scale", "Offset"):
        registry.NAMES.unregister(name)


def _data(n=64, d=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = (X[:, :2].sum(axis=1, keepdims=True) ** 2 * 0.3).astype(np.float32)
    return X, y


def _model(backend, activation="test_square", extra=(), seed=0):
    return mlpx.Sequential(
        [mlpx.Dense(8, activation=activation), *extra, mlpx.Dense(1)],
        input_dim=5, backend=backend, seed=seed,
    )


# --- activations ----------------------------------------------------------------------------
def test_a_subclass_without_code_runs_its_formula_not_the_identity(backend):
    """z = 3 gives 9 on every backend: an activation without a kernel is never the identity."""
    ops = mlpx.get_backend(backend)
    z = ops.asarray(np.full((2, 3), 3.0, np.float32))
    out = ops.empty((2, 3), np.float32)
    ops.bias_act(z, None, Square(), out)
    np.testing.assert_array_equal(ops.to_numpy(out), np.full((2, 3), 9.0))
    z = ops.asarray(np.full((2, 3), 1.0, np.float32))
    ops.bias_act(z, ops.asarray(np.full(3, 2.0, np.float32)), Square(), out)
    np.testing.assert_array_equal(ops.to_numpy(out), np.full((2, 3), 9.0))


def test_a_copied_kernel_id_is_ignored(backend):
    class Cube(activations.Activation):
        code = activations.ReLU.code  # a kernel id copied from a built-in must not pick its kernel

        def formula(self, ops, z):
            return z * z * z

        def derivative(self, ops, dy, z, y):
            return dy * 3.0 * z * z

    ops = mlpx.get_backend(backend)
    z = ops.asarray(np.array([[-2.0, 3.0]], np.float32))
    out = ops.empty((1, 2), np.float32)
    ops.bias_act(z, None, Cube(), out)
    np.testing.assert_array_equal(ops.to_numpy(out), [[-8.0, 27.0]])


@pytest.mark.parametrize("spec", [
    "test_square", Square(), Square, (lambda z: z * z, lambda z: 2.0 * z),
    activations.FunctionActivation(lambda z: z * z, lambda z, y: 2.0 * z, name="sq"),
], ids=["name", "object", "class", "pair", "function-activation"])
def test_custom_activations_train_and_match_the_reference(backend, spec):
    X, y = _data()
    got = _model(backend, spec)
    ref = _model("reference", spec)
    w0 = got.get_weights()
    loss_got, grads_got = got.loss_and_grad(X, y, loss="mse")
    loss_ref, grads_ref = ref.loss_and_grad(X, y, loss="mse")
    assert float(loss_got) == pytest.approx(float(loss_ref), rel=1e-5)
    for g, r in zip(grads_got, grads_ref, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6 * np.abs(r).max())
    hist = got.fit(X, y, loss="mse", lr=0.01, epochs=5, batch_size=16, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert not all(np.array_equal(a, b) for a, b in zip(w0, got.get_weights(), strict=True))


def test_function_pair_gradient_matches_finite_differences():
    act = activations.get((np.tanh, lambda z, y: 1.0 - y * y))
    model = _model("reference", act)
    model.to("reference")
    X, y = _data(n=8)
    model.set_weights([w.astype(np.float64) for w in model.get_weights()])
    _, grads = model.loss_and_grad(X, y, loss="mse")
    p = model.parameters()[0]
    idx, h = (1, 2), 1e-3
    old = float(p.data[idx])
    p.data[idx] = old + h
    up = model.evaluate(X, y, loss="mse")["loss"]
    p.data[idx] = old - h
    down = model.evaluate(X, y, loss="mse")["loss"]
    p.data[idx] = old
    assert grads[0][idx] == pytest.approx((up - down) / (2 * h), rel=1e-2)


def test_a_lone_function_is_refused_with_the_fix():
    with pytest.raises(TypeError, match=r"derivative.*\(forward, derivative\)"):
        mlpx.Dense(4, activation=lambda z: z * z)


def test_a_subclass_without_formula_is_refused():
    class Empty(activations.Activation):
        pass

    with pytest.raises(TypeError, match="must define formula"):
        mlpx.Dense(4, activation=Empty())


def test_registration_rejects_builtin_names_and_non_activations():
    with pytest.raises(ValueError, match="built-in activation name"):
        mlpx.register_activation("relu")
    with pytest.raises(TypeError, match="Activation subclass"):
        mlpx.register_activation("test_bad")(int)
    assert "test_square" in activations.names()
    assert activations.get("test_square").name == "test_square"


# --- losses ---------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["test_huber", huber, "test_mse_subclass", HalfMSE()])
def test_custom_losses_train_and_match_the_reference(backend, loss):
    X, y = _data()
    got, ref = _model(backend, "tanh"), _model("reference", "tanh")
    lg, gg = got.loss_and_grad(X, y, loss=loss)
    lr, gr = ref.loss_and_grad(X, y, loss=loss)
    assert float(lg) == pytest.approx(float(lr), rel=1e-5)
    for g, r in zip(gg, gr, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6 * np.abs(r).max())
    hist = got.fit(X, y, loss=loss, lr=0.05, epochs=5, batch_size=16, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]


def test_custom_loss_equals_the_builtin_it_reimplements():
    X, y = _data()
    model = _model("cpu", "tanh")
    half, g_half = model.loss_and_grad(X, y, loss=HalfMSE())
    full, g_full = model.loss_and_grad(X, y, loss="mse")
    assert float(half) == pytest.approx(0.5 * float(full), rel=1e-6)
    for a, b in zip(g_half, g_full, strict=True):
        np.testing.assert_allclose(a, 0.5 * b, rtol=1e-5, atol=1e-7)


def test_a_loss_returning_a_wrong_gradient_shape_is_a_clear_error():
    X, y = _data()
    with pytest.raises(ValueError, match="gradient of shape"):
        _model("cpu", "tanh").loss_and_grad(X, y, loss=lambda o, t: (0.0, o[:, :0]))
    with pytest.raises(TypeError, match="return \\(loss, gradient\\)"):
        _model("cpu", "tanh").loss_and_grad(X, y, loss=lambda o, t: 0.0)


# --- layers ---------------------------------------------------------------------------------
def test_custom_layer_trains_and_matches_the_reference(backend):
    X, y = _data()
    got = _model(backend, "tanh", extra=[Scale()])
    ref = _model("reference", "tanh", extra=[Scale()])
    assert [p.name for p in got.layers[1].parameters()] == ["s"]
    assert "layers.1.s" in got.state_spec()
    lg, gg = got.loss_and_grad(X, y, loss="mse")
    lr, gr = ref.loss_and_grad(X, y, loss="mse")
    assert float(lg) == pytest.approx(float(lr), rel=1e-5)
    for g, r in zip(gg, gr, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-6 * np.abs(r).max())
    s0 = got.get_weights()[2].copy()
    got.fit(X, y, loss="mse", lr=0.05, epochs=3, batch_size=16, verbose=0)
    assert not np.array_equal(got.get_weights()[2], s0)
    assert np.array_equal(got.predict(X), got.predict(X))  # inference is repeatable


# --- save and load --------------------------------------------------------------------------
def test_registered_parts_save_and_load(tmp_path, backend):
    X, y = _data()
    model = _model(backend, "test_square", extra=[Scale()])
    model.fit(X, y, loss="test_huber", lr=0.01, epochs=2, batch_size=16, verbose=0)
    path = model.save(tmp_path / "m.safetensors")
    back = mlpx.load(path, backend=backend)
    assert isinstance(back.layers[0].activation, Square)
    assert isinstance(back.layers[1], Scale)
    assert back.loss_.name == "test_huber"
    np.testing.assert_array_equal(back.predict(X), model.predict(X))
    back.fit(X, y, epochs=1, batch_size=16, verbose=0)  # the loss came back too


def test_unregistered_parts_load_through_custom_objects(tmp_path):
    class Cube(activations.Activation):
        def formula(self, ops, z):
            return z * z * z

        def derivative(self, ops, dy, z, y):
            return dy * 3.0 * z * z

    class Offset(mlpx.Layer):
        def build(self, input_dim, rng):
            self.c = self.add_parameter("c", np.zeros(input_dim))

        def forward(self, x, training=False):
            return x + self.c.data

        def backward(self, dy, need_input_grad=True):
            self.c.grad[...] = dy.sum(axis=0)
            return dy

    mlpx.register_layer(Offset)  # registered while saving only
    X, y = _data()

    def my_loss(out, target):
        d = out - target
        return (d * d).mean(), 2.0 * d / d.size

    model = _model("cpu", Cube(), extra=[Offset()])
    model.fit(X, y, loss=my_loss, lr=0.01, epochs=1, batch_size=16, verbose=0)
    path = model.save(tmp_path / "m.safetensors")
    from mlpx.layers import registry

    registry.NAMES.unregister("Offset")
    with pytest.raises(CheckpointError, match="unknown activation 'Cube'.*register_activation"):
        mlpx.load(path)
    with pytest.raises(CheckpointError, match="unknown layer class 'Offset'.*custom_objects"):
        mlpx.load(path, custom_objects={"Cube": Cube})
    with pytest.raises(CheckpointError, match="unknown loss 'my_loss'.*register_loss"):
        mlpx.load(path, custom_objects={"Offset": Offset, "Cube": Cube})
    back = mlpx.load(path, custom_objects={"Offset": Offset, "Cube": Cube, "my_loss": my_loss})
    np.testing.assert_array_equal(back.predict(X), model.predict(X))
    assert back.loss_.name == "my_loss"
    assert "Cube" not in activations.names()  # custom_objects registers nothing for later loads


def test_custom_objects_must_be_a_dict(tmp_path):
    path = _model("cpu", "tanh").save(tmp_path / "m.safetensors")
    with pytest.raises(TypeError, match="custom_objects must be a dict"):
        mlpx.load(path, custom_objects=[Square])


# --- mlpx check -----------------------------------------------------------------------------
def test_check_covers_custom_parts():
    report = run_check(sizes=[6, 8, 3], batch=16, activation="test_square", torch=False,
                       backends=["cpu", "reference"], loss="test_huber",
                       model=lambda: [mlpx.Dense(8, activation="test_square"), Scale(),
                                      mlpx.Dense(3)])
    assert report.ok, report.failures()
    labels = {c.label for c in report.comparisons}
    assert {"cpu", "reference"} <= labels
    assert any(d.name.startswith("L1 ") for c in report.comparisons for d in c.diffs)
