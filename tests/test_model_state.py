"""Model state: state_dict / load_state_dict, walk() and the layers' state declarations."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.layers import BatchNorm, Dense, Dropout, LayerNorm, PReLU, Residual


def _layers():
    return [Dense(8), BatchNorm(), PReLU(), Dropout(0.2),
            Residual([Dense(8, activation="tanh"), LayerNorm(), Dense(8, activation="prelu")]),
            Dense(3)]


def _model(dtype="float32", seed=0):
    return mlpx.Sequential(_layers(), input_dim=5, dtype=dtype, seed=seed)


def _trained(dtype="float32", seed=0):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 5))
    y = rng.integers(0, 3, 40)
    model = _model(dtype, seed)
    model.fit(X, y, loss="cross_entropy", optimizer="adam", lr=0.01, epochs=2, batch_size=8,
              verbose=0)
    return model, X


EXPECTED_KEYS = [
    "layers.0.W", "layers.0.b",
    "layers.1.gamma", "layers.1.beta",
    "layers.1.running_mean", "layers.1.running_var", "layers.1.num_batches_tracked",
    "layers.2.slopes",
    "layers.3.step",
    "layers.4.layers.0.W", "layers.4.layers.0.b",
    "layers.4.layers.1.gamma", "layers.4.layers.1.beta",
    "layers.4.layers.2.W", "layers.4.layers.2.b", "layers.4.layers.2.slopes",
    "layers.5.W", "layers.5.b",
]


def test_state_dict_holds_parameters_then_buffers_by_path():
    model, _ = _trained()
    state = model.state_dict()
    assert list(state) == EXPECTED_KEYS
    assert all(isinstance(v, np.ndarray) for v in state.values())
    np.testing.assert_array_equal(state["layers.0.W"], model.get_weights()[0])
    assert state["layers.1.num_batches_tracked"].dtype == np.int64
    assert int(state["layers.1.num_batches_tracked"]) == 10  # 2 epochs x 5 batches
    assert int(state["layers.3.step"]) == 10
    # a copy: changing it does not touch the model
    state["layers.0.W"][...] = 0
    assert not np.array_equal(model.state_dict()["layers.0.W"], state["layers.0.W"])


def test_load_state_dict_round_trip_is_bitwise():
    model, X = _trained("float64")
    other = _model("float64", seed=7)
    result = other.load_state_dict(model.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[k], v, err_msg=k)
    np.testing.assert_array_equal(other.predict(X), model.predict(X))


def test_load_state_dict_strict_names_missing_and_unexpected_keys():
    model, _ = _trained()
    other = _model(seed=5)
    before = other.state_dict()
    state = model.state_dict()
    del state["layers.1.running_var"]
    state["layers.9.W"] = np.zeros((2, 2), np.float32)
    with pytest.raises(KeyError, match=r"missing.*layers\.1\.running_var.*unexpected.*layers\.9"):
        other.load_state_dict(state)
    for k, v in before.items():  # nothing changed
        np.testing.assert_array_equal(other.state_dict()[k], v)
    result = other.load_state_dict(state, strict=False)
    assert result.missing_keys == ["layers.1.running_var"]
    assert result.unexpected_keys == ["layers.9.W"]
    np.testing.assert_array_equal(other.state_dict()["layers.0.W"],
                                  model.state_dict()["layers.0.W"])


@pytest.mark.parametrize("bad", ["shape", "nan_weight", "nan_buffer", "text"])
def test_load_state_dict_validates_everything_before_writing(bad):
    model, X = _trained()
    target = _model(seed=5)
    before = target.state_dict()
    state = model.state_dict()
    if bad == "shape":
        state["layers.5.W"] = np.zeros((9, 3), np.float32)
        match = r"layers\.5\.W.*shape \(8, 3\)"
    elif bad == "nan_weight":
        state["layers.5.b"] = np.array([0, np.nan, 0], np.float32)
        match = r"layers\.5\.b.*finite"
    elif bad == "nan_buffer":
        state["layers.1.running_var"] = np.full(8, np.inf, np.float32)
        match = r"layers\.1\.running_var.*finite"
    else:
        state["layers.0.b"] = np.array(["a"] * 8)
        match = r"layers\.0\.b.*numbers"
    with pytest.raises(ValueError, match=match):
        target.load_state_dict(state)
    for k, v in before.items():
        np.testing.assert_array_equal(target.state_dict()[k], v, err_msg=k)


def test_walk_visits_every_layer_depth_first():
    model = _model()
    walked = list(model.walk())
    assert [path for path, _ in walked] == [
        "layers.0", "layers.1", "layers.2", "layers.3", "layers.4", "layers.4.layers.0",
        "layers.4.layers.1", "layers.4.layers.2", "layers.5",
    ]
    assert walked[5][1] is model.layers[4].layers[0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_state_spec_declares_the_state_without_building(dtype):
    """Every layer declares names, shapes and dtypes from its config and input width."""
    unbuilt = mlpx.Sequential(_layers(), dtype=dtype, seed=0)
    spec = unbuilt.state_spec(5)
    assert not unbuilt.built
    built = _model(dtype)
    state = built.state_dict()
    assert list(spec) == list(state)
    for k, (shape, dt) in spec.items():
        assert tuple(state[k].shape) == shape, k
        assert state[k].dtype == np.dtype(dt), k
    assert Dense(4).state_spec(3, dtype) == {"W": ((3, 4), np.dtype(dtype)),
                                            "b": ((4,), np.dtype(dtype))}
    assert BatchNorm().state_spec(6, dtype)["num_batches_tracked"] == ((), np.dtype(np.int64))
    assert Dense(4, use_bias=False).compute_output_dim(3) == 4


def test_every_model_attribute_is_set_in_init():
    model = mlpx.MLP([3, 4, 2], seed=0)
    before = set(vars(model))
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(8, 3)), rng.integers(0, 2, 8), loss="cross_entropy",
              epochs=2, verbose=0)
    assert set(vars(model)) == before


def test_imports_flow_one_way():
    """The checkpoint format converts state <-> bytes and the trainer drives the model through
    its public methods: neither imports the model, and nothing imports back into them."""
    import ast
    from pathlib import Path

    root = Path(mlpx.__file__).parent

    def imported(path):
        """The mlpx modules (dotted, below mlpx) that the file at `path` imports."""
        package = path.relative_to(root).parent.parts
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[:len(package) - node.level + 1]
                module = ".".join([*base, *(node.module or "").split(".")]).strip(".")
                names.add(module)
                names.update(f"{module}.{a.name}".strip(".") for a in node.names)
        return names

    def imports_any(path, banned):
        return {n for n in imported(path) for b in banned if n == b or n.startswith(b + ".")}

    saving = sorted((root / "saving").glob("*.py"))
    assert saving
    for path in saving:
        assert not imports_any(path, {"model", "training"}), path
    for name, banned in [("training", {"model"}),
                         ("callbacks", {"model", "training"}),
                         ("schedules", {"model", "training"})]:
        assert not imports_any(root / f"{name}.py", banned), name


class _Scale(mlpx.Layer):
    """A user-defined layer that implements only build/forward/backward: y = x * s."""

    def _build(self, input_dim, rng):
        self.s = self._new_param("s", np.full(input_dim, 2.0))
        return input_dim

    def parameters(self):
        return [self.s]

    def forward(self, x, training=False):
        self._x = x
        out = self._buffer("y", x.shape)
        out[...] = x * self.s.data
        return out

    def backward(self, dy, need_input_grad=True):
        self.s.grad[...] = (dy * self._x).sum(axis=0)
        return dy * self.s.data


def test_a_layer_without_declarations_or_infer_still_works():
    model = mlpx.Sequential([Dense(4), _Scale(), Dense(2)], input_dim=3, seed=0)
    state = model.state_dict()
    assert "layers.1.s" in state and model.state_spec()["layers.1.s"] == ((4,), np.float32)
    other = mlpx.Sequential([Dense(4), _Scale(), Dense(2)], input_dim=3, seed=1)
    other.load_state_dict(state)
    X = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    np.testing.assert_array_equal(other.predict(X, batch_size=3), model.predict(X))
