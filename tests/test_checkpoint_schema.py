"""Checkpoint documents are validated against their tensors before anything is built or set.

The files here are crafted with a correct checksum (as someone editing a file on purpose
would), so each test reaches the schema checks rather than the checksum.
"""

from __future__ import annotations

import tracemalloc
import warnings

import numpy as np
import pytest
from _checkpoint_v1 import v1_checkpoint, write_v1
from _crafted import craft as _craft
from _crafted import refused as _refused

import mlpx
from mlpx.layers import BatchNorm, Dense, Dropout, LayerNorm, Residual
from mlpx.saving import container
from mlpx.saving.container import CheckpointError, OldCheckpointWarning


def _model():
    model = mlpx.Sequential(
        [Dense(6, activation="relu"), BatchNorm(), Dropout(0.2),
         Residual([Dense(6, activation="tanh"), LayerNorm(), Dense(6)]), Dense(2)],
        input_dim=4, seed=2)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 4)).astype(np.float32)
    model.fit(X, (X[:, 0] > 0).astype(np.int64), loss="cross_entropy", optimizer="adam",
              lr=0.01, epochs=1, batch_size=8, verbose=0)
    return model


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    path = tmp_path_factory.mktemp("schema") / "orig.safetensors"
    _model().save(path)
    tensors, meta = container.read_file(path)
    return tensors, meta




def _resume(model, path):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(16, 4)).astype(np.float32)
    model.fit(X, (X[:, 0] > 0).astype(np.int64), epochs=3, batch_size=8, verbose=0,
              resume_from=path)




def test_an_untouched_crafted_copy_loads(tmp_path, original):
    model = mlpx.load(_craft(tmp_path, original))
    assert model.epoch_ == 1


