"""The training run's state: divergence rollback, Ctrl-C, atomic resume, callback state."""

from __future__ import annotations

import signal

import numpy as np
import pytest

import mlpx
from mlpx.callbacks import Callback, EarlyStopping, ModelCheckpoint
from mlpx.layers import BatchNorm, Dense, Dropout
from mlpx.saving import container
from mlpx.saving.container import CheckpointError
from mlpx.schedules import ReduceLROnPlateau, StepLR

OPTIMIZERS = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]


def _data(n=96, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int64) + (X[:, 3] > 1)
    return X, y


def _model(seed=3, dtype="float32"):
    return mlpx.Sequential([Dense(16, activation="relu"), BatchNorm(), Dropout(0.2), Dense(3)],
                           input_dim=6, dtype=dtype, seed=seed)


def _fit(model, epochs, X=None, y=None, **kw):
    if X is None:
        X, y = _data()
    kw.setdefault("optimizer", "adam")
    kw.setdefault("lr", 0.01)
    return model.fit(X, y, loss="cross_entropy", epochs=epochs, batch_size=16, verbose=0, **kw)


def _snapshot(model):
    opt = model.optimizer_
    return {
        "state": model.state_dict(),
        "slots": [{k: mlpx.to_numpy(v).copy() for k, v in s.items()} for s in opt.state]
        if opt is not None else None,
        "steps": opt.step_count if opt is not None else None,
        "epoch": model.epoch_,
        "history": None if model.history_ is None else
        {k: list(v) for k, v in model.history_.history.items()},
    }


def _assert_same(a, b):
    assert a["state"].keys() == b["state"].keys()
    for k in a["state"]:
        np.testing.assert_array_equal(a["state"][k], b["state"][k], err_msg=k)
    assert a["steps"] == b["steps"] and a["epoch"] == b["epoch"]
    assert a["history"] == b["history"]
    if a["slots"] is not None:
        for sa, sb in zip(a["slots"], b["slots"], strict=True):
            assert sa.keys() == sb.keys()
            for k in sa:
                np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)


def _all_finite(model):
    for k, v in model.state_dict().items():
        if v.dtype.kind == "f":
            assert np.isfinite(v).all(), k
    for s in model.optimizer_.state:
        for k, v in s.items():
            assert np.isfinite(mlpx.to_numpy(v)).all(), k


# ----------------------------------------------------------------------------- divergence
@pytest.mark.parametrize("opt", OPTIMIZERS)
def test_divergence_in_the_first_epoch_leaves_the_model_as_before_the_fit(opt):
    X, y = _data()
    model = _model()
    _fit(model, 2, optimizer=opt, lr=0.01)
    before = _snapshot(model)
    pred = model.predict(X)
    model.optimizer_.lr = 1e30  # the same optimiser, its state carried into the next fit
    with np.errstate(all="ignore"), pytest.raises(mlpx.NonFiniteLossError, match="epoch 1"):
        model.fit(X, y, epochs=5, batch_size=16, verbose=0)
    _assert_same(before, _snapshot(model))
    np.testing.assert_array_equal(model.predict(X), pred)
    _all_finite(model)
    # a sane learning rate trains normally from there, with the same optimiser state
    model.optimizer_.lr = 0.01
    hist = model.fit(X, y, epochs=3, batch_size=16, verbose=0)
    assert np.isfinite(hist.loss).all() and hist.loss[-1] < before["history"]["loss"][0]


@pytest.mark.filterwarnings("ignore::mlpx.UnscaledInputWarning")  # huge inputs on purpose
def test_divergence_that_only_overflows_the_running_statistics_is_caught():
    """Inputs of 1e30 leave loss and weights finite (BatchNorm rescales them) but make the
    float32 running variance infinite: the check covers buffers too."""
    X, y = _data()
    model = _model()
    _fit(model, 1)
    before = _snapshot(model)
    with np.errstate(all="ignore"), pytest.raises(mlpx.NonFiniteLossError, match="running_var"):
        _fit(model, 1, X=X * np.float32(1e30), y=y, optimizer=None, lr=None)
    _assert_same(before, _snapshot(model))


