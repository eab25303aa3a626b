"""Keras-style fit options: validation_freq, batch-level callback hooks and their cost, the
names on_train_begin announces, and resuming with metrics and validation_freq."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.callbacks import Callback, EarlyStopping


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    return X, (X[:, 0] > 0).astype(int)


def _model(backend="cpu"):
    return mlpx.MLP([3, 6, 2], activation="tanh", backend=backend, dtype="float64", seed=0)


@pytest.mark.parametrize("freq, validated", [(2, [1, 3]), ([1, 4], [0, 3]), (1, [0, 1, 2, 3, 4])])
def test_validation_freq(data, freq, validated):
    X, y = data
    h = _model().fit(X, y, loss="cross_entropy", epochs=5, verbose=0, validation_split=0.25,
                     validation_freq=freq)
    assert len(h.loss) == 5
    assert h.epochs_of("val_loss") == validated and len(h.val_accuracy) == len(validated)


def test_validation_freq_with_monitoring_callbacks_and_a_checkpoint(data, tmp_path):
    X, y = data
    stop = EarlyStopping(monitor="val_loss", patience=1)
    plateau = mlpx.schedules.ReduceLROnPlateau(monitor="val_loss", patience=0)
    ckpt = mlpx.ModelCheckpoint(tmp_path / "best.safetensors", save_best_only=True)
    model = _model()
    h = model.fit(X, y, loss="cross_entropy", lr=0.5, epochs=6, verbose=0,
                  validation_split=0.25, validation_freq=3, callbacks=[stop, plateau, ckpt])
    assert h.epochs_of("val_loss") == [2, 5]
    assert stop.best_epoch == 2 or stop.best_epoch == 5
    loaded = mlpx.load(ckpt.saved[-1])
    assert loaded.history_.epochs_of("val_loss") == h.epochs_of("val_loss")[: len(
        loaded.history_.val_loss)]
    assert loaded.history_.history["loss"] == h.loss[: len(loaded.history_)]


@pytest.mark.parametrize("freq", [0, -1, 1.5, "2", [0, 2], True])
def test_bad_validation_freq(data, freq):
    X, y = data
    with pytest.raises((TypeError, ValueError), match="validation_freq"):
        _model().fit(X, y, loss="cross_entropy", verbose=0, validation_freq=freq)


def test_on_train_begin_announces_every_key_each_epoch_records(data):
    X, y = data
    seen = {}

    class Spy(Callback):
        def on_train_begin(self, logs=None):
            seen["announced"] = list(logs["metrics"])

        def on_epoch_end(self, epoch, logs=None):
            seen.setdefault("logged", []).append(list(logs))

    _model().fit(X, y, loss="cross_entropy", epochs=2, verbose=0, validation_split=0.25,
                 metrics=["top_1_accuracy"],
                 callbacks=[Spy()])
    assert all(keys == seen["announced"] for keys in seen["logged"])
    assert seen["announced"][:3] == ["loss", "accuracy", "top_1_accuracy"]


def test_batch_hooks_run_around_every_step(data):
    X, y = data
    events = []

    class Spy(Callback):
        def on_train_batch_begin(self, batch, logs=None):
            events.append(("begin", self.model.epoch_, batch))

        def on_train_batch_end(self, batch, logs=None):
            events.append(("end", self.model.epoch_, batch, logs["loss"], logs["accuracy"]))

    model = _model()
    h = model.fit(X, y, loss="cross_entropy", lr=1e-12, epochs=2, batch_size=16, verbose=0,
                  callbacks=[Spy()])
    assert [e[:3] for e in events] == [(k, ep, b) for ep in (0, 1) for b in range(3)
                                       for k in ("begin", "end")]
    ends = [e for e in events if e[0] == "end"]
    # the running loss and accuracy of the last batch are the epoch's
    assert ends[2][3] == pytest.approx(h.loss[0], rel=1e-9)
    assert ends[2][4] == pytest.approx(h.accuracy[0], rel=1e-12)


def test_batch_hooks_that_read_nothing_cost_no_host_synchronisation(data, monkeypatch):
    X, y = data
    reads = {"n": 0}
    ops = mlpx.get_backend("cpu")
    real = type(ops).to_float

    def counting(self, x):
        reads["n"] += 1
        return real(self, x)

    monkeypatch.setattr(type(ops), "to_float", counting)

    class Counter(Callback):
        calls = 0

        def on_train_batch_end(self, batch, logs=None):
            Counter.calls += 1

    def syncs(batch_size, callbacks):
        reads["n"] = 0
        _model().fit(X, y, loss="cross_entropy", epochs=1, batch_size=batch_size, verbose=0,
                     shuffle=False, callbacks=callbacks)
        return reads["n"]

    base = syncs(40, [])
    assert syncs(1, []) == base  # 40 steps, no more reads than 1 step
    assert syncs(1, [Counter()]) == base and Counter.calls == 40

    class Reader(Callback):
        def on_train_batch_end(self, batch, logs=None):
            assert np.isfinite(logs["loss"])

    assert syncs(1, [Reader()]) >= base + 40  # asked for values: read every step


def test_a_batch_hook_can_stop_training_inside_an_epoch(data):
    X, y = data

    class StopAfterTwo(Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.stop_training = True

    model = _model()
    start = model.evaluate(X[:16], y[:16], loss="cross_entropy")
    h = model.fit(X, y, loss="cross_entropy", lr=1e-12, epochs=3, batch_size=8, verbose=0,
                  shuffle=False, callbacks=[StopAfterTwo()])
    assert len(h) == 1 and model.optimizer_.step_count == 2
    assert h.loss[0] == pytest.approx(start["loss"], rel=1e-9)  # the mean of the seen rows


def test_resume_inside_an_epoch_keeps_the_metric_sums(data, tmp_path):
    X, y = data
    kw = dict(loss="cross_entropy", lr=0.3, epochs=3, batch_size=8, verbose=0,
              metrics=["top_1_accuracy", lambda_free_metric], validation_split=0.2,
              validation_freq=2)
    straight = _model()
    hs = straight.fit(X, y, **kw)

    class Interrupt(Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.model.epoch_ == 1 and batch == 1:
                raise KeyboardInterrupt

    model = _model()
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, callbacks=[Interrupt()], **kw)
    path = model.save(tmp_path / "mid.safetensors")
    resumed = _model()
    hr = resumed.fit(X, y, resume_from=path, **kw)
    assert hr.history == hs.history
    assert hr.epochs_of("val_loss") == [1]


def lambda_free_metric(y_true, y_pred):
    return (y_pred.argmax(axis=1) == y_true).astype(float)