@pytest.mark.parametrize("units", [4000, 100_000])
def test_architecture_larger_than_the_tensors_allocates_nothing(tmp_path, original, units):
    def widen(meta):
        meta["model"]["layers"][4]["config"]["units"] = units

    path = _craft(tmp_path, original, widen)
    tracemalloc.start()
    try:
        _refused(path, "layers.4.W", f"{units}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * 2**20  # the file is a few KB; a 4000-wide model alone is 64+ MB


def test_huge_input_dim_is_refused_before_building(tmp_path, original):
    def widen(meta):
        meta["model"]["input_dim"] = 10**9

    _refused(_craft(tmp_path, original, widen), "layers.0.W", "1000000000")


def test_resume_checks_the_file_before_building_an_unbuilt_model(tmp_path, original):
    def widen(meta):
        meta["model"]["input_dim"] = 10**9

    path = _craft(tmp_path, original, widen)
    target = mlpx.Sequential([Dense(6)], seed=0)
    with pytest.raises(CheckpointError, match="1000000000"):
        _resume(target, path)
    assert not target.built


@pytest.mark.parametrize("name,value", [("eps", np.array(1e6, np.float32)),
                                        ("forward", np.array(0, np.int64)),
                                        ("__class__", np.array(0, np.int64))])
def test_buffer_names_are_limited_to_the_layers_buffers(tmp_path, original, name, value):
    def add(meta):
        meta["buffers"]["layers.1"].append(name)

    def tensor(tensors):
        tensors[f"layers.1.{name}"] = value

    _refused(_craft(tmp_path, original, add, tensor), "buffers['layers.1']", name)


def test_buffers_of_a_layer_without_any_are_refused(tmp_path, original):
    def add(meta):
        meta["buffers"]["layers.3.layers.1"] = ["eps"]  # LayerNorm has no buffers

    def tensor(tensors):
        tensors["layers.3.layers.1.eps"] = np.array(1e6, np.float32)

    _refused(_craft(tmp_path, original, add, tensor), "layers.3.layers.1", "eps")


def test_reinterpreted_dtype_is_refused(tmp_path, original):
    def to_int(tensors):
        tensors["layers.0.W"] = tensors["layers.0.W"].view(np.int32)

    _refused(_craft(tmp_path, original, edit_tensors=to_int), "layers.0.W", "I32", "F32")


@pytest.mark.parametrize("edit,fragments", [
    (lambda m: m.pop("optimizer"), ["missing ['optimizer']"]),
    (lambda m: m.__setitem__("optimizes", m.pop("optimizer")), ["optimizes"]),
    (lambda m: m["training"].pop("epoch"), ["training", "missing ['epoch']"]),
    (lambda m: m["training"].__setitem__("epoch", "3"), ["training.epoch"]),
    (lambda m: m["training"].__setitem__("epoch", -1), ["training.epoch"]),
    (lambda m: m["training"].__setitem__("epoch", 1.5), ["training.epoch"]),
    (lambda m: m["training"]["history"].__setitem__("epoch", {"a": 1}),
     ["training.history.epoch"]),
    (lambda m: m["training"]["history"]["history"].__setitem__("loss", ["x"]),
     ["training.history.history"]),
    (lambda m: m["model"].__setitem__("class", "Functional"), ["model.class"]),
    (lambda m: m["model"].__setitem__("dtype", "float16"), ["model.dtype"]),
    (lambda m: m["model"].__setitem__("dtype", []), ["model.dtype"]),
    (lambda m: m["model"].__setitem__("input_dim", True), ["model.input_dim"]),
    (lambda m: m["model"].__setitem__("seed", "x"), ["model.seed"]),
    (lambda m: m["model"].__setitem__("layers", {}), ["model.layers"]),
    (lambda m: m["model"]["layers"][2]["config"].__setitem__("p", 2.0), ["model.layers[2]"]),
    (lambda m: m["model"]["layers"][1]["config"].__setitem__("eps", -1), ["model.layers[1]"]),
    (lambda m: m["model"]["layers"][1].__setitem__("class", "Evil"), ["model.layers[1]",
                                                                       "Evil"]),
    (lambda m: m["model"]["layers"][0]["config"].__setitem__("bogus", 1), ["model.layers[0]"]),
    (lambda m: m["model"]["layers"][0].__setitem__("config", [1]), ["model.layers[0]"]),
    (lambda m: m["model"]["layers"][3]["config"]["layers"].pop(), ["layers.3.layers.2"]),
    (lambda m: m.__setitem__("params", m["params"][1:]), ["layers.0.W"]),
    (lambda m: m.__setitem__("params", "layers.0.W"), ["params"]),
    (lambda m: m.__setitem__("buffers", []), ["buffers"]),
    (lambda m: m["buffers"].pop("layers.1"), ["running_mean"]),
    (lambda m: m.__setitem__("loss", 3), ["loss"]),
    (lambda m: m.__setitem__("loss", "no_such_loss"), ["no_such_loss"]),
    (lambda m: m["optimizer"]["config"].__setitem__("name", "evil"), ["evil"]),
    (lambda m: m["optimizer"]["config"].__setitem__("betas", [0.9]), ["optimizer.config"]),
    (lambda m: m["optimizer"].__setitem__("step_count", -2), ["optimizer.step_count"]),
    (lambda m: m["optimizer"].__setitem__("state", m["optimizer"]["state"][1:]), ["optimizer"]),
    (lambda m: m["optimizer"]["state"][0].__setitem__("x", {"__tensor__": "layers.0.W"}),
     ["optimizer.state.0.x", "must reference the tensor 'optimizer.state.0.x'"]),
])
def test_malformed_documents_name_the_field(tmp_path, original, edit, fragments):
    _refused(_craft(tmp_path, original, edit), *fragments)


@pytest.mark.parametrize("edit,fragments", [
    (lambda t: t.pop("layers.0.b"), ["lacks", "layers.0.b"]),
    (lambda t: t.__setitem__("stowaway", np.zeros(3)), ["stowaway"]),
    (lambda t: t.__setitem__("layers.0.W", t["layers.0.W"][:, :3].copy()), ["layers.0.W"]),
    (lambda t: t.__setitem__("layers.0.W", t["layers.0.W"].astype(np.float64)), ["F64"]),
    (lambda t: t.__setitem__("layers.1.num_batches_tracked", np.array([1, 2])),
     ["num_batches_tracked"]),
    (lambda t: t.__setitem__("optimizer.state.0.exp_avg", np.zeros((2, 2), np.float32)),
     ["exp_avg"]),
    (lambda t: t.__setitem__("optimizer.state.0.exp_avg",
                             t["optimizer.state.0.exp_avg"].view(np.int32)), ["exp_avg"]),
    (lambda t: t["layers.0.W"].__setitem__((0, 0), np.nan), ["layers.0.W", "NaN"]),
])
def test_tensors_that_do_not_fit_the_document_are_refused(tmp_path, original, edit, fragments):
    _refused(_craft(tmp_path, original, edit_tensors=edit), *fragments)


def test_resume_does_not_touch_a_model_when_the_file_is_bad(tmp_path, original):
    def bad(meta):
        meta["buffers"]["layers.1"].append("eps")

    def tensor(tensors):
        tensors["layers.1.eps"] = np.array(1e6, np.float32)

    path = _craft(tmp_path, original, bad, tensor)
    model = _model()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(CheckpointError):
        _resume(model, path)
    assert model.layers[1].eps == 1e-5
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


# -------------------------------------------------------------- format version 1 files
def test_version_1_checkpoint_loads_with_a_warning_to_resave(tmp_path):
    tensors, document = v1_checkpoint()
    path = tmp_path / "old.safetensors"
    write_v1(path, tensors, document)
    with pytest.warns(OldCheckpointWarning, match=r"version 1.*re-save.*version 2"):
        model = mlpx.load(path)
    names = ["layers.0.W", "layers.0.b", "layers.1.gamma", "layers.1.beta", "layers.3.W",
             "layers.3.b"]
    for name, w in zip(names, model.get_weights(), strict=True):
        np.testing.assert_array_equal(w, tensors[name])
    np.testing.assert_array_equal(mlpx.to_numpy(model.layers[1].running_var),
                                  tensors["layers.1.running_var"])
    assert model.layers[1].num_batches_tracked == 4 and model.layers[2].step == 4
    assert model.optimizer_.step_count == 4 and model.epoch_ == 2
    np.testing.assert_array_equal(mlpx.to_numpy(model.optimizer_.state[4]["exp_avg"]),
                                  tensors["optimizer.state.4.exp_avg"])
    # re-saving upgrades it: the new file loads silently and identically
    model.save(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = mlpx.load(path)
    for a, b in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_version_1_files_still_need_their_checksum(tmp_path):
    tensors, document = v1_checkpoint()
    path = tmp_path / "old.safetensors"
    write_v1(path, tensors, document)
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0x10
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="SHA-256"):
        mlpx.load(path)
    path.write_bytes(path.read_bytes().replace(b'"sha256"', b'"sha257"'))
    with pytest.raises(CheckpointError, match="sha256"):
        mlpx.load(path)
