"""fit(resume_from=...) of a run with nothing left to train says so, and how to go on."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.callbacks import EarlyStopping


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 4))
    return X, (X[:, 0] > 0).astype(np.int64)


def _fit(model, epochs, **kw):
    X, y = _data()
    return model.fit(X, y, loss="cross_entropy", optimizer="adam", lr=0.01, epochs=epochs,
                     batch_size=16, verbose=2, **kw)


def test_resuming_a_run_early_stopping_ended_warns_and_the_documented_way_trains_on(
        tmp_path, capsys):
    model = mlpx.MLP([4, 8, 2], seed=0)
    stop = EarlyStopping(monitor="loss", min_delta=10.0)  # no epoch improves this much
    hist = _fit(model, 50, callbacks=[stop])
    assert stop.stopped_epoch is not None and len(hist) < 50
    path = model.save(tmp_path / "stopped.safetensors")
    capsys.readouterr()

    resumed = mlpx.MLP([4, 8, 2], seed=0)
    with pytest.warns(UserWarning, match=r"stopped by a callback .* after epoch "
                                         rf"{len(hist)}.*mlpx.load"):
        again = _fit(resumed, 80, resume_from=path)
    assert len(again) == len(hist) and "epoch" not in capsys.readouterr().out  # trained none

    loaded = mlpx.load(path)
    steps = loaded.optimizer_.step_count
    X, y = _data()
    more = loaded.fit(X, y, epochs=3, batch_size=16, verbose=0)  # its loss and optimiser
    assert len(more) == 3 and loaded.optimizer_.step_count == steps + 15


def test_resuming_a_completed_run_with_epochs_not_above_it_warns(tmp_path):
    model = mlpx.MLP([4, 8, 2], seed=0)
    _fit(model, 4)
    path = model.save(tmp_path / "done.safetensors")
    with pytest.warns(UserWarning, match=r"completed 4 epoch\(s\) and epochs=3 .* epochs > 4"):
        _fit(mlpx.MLP([4, 8, 2], seed=0), 3, resume_from=path)
    resumed = mlpx.MLP([4, 8, 2], seed=0)
    assert len(_fit(resumed, 6, resume_from=path)) == 6  # epochs above it: trains on, quietly
