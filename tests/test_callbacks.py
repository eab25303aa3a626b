"""Callbacks (EarlyStopping, ModelCheckpoint) and validation_split."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.callbacks import Callback, EarlyStopping, ModelCheckpoint


def _model(seed=0, dropout=False):
    layers = [mlpx.Dense(32, activation="relu"), mlpx.BatchNorm()]
    if dropout:
        layers.append(mlpx.Dropout(0.1))
    layers.append(mlpx.Dense(2))
    return mlpx.Sequential(layers, input_dim=10, dtype="float64", seed=seed)


def _noisy(n=120, seed=0):
    """Few samples, many noisy features: the network overfits and val_loss turns upwards."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 10))
    y = ((X[:, 0] + rng.normal(scale=1.5, size=n)) > 0).astype(np.int64)
    return X, y


class Recorder(Callback):
    """Keeps the weights and running statistics after every epoch."""

    def __init__(self):
        self.weights, self.running = {}, {}

    def on_epoch_end(self, epoch, logs=None):
        self.weights[epoch] = self.model.get_weights()
        bn = self.model.layers[1]
        self.running[epoch] = mlpx.to_numpy(bn.running_mean).copy()


def _assert_weights(model, expected, running=None):
    for a, b in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_array_equal(a, b)
    if running is not None:
        np.testing.assert_array_equal(mlpx.to_numpy(model.layers[1].running_mean), running)


def test_early_stopping_stops_and_restores_the_best_epoch():
    X, y = _noisy()
    model = _model()
    rec = Recorder()
    stop = EarlyStopping(monitor="val_loss", patience=3)
    hist = model.fit(X, y, loss="cross_entropy", optimizer="sgd", lr=0.3, epochs=200,
                     batch_size=16, validation_split=0.3, verbose=0, callbacks=[rec, stop])
    val = hist.val_loss
    best = int(np.argmin(val))
    assert stop.stopped_epoch is not None and len(hist) < 200  # patience ran out
    assert len(hist) == best + 3 + 1 and stop.best_epoch == best
    _assert_weights(model, rec.weights[best], rec.running[best])
    assert model.evaluate(X[84:], y[84:])["loss"] == pytest.approx(val[best], rel=1e-12)


def test_early_stopping_restores_the_best_weights_when_patience_never_runs_out():
    X, y = _noisy()
    model = _model()
    rec = Recorder()
    stop = EarlyStopping(monitor="val_loss", patience=1000)
    hist = model.fit(X, y, loss="cross_entropy", optimizer="sgd", lr=0.3, epochs=25,
                     batch_size=16, validation_split=0.3, verbose=0, callbacks=[rec, stop])
    assert len(hist) == 25 and stop.stopped_epoch is None
    best = int(np.argmin(hist.val_loss))
    assert best < 24  # the run overfits, so the last epoch is not the best one
    _assert_weights(model, rec.weights[best], rec.running[best])


def test_early_stopping_unit_logic():
    """Patience, min_delta and mode on a scripted sequence of values."""
    model = mlpx.MLP([2, 2], seed=0, dtype="float64")
    stop = EarlyStopping(monitor="val_accuracy", patience=2, min_delta=0.01)
    assert stop.mode == "max"
    stop.set_model(model)
    stop.on_train_begin()
    for epoch, acc in enumerate([0.5, 0.7, 0.705, 0.69]):
        model.set_weights([np.full((2, 2), epoch), np.full(2, epoch)])
        stop.on_epoch_end(epoch, {"val_accuracy": acc})
        assert model.stop_training == (epoch == 3)
    stop.on_train_end()
    assert stop.best_epoch == 1  # 0.705 is not better by min_delta
    _assert_weights(model, [np.full((2, 2), 1.0), np.full(2, 1.0)])
    no_restore = EarlyStopping(monitor="loss", restore_best_weights=False)
    no_restore.set_model(model)
    no_restore.on_train_begin()
    no_restore.on_epoch_end(0, {"loss": 1.0})
    model.set_weights([np.zeros((2, 2)), np.zeros(2)])
    no_restore.on_train_end()
    _assert_weights(model, [np.zeros((2, 2)), np.zeros(2)])


def test_monitoring_an_unrecorded_value_is_a_clear_error():
    X, y = _noisy()
    with pytest.raises(ValueError, match="val_loss.*validation_data= or validation_split="):
        _model().fit(X, y, loss="cross_entropy", epochs=2, verbose=0,
                     callbacks=[EarlyStopping()])
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping(mode="smaller")
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=-1)


def test_callbacks_that_are_not_callbacks_are_a_clear_error():
    X, y = _noisy(n=16)
    model = _model()
    with pytest.raises(TypeError, match=r"must be a list; pass callbacks=\[EarlyStopping"):
        model.fit(X, y, loss="cross_entropy", epochs=1, verbose=0,
                  callbacks=EarlyStopping(monitor="loss"))
    with pytest.raises(TypeError, match="has no set_model.*subclass mlpx.callbacks.Callback"):
        model.fit(X, y, loss="cross_entropy", epochs=1, verbose=0,
                  callbacks=[lambda epoch, logs: None])

    class DuckTyped:  # every hook, no base class: accepted
        def __init__(self):
            self.epochs = []

        def set_model(self, model):
            self.model = model

        def on_train_begin(self, logs=None): ...

        def on_epoch_begin(self, epoch, logs=None): ...

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append(epoch)

        def on_train_end(self, logs=None): ...

    duck = DuckTyped()
    model.fit(X, y, loss="cross_entropy", epochs=2, verbose=0, callbacks=[duck])
    assert duck.epochs == [0, 1]