@pytest.mark.parametrize("opt", ["momentum", "adam"])
def test_divergence_later_in_the_run_keeps_the_last_finite_epoch(opt):
    X, y = _data()
    seen = {}

    class Explode(Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                seen["after"] = _snapshot(self.model)
                self.model.optimizer_.lr = 1e30

    model = _model()
    with np.errstate(all="ignore"), \
            pytest.raises(mlpx.NonFiniteLossError, match="last finite epoch \\(2\\)"):
        _fit(model, 6, optimizer=opt, callbacks=[Explode()])
    _assert_same(seen["after"], _snapshot(model))
    assert len(model.history_) == 2 and model.epoch_ == 2
    _all_finite(model)


# ---------------------------------------------------------------------------- interruption
class _Interrupt(Callback):
    """Sends SIGINT (Ctrl-C) from inside optimiser step number `at`."""

    def __init__(self, at, hard=False):
        self.at, self.hard, self.count = at, hard, 0
        self.weights_after = {}

    def on_train_begin(self, logs=None):
        opt = self.model.optimizer_
        real = opt.step

        def step():
            self.count += 1
            if self.hard and self.count == self.at:
                opt.params[0].data[...] += 1.0  # half an update, then the interrupt
                raise KeyboardInterrupt
            real()
            self.weights_after[self.count] = self.model.get_weights()
            if self.count == self.at:
                signal.raise_signal(signal.SIGINT)

        opt.step = step


@pytest.mark.parametrize("at", [1, 3, 5, 7, 13])
@pytest.mark.parametrize("hard", [False, True], ids=["ctrl-c", "mid-step"])
def test_interrupt_then_save_and_resume_reproduces_the_uninterrupted_run(tmp_path, at, hard):
    """72 training samples / 16 -> 5 steps per epoch: interrupts inside epochs 0, 1 and 2."""
    straight = _model()
    hs = _fit(straight, 4, validation_split=0.25)
    model = _model()
    spy = _Interrupt(at, hard)
    with pytest.raises(KeyboardInterrupt):
        _fit(model, 4, validation_split=0.25, callbacks=[spy])
    if not hard:  # the weights of the last completed step
        for a, b in zip(model.get_weights(), spy.weights_after[at], strict=True):
            np.testing.assert_array_equal(a, b)
    assert model.epoch_ == (at if not hard else at - 1) // 5
    path = model.save(tmp_path / "interrupted.safetensors")
    resumed = _model(seed=11)
    hr = _fit(resumed, 4, validation_split=0.25, resume_from=path)
    _assert_same(_snapshot(straight), _snapshot(resumed))
    assert hr.history == hs.history


def test_interrupt_records_the_position_of_the_run():
    model = _model()
    with pytest.raises(KeyboardInterrupt):
        _fit(model, 4, validation_split=0.25, callbacks=[_Interrupt(7)])
    pos = model.trainer_.state_dict()
    assert (pos["epoch"], pos["step"]) == (1, 2)
    assert pos["fit_index"] == 0 and pos["loss_sum"] > 0
    assert model.epoch_ == 1 and len(model.history_) == 1


# --------------------------------------------------------------------------- atomic resume
@pytest.fixture
def good(tmp_path):
    model = _model()
    _fit(model, 2, validation_split=0.25)
    return model.save(tmp_path / "good.safetensors")


def _rewrite(path, tmp_path, change, version=container.FORMAT_VERSION):
    """A copy of the checkpoint at `path` with `change` applied, with a valid checksum of the
    given format version."""
    tensors, meta = container.read_file(path)
    change(tensors, meta)
    import json

    from _checkpoint_v1 import write_v1

    out = tmp_path / "bad.safetensors"
    meta["format_version"] = version
    if version == 1:
        write_v1(out, tensors, meta)
    else:
        out.write_bytes(container.encode(tensors, {"format": "mlpx", "format_version":
                                                    str(version), "mlpx": json.dumps(meta)}))
    return out


def _bad_optimizer_name(t, m):
    m["optimizer"]["config"]["name"] = "nosuch"


def _bad_optimizer_shape(t, m):
    t["optimizer.state.0.exp_avg"] = np.zeros((2, 2), np.float32)


def _bad_buffer_shape(t, m):
    t["layers.1.running_mean"] = np.zeros(5, np.float32)


def _nan_buffer(t, m):
    t["layers.1.running_var"] = np.full(16, np.nan, np.float32)


def _nan_weight(t, m):
    t["layers.3.W"][0, 0] = np.nan


def _missing_weight(t, m):
    del t["layers.3.b"]


@pytest.mark.parametrize("damage", [_bad_optimizer_name, _bad_optimizer_shape, _bad_buffer_shape,
                                    _nan_buffer, _nan_weight, _missing_weight])
def test_a_bad_checkpoint_changes_nothing(tmp_path, good, damage):
    model = _model(seed=8)
    _fit(model, 1, optimizer="momentum", lr=0.05)
    before = _snapshot(model)
    opt = model.optimizer_
    bad = _rewrite(good, tmp_path, damage)
    with pytest.raises((CheckpointError, ValueError)):
        _fit(model, 4, resume_from=bad, optimizer=None, lr=None)
    _assert_same(before, _snapshot(model))
    assert model.optimizer_ is opt and model.loss_.name == "cross_entropy"


@pytest.mark.parametrize("what", ["nan_X", "short_y", "bad_val", "wide_X", "bad_optimizer",
                                  "bad_callback"])
def test_bad_arguments_to_a_resumed_fit_change_nothing(good, what):
    X, y = _data()
    model = _model(seed=8)
    _fit(model, 1, optimizer="momentum", lr=0.05)
    before = _snapshot(model)
    opt = model.optimizer_
    kw = {"resume_from": good, "optimizer": None, "lr": None}
    if what == "nan_X":
        X = X.copy()
        X[3, 2] = np.nan
    elif what == "short_y":
        y = y[:-1]
    elif what == "bad_val":
        kw["validation_data"] = (X[:5], y[:4])
    elif what == "wide_X":
        X = np.hstack([X, X])
    elif what == "bad_optimizer":
        kw["optimizer"] = "nosuch"
    else:
        kw["callbacks"] = [lambda epoch, logs: None]
    with pytest.raises((ValueError, TypeError)):
        _fit(model, 4, X=X, y=y, **kw)
    _assert_same(before, _snapshot(model))
    assert model.optimizer_ is opt


def test_a_bad_checkpoint_does_not_build_an_unbuilt_model(tmp_path, good):
    bad = _rewrite(good, tmp_path, _bad_buffer_shape)
    model = mlpx.Sequential([Dense(16, activation="relu"), BatchNorm(), Dropout(0.2), Dense(3)],
                            seed=3)
    with pytest.raises(CheckpointError, match="running_mean"):
        _fit(model, 4, resume_from=bad, optimizer=None, lr=None)
    assert not model.built and model.optimizer_ is None and model.epoch_ == 0
    # the good file builds it and continues
    _fit(model, 3, resume_from=good, optimizer=None, lr=None, validation_split=0.25)
    assert model.epoch_ == 3


# ---------------------------------------------------------------- callbacks in checkpoints
def _callbacks(tmp_path):
    return [
        ReduceLROnPlateau(monitor="val_loss", patience=1, factor=0.5),
        EarlyStopping(monitor="val_loss", patience=4),
        ModelCheckpoint(tmp_path / "best.safetensors", save_best_only=True),
        ModelCheckpoint(tmp_path / "e{epoch:02d}.safetensors"),
        StepLR(step_size=3, gamma=0.7),
    ]


def test_resumed_run_stops_and_schedules_as_the_uninterrupted_one(tmp_path):
    X, y = _data(n=160)
    kw = dict(X=X, y=y, optimizer="sgd", lr=0.4, validation_split=0.3)
    straight = _model()
    (tmp_path / "a").mkdir()
    cbs = _callbacks(tmp_path / "a")
    hs = _fit(straight, 60, callbacks=cbs, **kw)
    stop = cbs[1]
    assert stop.stopped_epoch is not None and len(hs) < 60  # patience ran out
    assert len(set(hs.lr)) > 3  # both the plateau and the step schedule moved the lr
    for k in (2, len(hs) - 3):  # resume from an early and from a late epoch's checkpoint
        resumed = _model(seed=99)
        (tmp_path / f"r{k}").mkdir()
        cbr = _callbacks(tmp_path / f"r{k}")
        hr = _fit(resumed, 60, callbacks=cbr, resume_from=tmp_path / "a" / f"e{k:02d}.safetensors",
                  **kw)
        assert hr.history == hs.history
        assert cbr[1].stopped_epoch == stop.stopped_epoch and cbr[1].best_epoch == stop.best_epoch
        assert cbr[0].best == cbs[0].best and cbr[2].best == cbs[2].best
        _assert_same(_snapshot(straight), _snapshot(resumed))  # best weights restored alike


def test_callback_state_is_matched_by_class_and_position(tmp_path):
    X, y = _data()
    model = _model()
    stop = EarlyStopping(monitor="val_loss", patience=50)
    _fit(model, 3, validation_split=0.25, callbacks=[stop])
    path = model.save(tmp_path / "c.safetensors")
    # another callback in front does not shift EarlyStopping's state onto it
    other = _model()
    first, second = StepLR(step_size=2), EarlyStopping(monitor="val_loss", patience=50)
    _fit(other, 3, validation_split=0.25, callbacks=[first, second], resume_from=path)
    assert (second.best, second.best_epoch, second.wait) == (stop.best, stop.best_epoch, stop.wait)
    # a mismatch of configuration is refused up front and changes nothing
    third = _model(seed=1)
    before = _snapshot(third)
    with pytest.raises(ValueError, match="EarlyStopping.*monitor"):
        _fit(third, 4, validation_split=0.25, resume_from=path,
             callbacks=[EarlyStopping(monitor="val_accuracy")])
    _assert_same(before, _snapshot(third))


@pytest.mark.parametrize("at", [2, 6, 9])
def test_interrupt_inside_forward_keeps_the_last_completed_step(tmp_path, at):
    """A KeyboardInterrupt raised after BatchNorm updated its running statistics but before
    the update: the model holds exactly the state after the previous step."""
    straight = _model()
    _fit(straight, 3, validation_split=0.25)
    model = _model()
    states = {0: model.state_dict()}
    calls = {"n": 0}

    class Spy(Callback):
        def on_train_begin(self, logs=None):
            opt, bn = self.model.optimizer_, self.model.layers[1]
            real_step, real_forward = opt.step, bn.forward

            def step():
                real_step()
                states[opt.step_count] = self.model.state_dict()

            def forward(x, training=False):
                out = real_forward(x, training)
                if training:
                    calls["n"] += 1
                    if calls["n"] == at:
                        raise KeyboardInterrupt
                return out

            opt.step, bn.forward = step, forward

    with pytest.raises(KeyboardInterrupt):
        _fit(model, 3, validation_split=0.25, callbacks=[Spy()])
    after = model.state_dict()
    for k, v in states[at - 1].items():
        np.testing.assert_array_equal(after[k], v, err_msg=k)
    assert model.optimizer_.step_count == at - 1
    pos = model.trainer_.state_dict()
    assert (pos["epoch"], pos["step"]) == divmod(at - 1, 5)
    resumed = _model()
    _fit(resumed, 3, validation_split=0.25, resume_from=model.save(tmp_path / "i.safetensors"))
    _assert_same(_snapshot(straight), _snapshot(resumed))


def test_files_without_run_position_or_callback_state_still_resume(tmp_path, good):
    """Checkpoints written before the run's position and callback state were saved."""
    def strip(t, m):
        for key in ("step", "loss_sum", "stopped", "callbacks"):
            m["training"].pop(key)

    old = _rewrite(good, tmp_path, strip, version=1)
    straight = _model()
    _fit(straight, 3, validation_split=0.25)
    resumed = _model()
    stop = EarlyStopping(monitor="val_loss", patience=10, restore_best_weights=False)
    with pytest.warns(container.OldCheckpointWarning, match="re-save"):
        _fit(resumed, 3, validation_split=0.25, resume_from=old, callbacks=[stop])
    _assert_same(_snapshot(straight), _snapshot(resumed))
    with pytest.warns(container.OldCheckpointWarning):
        assert mlpx.load(old).epoch_ == 2
    # the current version requires them
    with pytest.raises(CheckpointError, match=r"training must hold.*missing \['step'"):
        mlpx.load(_rewrite(good, tmp_path, strip))
