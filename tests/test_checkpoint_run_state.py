"""Checkpoints of a whole training run: round trips of every layer, optimiser, schedule and
callback state, the document entries of the run's state, custom layers' declarations, and
files written before the current format version.

Crafted files carry a valid checksum (as someone editing a file on purpose would), so each
test reaches the schema checks rather than the checksum.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from _checkpoint_v1 import write_v1
from _crafted import craft as _craft
from _crafted import refused as _refused

import mlpx
from mlpx.activations import LeakyReLU
from mlpx.callbacks import Callback, EarlyStopping, ModelCheckpoint
from mlpx.layers import BatchNorm, Dense, Dropout, Layer, LayerNorm, PReLU, Residual
from mlpx.layers.registry import register_layer
from mlpx.optim import AdamW, RMSprop
from mlpx.saving import container
from mlpx.saving.container import CheckpointError, OldCheckpointWarning
from mlpx.saving.reader import read_checkpoint
from mlpx.schedules import CosineAnnealing, ExponentialLR, ReduceLROnPlateau, StepLR


def _data(n=40, d=4, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)


def _layers():
    return [Dense(6, activation=LeakyReLU(0.1)), BatchNorm(), PReLU(), Dropout(0.2),
            Residual([Dense(6, activation="prelu"), LayerNorm(), Dense(6)]), Dense(3)]


class Snapshot(Callback):
    """The model's and optimiser's state when ModelCheckpoint has written the epoch (before
    EarlyStopping restores the best weights at the end)."""

    def after_epoch(self, epoch, logs=None):
        self.state = self.model.state_dict()
        self.optimizer = self.model.optimizer_.state_dict()


def _callbacks(tmp_path, schedule):
    return [EarlyStopping(monitor="val_loss", patience=5),
            ReduceLROnPlateau(monitor="val_loss", patience=1, factor=0.5),
            ModelCheckpoint(tmp_path / "best.safetensors", save_best_only=True),
            ModelCheckpoint(tmp_path / "last.safetensors"),
            schedule, Snapshot()]


def _run(tmp_path, optimizer, schedule, dtype="float32", epochs=3):
    X, y = _data()
    model = mlpx.Sequential(_layers(), input_dim=4, dtype=dtype, seed=1)
    cbs = _callbacks(tmp_path, schedule)
    model.fit(X, y, loss="cross_entropy", optimizer=optimizer, epochs=epochs, batch_size=8,
              validation_split=0.25, callbacks=cbs, verbose=0)
    return model, cbs, tmp_path / "last.safetensors"


def _same(a, b, where="state"):
    """Equal bit for bit: arrays by dtype, shape and bytes; containers entry by entry."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        assert (a.dtype, a.shape, a.tobytes()) == (b.dtype, b.shape, b.tobytes()), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), where
    else:
        assert a == b and type(a) is type(b) or (a == b and isinstance(b, (int, float))), where


OPTIMIZERS = [("sgd", StepLR(step_size=1, gamma=0.5)),
              ("momentum", ExponentialLR(gamma=0.9)),
              ("nesterov", CosineAnnealing(T_max=4)),
              ("adagrad", StepLR(step_size=2, gamma=0.1)),
              (RMSprop(lr=0.01, momentum=0.5, centered=True), CosineAnnealing(T_max=2)),
              ("adam", ExponentialLR(gamma=0.5)),
              (AdamW(lr=0.01, weight_decay=0.1), StepLR(step_size=1, gamma=0.7))]