def test_model_checkpoint_every_n_epochs_and_best_only(tmp_path):
    X, y = _noisy()
    every = ModelCheckpoint(tmp_path / "e{epoch:02d}.safetensors", every_n_epochs=2)
    best = ModelCheckpoint(tmp_path / "best.safetensors", monitor="val_loss",
                           save_best_only=True)
    model = _model(dropout=True)
    hist = model.fit(X, y, loss="cross_entropy", lr=0.3, epochs=12, batch_size=16,
                     validation_split=0.3, verbose=0, callbacks=[every, best])
    assert sorted(p.name for p in tmp_path.glob("e*")) == [
        f"e{k:02d}.safetensors" for k in (2, 4, 6, 8, 10, 12)
    ]
    assert mlpx.load(tmp_path / "e04.safetensors").epoch_ == 4
    val = hist.val_loss
    improving = [e for e in range(12) if val[e] < min(val[:e], default=np.inf)]
    assert len(best.saved) == len(improving)
    restored = mlpx.load(tmp_path / "best.safetensors")
    assert restored.epoch_ == improving[-1] + 1
    Xv, yv = X[84:], y[84:]
    assert restored.evaluate(Xv, yv)["loss"] == pytest.approx(min(val), rel=1e-12)


def test_validation_split_holds_out_the_last_fraction_before_shuffling():
    X, y = _noisy()
    a, b = _model(), _model()
    ha = a.fit(X, y, loss="cross_entropy", lr=0.1, epochs=3, batch_size=16,
               validation_split=0.25, verbose=0)
    hb = b.fit(X[:90], y[:90], loss="cross_entropy", lr=0.1, epochs=3, batch_size=16,
               validation_data=(X[90:], y[90:]), verbose=0)
    assert ha.history == hb.history
    _assert_weights(a, b.get_weights())


@pytest.mark.parametrize("bad", [1.0, -0.2, 1.5, "x"])
def test_validation_split_rejects_bad_fractions(bad):
    X, y = _noisy()
    with pytest.raises((ValueError, TypeError), match="validation_split"):
        _model().fit(X, y, loss="cross_entropy", validation_split=bad, verbose=0)


def test_validation_split_and_data_together_is_an_error():
    X, y = _noisy()
    with pytest.raises(ValueError, match="not both"):
        _model().fit(X, y, loss="cross_entropy", validation_split=0.2,
                     validation_data=(X, y), verbose=0)


def test_callback_base_class_is_shared():
    import mlpx.training

    assert mlpx.training.Callback is mlpx.Callback is Callback


def _sorted_classes(n=300, classes=3):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(classes), n // classes)
    X = rng.normal(size=(len(y), 10)) + y[:, None]
    return X, y


@pytest.mark.parametrize("one_hot", [False, True])
def test_validation_split_warns_when_the_held_out_classes_differ(one_hot):
    X, y = _sorted_classes()
    target = mlpx.one_hot(y, 3) if one_hot else y
    model = mlpx.MLP([10, 8, 3], seed=0)
    with pytest.warns(UserWarning, match=r"(?s)validation_split.*class.*2.*shuffle.*"
                                         r"validation_data="):
        model.fit(X, target, loss="cross_entropy", epochs=1, verbose=0, validation_split=0.2)


def test_validation_split_of_shuffled_classes_does_not_warn():
    import warnings

    X, y = _sorted_classes()
    order = np.random.default_rng(1).permutation(len(y))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mlpx.MLP([10, 8, 3], seed=0).fit(X[order], y[order], loss="cross_entropy", epochs=1,
                                         verbose=0, validation_split=0.2)
        # small hold-out parts miss classes by chance: no warning either
        Xs, ys = X[order][:40], y[order][:40]
        mlpx.MLP([10, 8, 3], seed=0).fit(Xs, ys, loss="cross_entropy", epochs=1, verbose=0,
                                         validation_split=0.1)
        # regression targets are not classes
        mlpx.MLP([10, 8, 1], seed=0).fit(X, y.astype(np.float32), loss="mse", epochs=1,
                                         verbose=0, validation_split=0.2)


def test_model_checkpoint_path_with_a_validation_value_skips_unvalidated_epochs(tmp_path):
    """validation_freq=2 leaves val_loss out of epochs 1 and 3: those epochs cannot name a
    file "{val_loss}", so they are not saved (instead of failing the fit)."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((64, 4)), rng.integers(0, 3, 64)
    model = mlpx.MLP([4, 8, 3], seed=0)
    cb = mlpx.ModelCheckpoint(str(tmp_path / "m-{epoch}-{val_loss:.4f}.safetensors"))
    model.fit(X, y, loss="cross_entropy", epochs=4, batch_size=16, verbose=0,
              validation_split=0.25, validation_freq=2, callbacks=[cb])
    saved = sorted(p.name for p in tmp_path.iterdir())
    assert [name.split("-")[1] for name in saved] == ["2", "4"], saved
