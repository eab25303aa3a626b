"""ModelCheckpoint checks its settings before the first training step; `mlpx demo` checks
--out before training."""

from __future__ import annotations

import re

import numpy as np
import pytest

import mlpx
from mlpx.callbacks import Callback, ModelCheckpoint


class _Steps(Callback):
    """Counts epochs begun: zero means the error came before any training."""

    def __init__(self):
        self.begun = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.begun += 1


def _fit(callback, validation=True, loss="cross_entropy", epochs=2):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) if loss == "cross_entropy" else X[:, :1]
    model = mlpx.MLP([3, 4, 2 if loss == "cross_entropy" else 1], seed=0)
    counter = _Steps()
    before = [w.copy() for w in model.get_weights()]
    try:
        model.fit(X, y, loss=loss, optimizer="sgd", lr=0.1, epochs=epochs, batch_size=8,
                  verbose=0, validation_split=0.25 if validation else 0.0,
                  callbacks=[counter, callback])
    finally:
        # nothing trained when the callback refused its settings
        trained = any((a != b).any() for a, b in zip(before, model.get_weights(), strict=True))
        callback._trained = trained or counter.begun > 0
    return model


def _refused_before_training(callback, exc, match, **kw):
    with pytest.raises(exc, match=match):
        _fit(callback, **kw)
    assert callback._trained is False


def test_missing_directory_is_refused_before_training(tmp_path):
    _refused_before_training(ModelCheckpoint(tmp_path / "nope" / "m-{epoch}.safetensors"),
                             FileNotFoundError, r"nope' does not exist")


def test_directory_that_is_a_file_is_refused_before_training(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    _refused_before_training(ModelCheckpoint(tmp_path / "x.txt" / "m.safetensors"),
                             NotADirectoryError, r"x\.txt' is a file")


def test_path_that_is_a_directory_is_refused_before_training(tmp_path):
    _refused_before_training(ModelCheckpoint(tmp_path), IsADirectoryError, "is a directory")


@pytest.mark.parametrize("pattern,match", [
    ("m-{val_los:.3f}.safetensors", r"\{val_los\}.*val_loss"),
    ("m-{epoch}-{mae}.safetensors", r"\{mae\}"),  # a metric this fit does not record
    ("m-{}.safetensors", "positional"),
    ("m-{epoch.safetensors", "not a valid pattern"),
    ("m-{loss:d}.safetensors", "could not be formatted"),
])
def test_bad_pattern_keys_are_refused_before_training(tmp_path, pattern, match):
    _refused_before_training(ModelCheckpoint(tmp_path / pattern), ValueError, match)


def test_validation_value_without_validation_data_says_how_to_get_it(tmp_path):
    cb = ModelCheckpoint(tmp_path / "m-{val_loss:.3f}.safetensors")
    _refused_before_training(cb, ValueError, "validation_split", validation=False)
    best = ModelCheckpoint(tmp_path / "best.safetensors", save_best_only=True)
    _refused_before_training(best, ValueError, r"monitors 'val_loss'.*validation_split",
                             validation=False)
    acc = ModelCheckpoint(tmp_path / "best.safetensors", monitor="val_accuracy",
                          save_best_only=True)
    _refused_before_training(acc, ValueError, "val_accuracy", loss="mse")


def test_valid_settings_save_as_before(tmp_path):
    cb = ModelCheckpoint(tmp_path / "m-{epoch:02d}-{val_loss:.3f}-{lr}.safetensors")
    _fit(cb)
    assert len(cb.saved) == 2 and all(mlpx.load(p).epoch_ >= 1 for p in cb.saved)
    per_epoch = tmp_path / "runs"
    per_epoch.mkdir()
    nested = ModelCheckpoint(str(per_epoch / "e{epoch}.safetensors"), save_best_only=True)
    _fit(nested)
    assert nested.saved and mlpx.load(nested.saved[-1]).epoch_ >= 1


def test_fit_announces_exactly_the_values_it_records(tmp_path):
    seen = {}

    class Spy(Callback):
        def on_train_begin(self, logs=None):
            seen["begin"] = list(logs["metrics"])

        def on_epoch_end(self, epoch, logs=None):
            seen["end"] = list(logs)

    for validation, loss in [(True, "cross_entropy"), (False, "cross_entropy"), (True, "mse")]:
        _fit(Spy(), validation=validation, loss=loss, epochs=1)
        assert seen["begin"] == seen["end"]


def test_demo_checks_out_before_training(tmp_path, monkeypatch, capsys):
    from mlpx.commands import demo
    from mlpx.commands.cli import main

    def no_training(*a, **k):
        raise AssertionError("the demo started working before checking --out")

    monkeypatch.setattr(demo, "load_digits_split", no_training)
    existing = tmp_path / "existing_file"
    existing.write_text("keep me")
    assert main(["demo", "--backend", "cpu", "--out", str(existing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(r"--out.*existing_file.*is a file", err[0]), err
    assert main(["demo", "--backend", "cpu", "--out", str(existing / "sub")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(r"existing_file' is a file", err[0]), err
    with pytest.raises(NotADirectoryError):
        demo.run_demo(existing)
    assert existing.read_text() == "keep me"
