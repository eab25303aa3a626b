"""Names of parts (mlpx/registry.py): one lookup rule for every kind of part, and a part is
saved under a name only if that name brings back the very same part on load."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx import activations, losses, metrics, optim
from mlpx import initializers as I
from mlpx import regularizers as R
from mlpx.custom_objects import custom_object_scope
from mlpx.layers import registry as layer_registry
from mlpx.registry import UnsaveablePartError


def _data(n=48, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    return X, (X.sum(axis=1, keepdims=True) * 0.5).astype(np.float32)


def _fit(layers, **fit):
    X, y = _data()
    model = mlpx.Sequential(layers, input_dim=3, seed=0)
    model.fit(X, y, **{"loss": "mse", "lr": 0.05, "epochs": 2, "batch_size": 16,
                       "verbose": 0, **fit})
    return model


# --- the parts that used to come back as something else ------------------------------------
def relu(z):  # a leaky variant that happens to be called relu
    return np.where(z > 0, z, 0.3 * z)


def relu_grad(z):
    return np.where(z > 0, 1.0, 0.3)


class LeakyNamedReLU(activations.ReLU):
    """Keeps its parent's name, "relu", with a formula of its own."""

    def formula(self, ops, z):
        return ops.xp.where(z > 0, z, 0.3 * z)

    def derivative(self, ops, dy, z, y):
        return ops.xp.where(z > 0, dy, 0.3 * dy)


def mse(out, target):  # not the built-in mse: twice it
    d = out - target
    return 2.0 * (d * d).mean(), 4.0 * d / d.size


class DoubleMSE(losses.MSELoss):
    def __call__(self, ops, out, target, grad=None):
        value = super().__call__(ops, out, target, grad)
        if grad is not None:
            grad *= 2.0
        return 2.0 * value


class SlowSGD(optim.SGD):
    """Keeps the name "sgd" with an update of its own."""

    def _update(self, i, p):
        p.grad *= 0.5
        super()._update(i, p)


class ScaledL2(R.L2):
    def penalty(self, ops, w):
        return 2.0 * super().penalty(ops, w)


