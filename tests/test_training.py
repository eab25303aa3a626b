"""The fit loop: SGD arithmetic, batch sizes, shuffling, history, progress output, callbacks."""

from __future__ import annotations

import signal

import numpy as np
import pytest

import mlpx


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(10, 3))
    y = rng.integers(0, 2, size=10)
    return X, y


def _model(backend, dtype="float64"):
    return mlpx.MLP([3, 4, 2], activation="tanh", backend=backend, dtype=dtype, seed=0)


def _sgd_replay(model, X, y, lr, batch_size):
    """w <- w - lr * grad, one mini-batch at a time in order, using loss_and_grad."""
    for start in range(0, len(X), batch_size):
        _, grads = model.loss_and_grad(X[start:start + batch_size], y[start:start + batch_size],
                                       loss="cross_entropy")
        ws = model.get_weights()
        model.set_weights([(w - lr * g) for w, g in zip(ws, grads, strict=True)])


@pytest.mark.parametrize("batch_size", [1, 3, 10, 1000])
def test_one_epoch_is_plain_sgd(backend, data, batch_size):
    """batch_size 1 (online), a partial last batch, exactly the data, more than the data."""
    X, y = data
    trained = _model(backend)
    trained.fit(X, y, loss="cross_entropy", lr=0.3, epochs=1, batch_size=batch_size,
                shuffle=False, verbose=0)
    replay = _model(backend)
    _sgd_replay(replay, X, y, 0.3, min(batch_size, len(X)))
    for a, b in zip(trained.get_weights(), replay.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    assert not np.allclose(trained.get_weights()[0], _model(backend).get_weights()[0])


def test_epoch_loss_is_the_sample_weighted_mean(backend, data):
    X, y = data
    model = _model(backend)
    start = model.evaluate(X, y, loss="cross_entropy")["loss"]
    hist = model.fit(X, y, loss="cross_entropy", lr=1e-12, epochs=1, batch_size=4, verbose=0)
    assert hist.loss[0] == pytest.approx(start, rel=1e-9)  # batches of 4, 4, 2 weighted


def test_shuffling_is_seeded(backend):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 3)).astype(np.float32)
    y = rng.integers(0, 2, size=64)
    runs = []
    for shuffle in (True, True, False):
        m = _model(backend, "float32")
        m.fit(X, y, loss="cross_entropy", lr=0.1, epochs=2, batch_size=8, shuffle=shuffle,
              verbose=0)
        runs.append(m.get_weights()[0])
    np.testing.assert_array_equal(runs[0], runs[1])  # same seed, same order
    assert not np.array_equal(runs[0], runs[2])  # the order did change
    m = _model(backend, "float32")
    m.fit(X, y, loss="cross_entropy", lr=0.1, epochs=1, batch_size=8, verbose=0)
    m.fit(X, y, epochs=1, batch_size=8, verbose=0)  # keeps loss and optimiser
    assert not np.array_equal(m.get_weights()[0], runs[0])  # a second fit draws a new order


def test_history_with_validation_data(backend, data):
    X, y = data
    model = _model(backend)
    hist = model.fit(X, y, loss="cross_entropy", lr=0.5, epochs=4, batch_size=5,
                     validation_data=(X[:6], y[:6]), verbose=0)
    assert {"loss", "val_loss", "val_accuracy", "lr"} <= set(hist.history)
    assert len(hist) == 4 and hist.epoch == [0, 1, 2, 3]
    assert all(len(v) == 4 for v in hist.history.values())
    assert hist["val_loss"] == hist.val_loss
    assert hist.lr == [0.5] * 4
    final = model.evaluate(X[:6], y[:6])
    assert hist.val_loss[-1] == pytest.approx(final["loss"], rel=1e-12)
    assert hist.val_accuracy[-1] == final["accuracy"]
    assert model.history_ is hist
    with pytest.raises(AttributeError, match="recorded: loss"):
        _ = hist.val_mae
    plain = _model(backend).fit(X, y, loss="cross_entropy", epochs=2, verbose=0)
    assert "loss" in plain and not {"val_loss", "val_accuracy"} & set(plain.history)


def test_history_plot(tmp_path, data):
    X, y = data
    hist = _model("cpu").fit(X, y, loss="cross_entropy", epochs=3, verbose=0,
                             validation_data=(X, y))
    png = tmp_path / "curves.png"
    hist.plot(png)
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_verbose_0_is_silent(backend, data, capsys):
    X, y = data
    _model(backend).fit(X, y, loss="cross_entropy", epochs=2, verbose=0)
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_verbose_1_shows_a_progress_bar(backend, data, capsys):
    X, y = data
    _model(backend).fit(X, y, loss="cross_entropy", epochs=2, batch_size=5, verbose=1)
    out, err = capsys.readouterr()
    assert out == ""
    assert "epoch 2/2" in err and "2/2" in err and "batch" in err  # tqdm on stderr
    assert "loss=" in err