# ------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("optimizer,schedule", OPTIMIZERS,
                         ids=["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam",
                              "adamw"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_of_the_whole_run_is_bitwise(tmp_path, optimizer, schedule, dtype):
    model, cbs, path = _run(tmp_path, copy.deepcopy(optimizer), copy.deepcopy(schedule), dtype)
    loaded = mlpx.load(path)
    _same(cbs[-1].state, loaded.state_dict())
    _same(cbs[-1].optimizer, loaded.optimizer_.state_dict(), "optimizer")
    run, again = model.trainer_.state_dict(), loaded.trainer_.state_dict()
    for key in ("fit_index", "epoch", "step", "loss_sum", "stopped"):
        _same(run[key], again[key], key)
    _same(model.history_.history, loaded.history_.history, "history")
    # every callback's state, schedules included, as the file holds it
    record = read_checkpoint(path)
    _same([{"class": type(cb).__name__, "state": cb.state_dict()} for cb in cbs],
          record.run.callbacks, "callbacks")
    assert record.run.callbacks[0]["state"]["best_state"] is not None
    # and given back to fresh callbacks by resume_from (the run is complete: no training)
    fresh = _callbacks(tmp_path, copy.deepcopy(schedule))
    resumed = mlpx.Sequential(_layers(), input_dim=4, dtype=dtype, seed=5)
    X, y = _data()
    resumed.fit(X, y, epochs=3, batch_size=8, validation_split=0.25, callbacks=fresh,
                verbose=0, resume_from=path)
    for a, b in zip(cbs, fresh, strict=True):
        _same(a.state_dict(), b.state_dict(), type(a).__name__)
    _same(cbs[-1].optimizer, resumed.optimizer_.state_dict(), "optimizer")
    _same(model.state_dict(), resumed.state_dict())  # best weights restored on both


# ------------------------------------------------------------------ crafted documents
@pytest.fixture(scope="module")
def original(tmp_path_factory):
    _, _, path = _run(tmp_path_factory.mktemp("run"), "adam", StepLR(step_size=1, gamma=0.5))
    return container.read_file(path)






def test_the_crafted_copy_itself_loads(tmp_path, original):
    assert mlpx.load(_craft(tmp_path, original)).epoch_ == 3


def _train(m):
    return m["training"]


def _cb(m, i):
    return m["training"]["callbacks"][i]


def _rename_slot(t, m):
    slots = m["optimizer"]["state"][0]
    slots["momentum_buffer"] = {"__tensor__": "optimizer.state.0.momentum_buffer"}
    del slots["exp_avg"]
    t["optimizer.state.0.momentum_buffer"] = t.pop("optimizer.state.0.exp_avg")


def _drop_best_key(t, m):
    del _cb(m, 0)["state"]["best_state"]["layers.0.W"]
    del t["callbacks.0.state.best_state.layers.0.W"]


@pytest.mark.parametrize("edit,fragments", [
    (lambda m: _train(m).__setitem__("step", -1), ["training.step"]),
    (lambda m: _train(m).__setitem__("step", 1.5), ["training.step"]),
    (lambda m: _train(m).pop("step"), ["training", "missing ['step']"]),
    (lambda m: _train(m).pop("callbacks"), ["training", "missing ['callbacks']"]),
    (lambda m: _train(m).__setitem__("fit_index", -3), ["training.fit_index"]),
    (lambda m: _train(m).__setitem__("loss_sum", "1"), ["training.loss_sum"]),
    (lambda m: _train(m).__setitem__("loss_sum", float("nan")), ["training.loss_sum"]),
    (lambda m: _train(m).__setitem__("loss_sum", 2.5), ["training.loss_sum", "step 0"]),
    (lambda m: _train(m).__setitem__("stopped", 1), ["training.stopped"]),
    (lambda m: _train(m).__setitem__("extra", 1), ["training", "unknown ['extra']"]),
    (lambda m: _train(m).__setitem__("callbacks", {}), ["training.callbacks"]),
    (lambda m: _cb(m, 1).__setitem__("rank", 0), ["training.callbacks[1]", "unknown"]),
    (lambda m: _cb(m, 1).__setitem__("class", 7), ["training.callbacks[1].class"]),
    (lambda m: _cb(m, 1).__setitem__("state", [1]), ["training.callbacks[1].state"]),
    (lambda m: _cb(m, 0)["state"].__setitem__("wait", -1),
     ["training.callbacks[0].state", "'wait'", "integer >= 0"]),
    (lambda m: _cb(m, 0)["state"].__setitem__("__class__", "x"),
     ["training.callbacks[0].state", "unknown ['__class__']"]),
    (lambda m: _cb(m, 0)["state"].pop("best"), ["training.callbacks[0].state", "missing"]),
    (lambda m: _cb(m, 0)["state"].__setitem__("best", float("nan")), ["'best'", "not NaN"]),
    (lambda m: _cb(m, 0)["state"].__setitem__("mode", "sideways"), ["'mode'"]),
    (lambda m: _cb(m, 0)["state"].__setitem__("best_state", [1]), ["best_state"]),
    (lambda m: _cb(m, 1)["state"].__setitem__("warned", "no"), ["callbacks[1]", "'warned'"]),
    (lambda m: _cb(m, 2)["state"].__setitem__("saved", [3]), ["callbacks[2]", "'saved'"]),
    (lambda m: _cb(m, 4)["state"].__setitem__("gamma", 9), ["callbacks[4]", "StepLR"]),
    (lambda m: m["optimizer"].__setitem__("initial_lr", 0), ["optimizer.initial_lr"]),
    (lambda m: m["optimizer"].__setitem__("initial_lr", "0.1"), ["optimizer.initial_lr"]),
    (lambda m: m["optimizer"].__setitem__("evil", 1), ["optimizer", "'config' alone"]),
    (lambda m: m["optimizer"].pop("step_count"), ["optimizer", "'config' alone"]),
    (lambda m: m["optimizer"]["config"].__setitem__("betas", {"a": 1}),
     ["optimizer.config.betas"]),
    (lambda m: m.__setitem__("format_version", 1), ["format_version"]),
    (lambda m: m.__setitem__("mlpx_version", 5), ["mlpx_version"]),
    (lambda m: m.__setitem__("format", "other"), ["format"]),
    (lambda m: m["params"].append("layers.0.__dict__"), ["layers.0.__dict__"]),
    (lambda m: m["buffers"].__setitem__("layers.1", ["running_mean", "running_mean"]),
     ["buffers['layers.1']"]),
    (lambda m: m["buffers"].__setitem__("optimizer", ["x"]), ["buffers", "layer path"]),
])
def test_run_state_entries_are_checked(tmp_path, original, edit, fragments):
    _refused(_craft(tmp_path, original, edit), *fragments)


@pytest.mark.parametrize("edit,fragments", [
    (_rename_slot, ["optimizer.state[0]", "momentum_buffer", "exp_avg"]),
    (_drop_best_key, ["best_state", "missing ['layers.0.W']"]),
    (lambda t, m: t.__setitem__("optimizer.state.2.exp_avg_sq",
                                t["optimizer.state.2.exp_avg_sq"].astype(np.float64)),
     ["optimizer.state.2.exp_avg_sq", "F64"]),
    (lambda t, m: t["optimizer.state.1.exp_avg"].__setitem__(0, np.inf),
     ["optimizer.state.1.exp_avg", "NaN or infinite"]),
    (lambda t, m: t.__setitem__("callbacks.0.state.best_state.layers.0.W",
                                np.zeros((2, 2), np.float32)),
     ["callbacks[0].state.best_state", "layers.0.W", "[2, 2]", "[4, 6]"]),
    (lambda t, m: t["callbacks.0.state.best_state.layers.1.running_var"].__setitem__(0, np.nan),
     ["best_state", "running_var", "NaN"]),
    (lambda t, m: t.__setitem__("callbacks.0.state.best_state.layers.3.step",
                                np.array(-4, np.int64)),
     ["best_state", "layers.3.step", "negative"]),
    (lambda t, m: t.__setitem__("layers.1.num_batches_tracked", np.array(-1, np.int64)),
     ["layers.1.num_batches_tracked", "negative"]),
    (lambda t, m: _cb(m, 0)["state"]["best_state"].__setitem__(
        "layers.0.W", {"__tensor__": "layers.0.W"}),
     ["callbacks.0.state.best_state.layers.0.W", "must reference"]),
])
def test_optimizer_and_callback_tensors_are_checked(tmp_path, original, edit, fragments):
    tensors, meta = copy.deepcopy(original[0]), copy.deepcopy(original[1])
    edit(tensors, meta)
    _refused(_craft(tmp_path, (tensors, meta)), *fragments)


def test_resuming_a_step_beyond_the_epoch_is_refused_and_changes_nothing(tmp_path, original):
    def inside(m):
        _train(m).update(epoch=1, step=40, loss_sum=3.0)

    path = _craft(tmp_path, original, inside)
    X, y = _data()
    model = mlpx.Sequential(_layers(), input_dim=4, seed=1)
    before = model.state_dict()
    with pytest.raises(CheckpointError, match=r"crafted.safetensors.*step 40.*4 steps"):
        model.fit(X, y, epochs=3, batch_size=8, validation_split=0.25, verbose=0,
                  resume_from=path)
    _same(before, model.state_dict())
    assert model.optimizer_ is None and model.trainer_ is None


def test_a_callback_state_that_does_not_fit_names_the_file_and_entry(tmp_path, original):
    X, y = _data()
    model = mlpx.Sequential(_layers(), input_dim=4, seed=1)
    other = EarlyStopping(monitor="loss")  # the file's first EarlyStopping monitors val_loss
    with pytest.raises(CheckpointError, match=r"crafted.safetensors.*training.callbacks\[0\]"
                                              r".*monitors 'val_loss'"):
        model.fit(X, y, epochs=3, batch_size=8, validation_split=0.25, verbose=0,
                  callbacks=[other], resume_from=_craft(tmp_path, original))
    assert model.trainer_ is None


def test_user_callback_state_round_trips_and_is_checked_by_the_callback(tmp_path):
    class Counter(Callback):
        state_format = {"seen": "count", "tag": "str"}

        def __init__(self):
            self.seen, self.tag, self.weights = 0, "x", np.arange(3.0)

        def on_epoch_end(self, epoch, logs=None):
            self.seen += 1

        def state_dict(self):
            return {"seen": self.seen, "tag": self.tag, "weights": self.weights}

        def load_state_dict(self, state):
            self.validate_state_dict(state)
            self.seen, self.tag = state["seen"], state["tag"]

    Counter.state_format = {**Counter.state_format, "weights": "state_dict_or_none"}
    X, y = _data()
    model = mlpx.MLP([4, 5, 3], seed=0)
    model.fit(X, y, loss="cross_entropy", epochs=2, verbose=0, callbacks=[Counter()])
    path = model.save(tmp_path / "run.safetensors")
    assert mlpx.load(path).epoch_ == 2  # an unknown class: its state is not interpreted
    again = Counter()
    with pytest.raises(CheckpointError, match=r"training.callbacks\[0\].*'weights'"):
        mlpx.MLP([4, 5, 3], seed=0).fit(X, y, epochs=3, verbose=0, callbacks=[again],
                                        resume_from=path)
    assert again.seen == 0


# ---------------------------------------------------------------------- custom layers
@register_layer
class DeclaredAffine(Layer):
    """y = x W, plus a call counter: declares its parameter, buffer and output width."""

    builds = 0

    def __init__(self, units: int, name=None):
        super().__init__(name)
        self.units = int(units)
        self.calls = 0

    def _build(self, input_dim, rng):
        type(self).builds += 1
        self.W = self._new_param("W", rng.normal(size=(input_dim, self.units)))
        return self.units

    def parameters(self):
        return [self.W]

    def buffers(self):
        return {"calls": np.array(self.calls, dtype=np.int64)}

    def _set_buffer(self, key, value):
        if key != "calls":
            raise KeyError(key)
        self.calls = int(value)

    def param_spec(self, input_dim, dtype):
        return {"W": ((int(input_dim), self.units), np.dtype(dtype))}

    def buffer_spec(self, input_dim, dtype):
        return {"calls": ((), np.dtype(np.int64))}

    def compute_output_dim(self, input_dim):
        return self.units

    def forward(self, x, training=False):
        self._x = x
        self.calls += 1
        return x @ self.W.data

    def backward(self, dy, need_input_grad=True):
        self.W.grad[...] = self._x.T @ dy
        return dy @ self.W.data.T if need_input_grad else None

    def get_config(self):
        return {"units": self.units, "name": self.name}


@register_layer
class UndeclaredScale(Layer):
    """y = x * s with a learned s: declares nothing (the defaults describe it once built)."""

    hits = 0

    def _build(self, input_dim, rng):
        self.s = self._new_param("s", np.full(input_dim, 2.0))
        return input_dim

    def parameters(self):
        return [self.s]

    def buffers(self):
        return {"hits": np.array(self.hits, dtype=np.int64)}

    def _set_buffer(self, key, value):
        if key != "hits":
            raise KeyError(key)
        self.hits = int(value)

    def forward(self, x, training=False):
        self._x = x
        self.hits += 1
        return x * self.s.data

    def backward(self, dy, need_input_grad=True):
        self.s.grad[...] = (dy * self._x).sum(axis=0)
        return dy * self.s.data


def _custom(tmp_path):
    X, y = _data()
    model = mlpx.Sequential([DeclaredAffine(5), UndeclaredScale(), Dense(3)], input_dim=4,
                            seed=0)
    model.fit(X, y, loss="cross_entropy", optimizer="adam", lr=0.01, epochs=2, batch_size=8,
              verbose=0)
    return model, model.save(tmp_path / "custom.safetensors")


def test_custom_layers_round_trip_bitwise(tmp_path):
    model, path = _custom(tmp_path)
    loaded = mlpx.load(path)
    _same(model.state_dict(), loaded.state_dict())
    assert loaded.layers[0].calls == model.layers[0].calls > 0
    assert loaded.layers[1].hits == model.layers[1].hits > 0
    _same(model.optimizer_.state_dict(), loaded.optimizer_.state_dict())


def test_a_declared_custom_layer_is_checked_before_anything_is_built(tmp_path):
    _, path = _custom(tmp_path)
    original = container.read_file(path)

    def huge(m):
        m["model"]["layers"][0]["config"]["units"] = 100_000

    builds = DeclaredAffine.builds
    _refused(_craft(tmp_path, original, huge), "layers.0.W", "[4, 100000]", "[4, 5]")
    assert DeclaredAffine.builds == builds  # refused from the declarations alone

    def extra(t, m):
        m["buffers"]["layers.0"].append("forward")
        t["layers.0.forward"] = np.array(0, np.int64)

    tensors, meta = copy.deepcopy(original[0]), copy.deepcopy(original[1])
    extra(tensors, meta)
    _refused(_craft(tmp_path, (tensors, meta)), "buffers['layers.0']", "forward",
             "DeclaredAffine")
    assert DeclaredAffine.builds == builds


def test_an_undeclared_custom_layer_is_checked_once_built_before_assignment(tmp_path):
    _, path = _custom(tmp_path)
    original = container.read_file(path)

    def narrow(t):
        t["layers.1.s"] = t["layers.1.s"][:3].copy()

    _refused(_craft(tmp_path, original, edit_tensors=narrow), "layers.1.s", "[3]", "[5]")

    def extra(t, m):
        m["buffers"]["layers.1"].append("s2")
        t["layers.1.s2"] = np.zeros(5, np.float32)

    tensors, meta = copy.deepcopy(original[0]), copy.deepcopy(original[1])
    extra(tensors, meta)
    _refused(_craft(tmp_path, (tensors, meta)), "layers.1.s2", "does not declare")

    def counter(t):
        t["layers.1.hits"] = np.array(-1, np.int64)

    _refused(_craft(tmp_path, original, edit_tensors=counter), "layers.1.hits", "negative")


# ------------------------------------------------------------------- ModelCheckpoint
def test_model_checkpoint_best_starts_afresh_with_each_fit(tmp_path):
    X, y = _data()
    cb = ModelCheckpoint(tmp_path / "best.safetensors", monitor="loss", save_best_only=True)
    trained = mlpx.MLP([4, 16, 3], seed=0)
    trained.fit(X, y, loss="cross_entropy", optimizer="adam", lr=0.05, epochs=30, verbose=0,
                callbacks=[cb])
    best_of_first = cb.best
    fresh = mlpx.MLP([4, 16, 3], seed=1)
    fresh.fit(X, y, loss="cross_entropy", optimizer="sgd", lr=1e-4, epochs=1, verbose=0,
              callbacks=[cb])
    assert fresh.history_.history["loss"][0] > best_of_first  # worse than the first run
    assert cb.best == fresh.history_.history["loss"][0]  # ... yet this run's best
    _same(mlpx.load(cb.saved[-1]).state_dict(), fresh.state_dict())


# --------------------------------------------------------------- older format versions
def test_version_1_files_with_the_run_state_load_and_resume_with_a_warning(tmp_path):
    """Files the state-dict code wrote before the whole-file checksum (format version 1,
    with the run's position and callback states) load, warn, and give the callbacks back."""
    model, cbs, path = _run(tmp_path, "adam", StepLR(step_size=1, gamma=0.5))
    tensors, meta = container.read_file(path)
    meta["format_version"] = 1
    old = tmp_path / "v1.safetensors"
    write_v1(old, tensors, meta)
    with pytest.warns(OldCheckpointWarning, match=r"re-save.*version 2") as caught:
        loaded = mlpx.load(old)
    assert caught[0].filename == __file__  # points at the user's line
    _same(cbs[-1].state, loaded.state_dict())
    fresh = _callbacks(tmp_path, StepLR(step_size=1, gamma=0.5))
    X, y = _data()
    with pytest.warns(OldCheckpointWarning) as caught:
        mlpx.Sequential(_layers(), input_dim=4, seed=3).fit(
            X, y, epochs=3, batch_size=8, validation_split=0.25, callbacks=fresh, verbose=0,
            resume_from=old)
    assert caught[0].filename == __file__
    for a, b in zip(cbs, fresh, strict=True):
        _same(a.state_dict(), b.state_dict(), type(a).__name__)
    # its callback states are checked like the current version's
    _cb(meta, 0)["state"]["wait"] = -2
    write_v1(old, tensors, meta)
    with pytest.warns(OldCheckpointWarning), \
            pytest.raises(CheckpointError, match=r"training.callbacks\[0\].state"):
        mlpx.load(old)


def test_the_current_version_is_the_one_written(tmp_path):
    model = mlpx.MLP([3, 2], seed=0)
    tensors, metadata = container.read_safetensors(model.save(tmp_path / "m.safetensors"))
    assert metadata["format_version"] == str(container.FORMAT_VERSION) == "2"
    assert json.loads(metadata["mlpx"])["format_version"] == 2