def test_an_unnamed_function_pair_is_refused_when_saved(tmp_path):
    model = _fit([mlpx.Dense(8, activation=(relu, relu_grad)), mlpx.Dense(1)])
    with pytest.raises(UnsaveablePartError, match="has no name.*register_activation"):
        model.save(tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_a_subclass_of_a_builtin_activation_is_refused_when_saved(tmp_path):
    model = _fit([mlpx.Dense(8, activation=LeakyNamedReLU()), mlpx.Dense(1)])
    with pytest.raises(ValueError, match=r"saved as 'relu'.*mlpx\.activations\.ReLU.*"
                                         r"register_activation"):
        model.save(tmp_path / "m.safetensors")


@pytest.mark.parametrize("loss", [mse, DoubleMSE()], ids=["function", "subclass"])
def test_a_loss_named_like_a_builtin_is_refused_when_saved(tmp_path, loss):
    model = _fit([mlpx.Dense(1)], loss=loss)
    with pytest.raises(ValueError, match=r"loss .* saved as 'mse'.*MSELoss.*register_loss"):
        model.save(tmp_path / "m.safetensors")


def test_a_subclass_of_a_builtin_optimizer_is_refused_when_saved(tmp_path):
    model = _fit([mlpx.Dense(1)], optimizer=SlowSGD(lr=0.05), lr=None)
    with pytest.raises(ValueError, match=r"optimizer .* saved as 'sgd'.*optim\.register"):
        model.save(tmp_path / "m.safetensors")


def test_a_subclass_of_a_builtin_regularizer_is_refused_when_saved(tmp_path):
    model = _fit([mlpx.Dense(1, kernel_regularizer=ScaledL2(0.1))])
    with pytest.raises(ValueError, match=r"regularizer .* saved as 'l2'"):
        model.save(tmp_path / "m.safetensors")


def test_parts_inside_blocks_are_checked_too(tmp_path):
    model = mlpx.Sequential([mlpx.Dense(3), mlpx.Residual([mlpx.Dense(3, activation=(
        relu, relu_grad))]), mlpx.Dense(1)], input_dim=3, seed=0)
    model.build(3)
    with pytest.raises(UnsaveablePartError, match=r"\(relu, relu_grad\) has no name"):
        model.save(tmp_path / "m.safetensors")


def test_a_lambda_loss_is_refused_when_saved(tmp_path):
    model = _fit([mlpx.Dense(1)], loss=lambda out, t: mse(out, t))
    with pytest.raises(ValueError, match="loss .* has no name"):
        model.save(tmp_path / "m.safetensors")


def test_an_initializer_named_like_a_builtin_is_not_recorded_by_that_name():
    def he_normal(shape, rng, act):  # not mlpx's he_normal
        return np.full(shape, 0.5)

    assert I.spec_name(he_normal) == "custom"
    assert I.spec_name(I.get("he_normal")) == "kaiming_normal"
    assert mlpx.Dense(2, init=he_normal).get_config()["init"] == "custom"


# --- what is saved by name comes back as itself ---------------------------------------------
def test_a_registered_function_pair_comes_back_as_itself(tmp_path):
    mlpx.register_activation("test_leaky_pair", relu, relu_grad)
    try:
        model = _fit([mlpx.Dense(8, activation="test_leaky_pair"), mlpx.Dense(1)])
        back = mlpx.load(model.save(tmp_path / "m.safetensors"))
        assert back.layers[0].activation.forward is relu
        X, _ = _data()
        np.testing.assert_array_equal(back.predict(X), model.predict(X))
        # the same functions given as a pair under the registered name are that part too
        named = activations.FunctionActivation(relu, relu_grad, name="test_leaky_pair")
        assert activations.name_for_saving(named) == "test_leaky_pair"
        other = activations.FunctionActivation(relu_grad, relu, name="test_leaky_pair")
        with pytest.raises(UnsaveablePartError, match="test_leaky_pair"):
            activations.name_for_saving(other)
    finally:
        activations.NAMES.unregister("test_leaky_pair")


def test_named_subclasses_save_and_load_by_registration_or_custom_objects(tmp_path):
    class TestSlowSGD(SlowSGD):
        name = "test_slow_sgd"

    @mlpx.register_activation("test_leaky")
    class TestLeaky(LeakyNamedReLU):
        pass

    try:
        model = _fit([mlpx.Dense(8, activation="test_leaky"), mlpx.Dense(1)],
                     optimizer=TestSlowSGD(lr=0.05), lr=None)
        path = model.save(tmp_path / "m.safetensors")
        with pytest.raises(mlpx.CheckpointError, match="unknown optimizer 'test_slow_sgd'"):
            mlpx.load(path)
        back = mlpx.load(path, custom_objects={"test_slow_sgd": TestSlowSGD})
        assert type(back.optimizer_) is TestSlowSGD
        assert type(back.layers[0].activation) is TestLeaky
        optim.register(TestSlowSGD)
        assert type(mlpx.load(path).optimizer_) is TestSlowSGD
    finally:
        activations.NAMES.unregister("test_leaky")
        optim.NAMES.unregister("test_slow_sgd")


# --- one lookup rule for every kind -----------------------------------------------------------
class Cube(activations.Activation):
    def formula(self, ops, z):
        return z * z * z

    def derivative(self, ops, dy, z, y):
        return dy * 3.0 * z * z


class Doubler(mlpx.Layer):
    def forward(self, x, training=False):
        return x * 2.0


class TwiceMAE(metrics.MeanAbsoluteError):
    name = "twice_mae"


def zeros_init(shape, rng, act):
    return np.zeros(shape)


class NamedSGD(optim.SGD):
    name = "test_sgd"


class NamedL2(R.L2):
    name = "test_l2"


KINDS = [  # (lookup, custom object, what the lookup must give)
    (activations.get, Cube, lambda got: type(got) is Cube),
    (losses.get, mse, lambda got: got.fn is mse),
    (lambda name: optim.get(name, 0.1), NamedSGD, lambda got: type(got) is NamedSGD),
    (R.get, NamedL2, lambda got: type(got) is NamedL2),
    (metrics.get, TwiceMAE, lambda got: type(got) is TwiceMAE),
    (I.get, zeros_init, lambda got: got is zeros_init),
    (lambda name: layer_registry.layer_from_spec({"class": name, "config": {}}), Doubler,
     lambda got: type(got) is Doubler),
]


@pytest.mark.parametrize("lookup, obj, gives", KINDS,
                         ids=["activation", "loss", "optimizer", "regularizer", "metric",
                              "initializer", "layer"])
def test_every_kind_looks_names_up_in_custom_objects_first(lookup, obj, gives):
    with custom_object_scope({"test_custom_part": obj}):
        assert gives(lookup("test_custom_part"))
    with pytest.raises((ValueError, TypeError)):
        lookup("test_custom_part")  # registered nowhere once the scope has ended


def test_builtin_names_cannot_be_taken_by_any_kind():
    class Adam2(optim.Adam):
        pass

    class L2Again(R.L2):
        pass

    with pytest.raises(ValueError, match="built-in activation name"):
        mlpx.register_activation("relu")(Cube)
    with pytest.raises(ValueError, match="built-in loss name"):
        mlpx.register_loss("mse")(mse)
    with pytest.raises(ValueError, match="declares no name of its own"):
        optim.register(Adam2)
    Adam2.name = "adam"
    with pytest.raises(ValueError, match="built-in optimizer name"):
        optim.register(Adam2)
    L2Again.name = "l2"
    with pytest.raises(ValueError, match="built-in regularizer name"):
        R.register(L2Again)
    with pytest.raises(ValueError, match="built-in layer name"):
        mlpx.register_layer("Dense")(Doubler)
    assert layer_registry.NAMES.lookup("Dense") is mlpx.Dense