def test_verbose_2_prints_one_line_per_epoch(backend, data, capsys):
    X, y = data
    _model(backend).fit(X, y, loss="cross_entropy", epochs=3, verbose=2)
    out, _ = capsys.readouterr()
    lines = [ln for ln in out.splitlines() if ln.startswith("epoch ")]
    assert len(lines) == 3 and lines[-1].startswith("epoch 3/3 loss=")


def test_callbacks_and_early_stop(backend, data):
    X, y = data
    events = []

    class Spy(mlpx.Callback):
        def on_train_begin(self, logs=None):
            events.append("begin")

        def on_epoch_begin(self, epoch, logs=None):
            events.append(f"e{epoch}")

        def on_epoch_end(self, epoch, logs=None):
            events.append(f"end{epoch}:{'loss' in logs}")
            if epoch == 1:
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            events.append("done")

    hist = _model(backend).fit(X, y, loss="cross_entropy", epochs=10, verbose=0,
                               callbacks=[Spy()])
    assert events == ["begin", "e0", "end0:True", "e1", "end1:True", "done"]
    assert len(hist) == 2


def test_zero_epochs_changes_nothing(backend, data):
    X, y = data
    model = _model(backend)
    before = model.get_weights()
    hist = model.fit(X, y, loss="cross_entropy", epochs=0, verbose=0)
    assert len(hist) == 0
    for a, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_optimizer_object_and_lr_conflict(backend, data):
    X, y = data
    with pytest.raises(ValueError, match="either to the optimiser object or as lr="):
        _model(backend).fit(X, y, loss="cross_entropy", optimizer=mlpx.optim.SGD(lr=0.1),
                            lr=0.2, verbose=0)
    model = _model(backend)
    model.fit(X, y, loss="cross_entropy", optimizer=mlpx.optim.SGD(lr=0.2), verbose=0)
    assert model.optimizer_.lr == 0.2


def test_regression_and_multilabel_training(backend):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 4)).astype(np.float32)
    y = (X @ rng.normal(size=(4, 2))).astype(np.float32)
    model = mlpx.MLP([4, 16, 2], activation="relu", backend=backend, seed=0)
    hist = model.fit(X, y, loss="mse", lr=0.05, epochs=30, batch_size=32, verbose=0)
    assert hist.loss[-1] < 0.05 * hist.loss[0]
    Y = (X[:, :3] > 0).astype(np.float32)  # three independent labels
    ml = mlpx.MLP([4, 16, 3], activation="relu", backend=backend, seed=0)
    ml.fit(X, Y, loss="bce", lr=0.5, epochs=30, batch_size=32, verbose=0)
    assert ml.evaluate(X, Y)["accuracy"] > 0.95


def test_verbose_1_keeps_one_progress_line_per_epoch(data, capsys):
    X, y = data
    _model("cpu").fit(X, y, loss="cross_entropy", epochs=3, batch_size=5, verbose=1)
    err = capsys.readouterr().err
    # tqdm redraws a bar with "\r" and ends a finished (left) bar with "\n": one per epoch
    finished = [ln.rsplit("\r", 1)[-1] for ln in err.split("\n") if ln.strip()]
    assert [ln.split(":")[0] for ln in finished] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert all("loss=" in ln for ln in finished)


class _CtrlC(mlpx.callbacks.Callback):
    """Sends SIGINT (Ctrl-C) at the end of batch `at` of the first epoch."""

    def __init__(self, at):
        self.at = at

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.at:
            signal.raise_signal(signal.SIGINT)


@pytest.mark.parametrize(("at", "where"), [(1, "step 2 of epoch 1"), (4, "epoch 1")])
def test_ctrl_c_says_where_the_run_stopped_and_how_to_resume(data, at, where):
    """The KeyboardInterrupt's text is all a user sees after Ctrl-C: it names the position
    (a step inside an epoch, or an epoch's end) and the save + resume_from recipe."""
    X, y = data
    model = _model("cpu")
    with pytest.raises(KeyboardInterrupt) as info:
        model.fit(X, y, loss="cross_entropy", batch_size=2, epochs=3, verbose=0,
                  callbacks=[_CtrlC(at)])
    assert str(info.value).startswith(f"fit stopped by Ctrl-C after {where};")
    assert "model.save(path), then fit(..., resume_from=path)" in str(info.value)
