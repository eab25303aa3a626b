"""CSVLogger and TensorBoard: what fit's epochs write to files."""

from __future__ import annotations

import builtins
import csv

import numpy as np
import pytest

import mlpx
from mlpx.callbacks import CSVLogger, TensorBoard


def _data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(int)


def _fit(callbacks, epochs=3, **kw):
    X, y = _data()
    model = mlpx.MLP([4, 8, 2], seed=0)
    hist = model.fit(X, y, loss="cross_entropy", epochs=epochs, batch_size=10, verbose=0,
                     callbacks=callbacks, **kw)
    return model, hist


def _rows(path, sep=","):
    with open(path, newline="") as f:
        return list(csv.reader(f, delimiter=sep))


def test_csv_logger_writes_a_header_and_one_row_per_epoch(tmp_path):
    path = tmp_path / "log.csv"
    X, y = _data(seed=1)
    _, hist = _fit([CSVLogger(path, separator=";")], validation_data=(X, y))
    rows = _rows(path, ";")
    assert rows[0] == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr",
                       "grad_norm"]
    assert [r[0] for r in rows[1:]] == ["0", "1", "2"]
    assert [float(r[1]) for r in rows[1:]] == pytest.approx(hist.history["loss"])
    assert [float(r[3]) for r in rows[1:]] == pytest.approx(hist.history["val_loss"])


def test_csv_logger_writes_na_for_epochs_without_validation(tmp_path):
    path = tmp_path / "log.csv"
    X, y = _data(seed=1)
    _fit([CSVLogger(path)], epochs=2, validation_data=(X, y), validation_freq=2)
    rows = _rows(path)
    assert rows[1][rows[0].index("val_loss")] == "NA"
    assert rows[2][rows[0].index("val_loss")] != "NA"


def test_csv_logger_starts_afresh_or_appends(tmp_path):
    path = tmp_path / "log.csv"
    _fit([CSVLogger(path)], epochs=2)
    _fit([CSVLogger(path)], epochs=2)
    assert len(_rows(path)) == 3  # a second fit replaced the file
    _fit([CSVLogger(path, append=True)], epochs=2)
    rows = _rows(path)
    assert len(rows) == 5 and rows[3][0] == "0" and rows.count(rows[0]) == 1  # one header


def test_csv_logger_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="separator must be one character"):
        CSVLogger(tmp_path / "a.csv", separator=", ")
    with pytest.raises(TypeError, match="filename must be a path"):
        CSVLogger(3)
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        _fit([CSVLogger(tmp_path / "missing" / "a.csv")], epochs=1)


def test_tensorboard_missing_package_is_a_clear_error(monkeypatch, tmp_path):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.split(".")[0] == "tensorboard":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ImportError, match="pip install tensorboard"):
        TensorBoard(tmp_path)


def test_tensorboard_writes_train_and_validation_scalars(tmp_path):
    pytest.importorskip("tensorboard", reason="the TensorBoard callback needs tensorboard "
                        "(in the dev extra)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    X, y = _data(seed=1)
    _, hist = _fit([TensorBoard(tmp_path / "logs")], validation_data=(X, y))

    def scalars(run, tag):
        acc = EventAccumulator(str(tmp_path / "logs" / run))
        acc.Reload()
        # scalars are written as tensor summaries of the scalars plugin (TensorBoard 2's form)
        return [(e.step, float(make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]

    loss = scalars("train", "epoch_loss")
    assert [s for s, _ in loss] == [0, 1, 2]
    assert [v for _, v in loss] == pytest.approx(hist.history["loss"], rel=1e-6)
    val = [v for _, v in scalars("validation", "epoch_loss")]
    assert val == pytest.approx(hist.history["val_loss"], rel=1e-6)
    assert len(scalars("train", "epoch_learning_rate")) == 3


def test_the_loggers_are_public_names():
    assert mlpx.CSVLogger is CSVLogger and mlpx.TensorBoard is TensorBoard
