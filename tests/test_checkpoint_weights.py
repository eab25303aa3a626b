"""model.load_weights: plain safetensors weight files into a built model, names and shapes
checked before anything is assigned."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

import mlpx
from mlpx.layers import BatchNorm, Dense
from mlpx.saving.container import CheckpointError


def _model(seed=0, dtype="float32"):
    return mlpx.Sequential([Dense(5, activation="relu"), BatchNorm(), Dense(2)], input_dim=3,
                           seed=seed, dtype=dtype)


def _weights(model):
    names = ["layers.0.W", "layers.0.b", "layers.1.gamma", "layers.1.beta", "layers.2.W",
             "layers.2.b"]
    return dict(zip(names, model.get_weights(), strict=True))


def test_plain_weights_file_loads_into_a_built_model(tmp_path):
    source = _model(seed=1)
    path = tmp_path / "w.safetensors"
    save_file(_weights(source), str(path))
    target = _model(seed=2)
    target.load_weights(path)
    for a, b in zip(source.get_weights(), target.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(CheckpointError, match="not an mlpx checkpoint.*load_weights"):
        mlpx.load(path)  # weights alone are never taken for a full checkpoint


def test_buffers_load_when_present_and_float64_files_convert(tmp_path):
    source = _model(seed=1, dtype="float64")
    tensors = _weights(source)
    tensors["layers.1.running_mean"] = np.full(5, 0.5)
    tensors["layers.1.num_batches_tracked"] = np.array(7, dtype=np.int64)
    path = tmp_path / "w.safetensors"
    save_file(tensors, str(path))
    target = _model(seed=2)
    target.load_weights(path)
    np.testing.assert_array_equal(target.get_weights()[0],
                                  source.get_weights()[0].astype(np.float32))
    np.testing.assert_array_equal(mlpx.to_numpy(target.layers[1].running_mean), 0.5)
    assert target.layers[1].running_mean.dtype == np.float32
    assert target.layers[1].num_batches_tracked == 7


def test_a_full_checkpoint_gives_its_weights(tmp_path):
    source = _model(seed=1)
    path = source.save(tmp_path / "full.safetensors")
    target = _model(seed=2)
    target.load_weights(path)
    for a, b in zip(source.get_weights(), target.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert target.optimizer_ is None


@pytest.mark.parametrize("edit,fragment", [
    (lambda t: t.pop("layers.2.b"), "missing ['layers.2.b']"),
    (lambda t: t.__setitem__("layers.9.W", np.zeros(2, np.float32)), "unexpected ['layers.9.W']"),
    (lambda t: t.__setitem__("layers.0.W", np.zeros((3, 4), np.float32)), "[3, 5]"),
    (lambda t: t.__setitem__("layers.0.W", t["layers.0.W"].view(np.int32)), "floating point"),
    (lambda t: t.__setitem__("layers.1.running_mean", np.zeros(4, np.float32)),
     "running_mean"),
    (lambda t: t["layers.2.W"].__setitem__((0, 0), np.inf), "finite"),
])
def test_mismatched_weights_change_nothing(tmp_path, edit, fragment):
    tensors = _weights(_model(seed=1))
    edit(tensors)
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path))
    target = _model(seed=2)
    before = [w.copy() for w in target.get_weights()]
    with pytest.raises(CheckpointError, match="bad.safetensors") as info:
        target.load_weights(path)
    assert fragment in str(info.value)
    for a, b in zip(before, target.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_load_weights_needs_a_built_model(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(_weights(_model()), str(path))
    unbuilt = mlpx.Sequential([Dense(5), BatchNorm(), Dense(2)], seed=0)
    with pytest.raises(RuntimeError, match="input_dim|built|build"):
        unbuilt.load_weights(path)
