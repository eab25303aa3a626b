"""mlpx.saving.reader: the one reader behind load, resume_from and load_weights; the trainer
of a loaded model holds the saved run (Trainer.from_run)."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.saving import reader
from mlpx.saving.container import CheckpointError
from mlpx.saving.records import RunRecord
from mlpx.training import Trainer


def _trained(tmp_path, epochs=2):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    model = mlpx.MLP([4, 8, 2], seed=1)
    model.fit(X, y, loss="cross_entropy", optimizer="adam", lr=0.01, epochs=epochs,
              batch_size=16, verbose=0)
    model.fit(X, y, epochs=epochs, batch_size=16, verbose=0)  # the model's second fit
    return model, model.save(tmp_path / "m.safetensors"), (X, y)


def test_read_checkpoint_gives_the_run_as_the_trainer_held_it(tmp_path):
    model, path, _ = _trained(tmp_path)
    record = reader.read_checkpoint(path)
    saved = model.trainer_.state_dict()
    assert record.run.fit_index == saved["fit_index"] == 1
    assert (record.run.epoch, record.run.step, record.run.stopped) == (2, 0, False)
    assert sorted(record.state) == sorted(model.state_dict())


def test_load_resume_and_load_weights_all_read_through_the_reader(tmp_path, monkeypatch):
    model, path, (X, y) = _trained(tmp_path)
    seen = []
    real = reader.read_record

    def spy(tensors, meta, p):
        seen.append(str(p))
        return real(tensors, meta, p)

    monkeypatch.setattr(reader, "read_record", spy)
    mlpx.load(path)
    mlpx.MLP([4, 8, 2], seed=1).fit(X, y, epochs=3, batch_size=16, verbose=0,
                                    resume_from=path)
    model.load_weights(path)
    assert seen == [str(path)] * 3


def test_trainer_from_run_holds_the_saved_position():
    model = mlpx.MLP([4, 8, 2], seed=1)
    run = RunRecord(epoch=3, fit_index=2, step=1, loss_sum=0.5, stopped=True,
                    metric_sums={"accuracy": [np.zeros(2)]})
    trainer = Trainer.from_run(model, run)
    state = trainer.state_dict()
    assert (state["fit_index"], state["epoch"], state["step"], state["loss_sum"],
            state["stopped"]) == (2, 3, 1, 0.5, True)
    assert state["metric_sums"] == run.metric_sums  # kept until a fit runs


def test_a_loaded_model_counts_fits_on_from_the_saved_one(tmp_path):
    _, path, (X, y) = _trained(tmp_path)
    loaded = mlpx.load(path)
    assert loaded.trainer_.fit_index == 1
    loaded.fit(X, y, epochs=1, batch_size=16, verbose=0)
    assert loaded.trainer_.fit_index == 2


def test_an_untrained_model_saves_an_unstarted_run(tmp_path):
    model = mlpx.MLP([4, 8, 2], seed=1)
    model.epoch_ = 5  # as set by hand: the count is what the file records
    record = reader.read_checkpoint(model.save(tmp_path / "u.safetensors"))
    assert (record.run.epoch, record.run.fit_index, record.run.step) == (5, 0, 0)
    assert record.optimizer is None and record.run.callbacks == []


def test_check_resumable_names_a_different_architecture(tmp_path):
    _, path, _ = _trained(tmp_path)
    record = reader.read_checkpoint(path)
    with pytest.raises(CheckpointError, match="different architecture.*load it with mlpx.load"):
        reader.check_resumable(record, mlpx.MLP([4, 9, 2]), path)
    with pytest.raises(CheckpointError, match="float32 weights, this model is float64"):
        reader.check_resumable(record, mlpx.MLP([4, 8, 2], dtype="float64"), path)
