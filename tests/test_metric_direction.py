"""Monitored values improve in the direction their loss or metric declares (mode="auto")."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx import metrics
from mlpx.callbacks import EarlyStopping, ModelCheckpoint
from mlpx.schedules import ReduceLROnPlateau


def _regression(n=160, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8))
    y = X[:, :1] * 0.8 + rng.normal(scale=1.0, size=(n, 1))
    return X, y


def _model(seed=0):
    return mlpx.Sequential([mlpx.Dense(64, activation="relu"), mlpx.Dense(1)], input_dim=8,
                           dtype="float64", seed=seed)


@pytest.mark.parametrize(("key", "direction"), [
    ("loss", "min"), ("val_loss", "min"), ("val_mae", "min"), ("mse", "min"),
    ("val_r2", "max"), ("r2", "max"), ("val_accuracy", "max"), ("top_3_accuracy", "max"),
    ("val_my_metric", None),
])
def test_builtin_keys_declare_their_direction(key, direction):
    assert metrics.direction_of(key) == direction


@pytest.mark.parametrize("make", [
    lambda: EarlyStopping(monitor="val_r2"),
    lambda: ModelCheckpoint("x.safetensors", monitor="val_r2", save_best_only=True),
    lambda: ReduceLROnPlateau(monitor="val_r2"),
])
def test_auto_mode_maximises_r2(make):
    assert make().mode == "max"


def test_early_stopping_on_val_r2_restores_the_epoch_of_the_highest_r2():
    X, y = _regression()
    model = _model()
    stop = EarlyStopping(monitor="val_r2", patience=1000)
    hist = model.fit(X, y, loss="mse", optimizer="sgd", lr=0.05, epochs=30, batch_size=16,
                     validation_split=0.25, metrics=["r2"], verbose=0, callbacks=[stop])
    r2 = hist.history["val_r2"]
    assert stop.best_epoch == int(np.argmax(r2))
    assert np.argmax(r2) != np.argmin(r2)  # the two directions pick different epochs
    assert model.evaluate(X[120:], y[120:], metrics=["r2"])["r2"] == pytest.approx(
        max(r2), rel=1e-10)


def test_model_checkpoint_on_val_r2_saves_each_new_highest(tmp_path):
    X, y = _regression()
    ckpt = ModelCheckpoint(tmp_path / "e{epoch}.safetensors", monitor="val_r2",
                           save_best_only=True)
    hist = _model().fit(X, y, loss="mse", optimizer="sgd", lr=0.05, epochs=30, batch_size=16,
                        validation_split=0.25, metrics=["r2"], verbose=0, callbacks=[ckpt])
    r2 = np.array(hist.history["val_r2"])
    records = [e + 1 for e in range(len(r2)) if r2[e] > r2[:e].max(initial=-np.inf)]
    assert ckpt.saved == [str(tmp_path / f"e{e}.safetensors") for e in records]
    assert ckpt.best == pytest.approx(r2.max())


def test_custom_metrics_declare_their_direction():
    X, y = _regression()

    def closeness(y_true, y_pred):  # larger is better
        return -((y_true - y_pred) ** 2).mean(axis=1)

    closeness.direction = "max"
    stop = EarlyStopping(monitor="val_closeness", patience=1000)
    hist = _model().fit(X, y, loss="mse", optimizer="sgd", lr=0.05, epochs=12, batch_size=16,
                        validation_split=0.25, metrics=[closeness], verbose=0,
                        callbacks=[stop])
    assert stop.mode == "max"
    assert stop.best_epoch == int(np.argmax(hist.history["val_closeness"]))
    assert metrics.FunctionMetric(closeness, direction="min").direction == "min"

    class Spread(metrics.MeanMetric):
        name, direction = "spread", "max"

        def per_sample(self, ops, out, target):
            return ops.xp.abs(out - target).mean(axis=1)

    plateau = ReduceLROnPlateau(monitor="spread")
    _model().fit(X, y, loss="mse", optimizer="sgd", lr=0.05, epochs=1, metrics=[Spread()],
                 verbose=0, callbacks=[plateau])
    assert plateau.mode == "max"


def test_an_undeclared_custom_metric_under_auto_mode_is_a_clear_error():
    X, y = _regression()

    def closeness(y_true, y_pred):
        return -((y_true - y_pred) ** 2).mean(axis=1)

    for cb in (EarlyStopping(monitor="val_closeness"),
               ModelCheckpoint("x.safetensors", monitor="val_closeness", save_best_only=True)):
        with pytest.raises(ValueError, match="mode='max' or mode='min'"):
            _model().fit(X, y, loss="mse", epochs=1, validation_split=0.25,
                         metrics=[closeness], verbose=0, callbacks=[cb])
    stop = EarlyStopping(monitor="val_closeness", mode="max")  # stated: fine
    _model().fit(X, y, loss="mse", epochs=1, validation_split=0.25, metrics=[closeness],
                 verbose=0, callbacks=[stop])
    with pytest.raises(ValueError, match="direction"):
        metrics.FunctionMetric(closeness, direction="up")
