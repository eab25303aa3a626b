"""The layer registry: layers register themselves where they are defined; the registry
imports no layer module and treats no layer specially."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

import mlpx
from mlpx.layers import registry

REGISTRY_SRC = Path(registry.__file__).read_text()


def test_the_registry_imports_no_layer_module_and_names_no_layer():
    tree = ast.parse(REGISTRY_SRC)
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__", "typing", "base", "registry"}, imported
    for name in ("Dense", "Residual", "Dropout", "activation"):
        assert f'"{name}"' not in REGISTRY_SRC and f"'{name}'" not in REGISTRY_SRC


def test_every_builtin_layer_is_registered_by_its_own_module():
    for cls in (mlpx.Dense, mlpx.Dropout, mlpx.BatchNorm, mlpx.LayerNorm, mlpx.PReLU,
                mlpx.Residual):
        assert registry.NAMES.lookup(cls.__name__) is cls


def test_register_layer_forms(tmp_path):
    @mlpx.register_layer("doubler")
    class Doubler(mlpx.Layer):
        def forward(self, x, training=False):
            return x * 2.0

        def backward(self, dy, need_input_grad=True):
            return dy * 2.0

    try:
        assert registry.layer_spec(Doubler()) == {"class": "doubler", "config": {"name": None}}
        model = mlpx.Sequential([mlpx.Dense(3), Doubler()], input_dim=2, seed=0)
        back = mlpx.load(model.save(tmp_path / "m.safetensors"))
        assert isinstance(back.layers[1], Doubler)
        x = np.ones((1, 2), np.float32)
        np.testing.assert_array_equal(back.predict(x), model.predict(x))
    finally:
        registry.NAMES.unregister("doubler")

    class Unregistered(mlpx.Layer):
        pass

    with pytest.raises(TypeError, match="not registered.*@mlpx.register_layer"):
        registry.layer_spec(Unregistered())
    with pytest.raises(TypeError, match="Layer subclass"):
        mlpx.register_layer(int)
