"""Checkpoints: bitwise round trips, atomic writes, damaged files, resume_from."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import mlpx
from mlpx.callbacks import Callback, ModelCheckpoint
from mlpx.layers import BatchNorm, Dense, Dropout, LayerNorm, PReLU, Residual
from mlpx.saving import container
from mlpx.saving.container import CheckpointError


def _data(n=96, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int64) + (X[:, 3] > 1)
    return X, y


def _model(backend="cpu", dtype="float32", seed=3):
    return mlpx.Sequential(
        [Dense(16), BatchNorm(), PReLU(), Dropout(0.2),
         Residual([Dense(16, activation="tanh"), LayerNorm(), Dense(16)]), Dense(3)],
        input_dim=6, backend=backend, dtype=dtype, seed=seed,
    )


def _fit(model, epochs, **kw):
    X, y = _data()
    return model.fit(X, y, loss="cross_entropy", optimizer="adam", lr=0.01, epochs=epochs,
                     batch_size=16, verbose=0, validation_split=0.25, **kw)


def _buffers(model):
    return {f"{path}.{k}": mlpx.to_numpy(v).copy()
            for path, layer in model.walk()
            for k, v in layer.buffers().items()}


def _opt_state(model):
    return [{k: mlpx.to_numpy(v).copy() for k, v in s.items()} for s in model.optimizer_.state]


def _assert_same_state(a, b):
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        assert wa.dtype == wb.dtype
        np.testing.assert_array_equal(wa, wb)
    ba, bb = _buffers(a), _buffers(b)
    assert ba.keys() == bb.keys() and len(ba) == 4  # BatchNorm: 3 buffers; Dropout: its step
    for k in ba:
        np.testing.assert_array_equal(ba[k], bb[k], err_msg=k)
    sa, sb = _opt_state(a), _opt_state(b)
    assert len(sa) == len(sb) == len(a.parameters())
    for x, y in zip(sa, sb, strict=True):
        assert x.keys() == y.keys() == {"exp_avg", "exp_avg_sq"}
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    assert a.optimizer_.step_count == b.optimizer_.step_count > 0
    assert a.optimizer_.get_config() == b.optimizer_.get_config()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_load_round_trip_is_bitwise(tmp_path, dtype):
    model = _model(dtype=dtype)
    _fit(model, 2)
    path = model.save(tmp_path / "m.safetensors")
    loaded = mlpx.load(path)
    _assert_same_state(model, loaded)
    assert loaded.dtype == model.dtype and loaded.seed == model.seed
    assert loaded.loss_.name == "cross_entropy" and loaded.epoch_ == 2
    assert loaded.history_.history == model.history_.history
    X, y = _data(seed=1)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    # every piece of state came back: one more epoch on each stays identical bit for bit
    _fit(model, 1)
    _fit(loaded, 1)
    _assert_same_state(model, loaded)


def test_load_on_another_backend(tmp_path, backend):
    model = _model()
    _fit(model, 1)
    path = model.save(tmp_path / "m.safetensors")
    for target in (backend, "reference"):
        loaded = mlpx.load(path, backend=target)
        assert loaded.backend == mlpx.get_backend(target).name
        _assert_same_state(model, loaded)
        X, _ = _data(seed=2)
        np.testing.assert_allclose(loaded.predict(X), model.predict(X), rtol=1e-5, atol=1e-6)


def test_file_is_plain_safetensors(tmp_path):
    from safetensors.numpy import load_file, save_file

    model = _model()
    _fit(model, 1)
    path = model.save(tmp_path / "m.safetensors")
    arrays = load_file(str(path))  # any safetensors reader opens it
    np.testing.assert_array_equal(arrays["layers.0.W"], model.get_weights()[0])
    assert "layers.1.running_mean" in arrays and "optimizer.state.0.exp_avg" in arrays
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        meta = json.loads(f.read(n))["__metadata__"]
    assert meta["format"] == "mlpx" and meta["format_version"] == "2"
    info = json.loads(meta["mlpx"])
    assert info["model"]["layers"][4]["class"] == "Residual"
    assert info["optimizer"]["config"]["name"] == "adam"
    # and the reader accepts files written by the safetensors library
    other = tmp_path / "other.safetensors"
    save_file({"a": np.arange(6, dtype=np.float32).reshape(2, 3)}, str(other))
    tensors, _ = container.decode(other.read_bytes(), other)
    np.testing.assert_array_equal(tensors["a"], np.arange(6, dtype=np.float32).reshape(2, 3))
    with pytest.raises(CheckpointError, match="not an mlpx checkpoint"):
        mlpx.load(other)


def test_never_unpickles(tmp_path):
    import pickle

    bad = tmp_path / "evil.safetensors"
    bad.write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(CheckpointError, match="evil.safetensors"):
        mlpx.load(bad)


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model = _model()
    _fit(model, 1)
    path = tmp_path / "ckpt.safetensors"
    model.save(path)
    before = path.read_bytes()
    _fit(model, 1)

    def crash(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(container.os, "fsync", crash)  # dies after writing, before the rename
    with pytest.raises(OSError, match="No space"):
        model.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]  # the temporary file is gone
    assert mlpx.load(path).epoch_ == 1


def test_run_killed_during_a_checkpoint_write_resumes_from_the_previous_one(tmp_path,
                                                                            monkeypatch):
    """Epoch 3's save is killed mid-write; resuming from epoch 2's file gives exactly the
    weights of a run that was never interrupted."""
    path = tmp_path / "run.safetensors"
    straight = _model()
    _fit(straight, 4)

    real_write = container.write_atomic
    calls = []

    def dying_write(p, blob):
        calls.append(p)
        if len(calls) == 3:
            with open(str(p) + ".partial", "wb") as f:  # what a dying process leaves behind
                f.write(blob[: len(blob) // 2])
            raise KeyboardInterrupt("killed")
        real_write(p, blob)

    monkeypatch.setattr("mlpx.saving.writer.write_atomic", dying_write)
    crashed = _model()
    with pytest.raises(KeyboardInterrupt):
        _fit(crashed, 4, callbacks=[ModelCheckpoint(path, every_n_epochs=1)])
    monkeypatch.undo()
    assert mlpx.load(path).epoch_ == 2
    resumed = _model()
    hist = _fit(resumed, 4, resume_from=path)
    assert hist.epoch == [0, 1, 2, 3]
    np.testing.assert_array_equal(hist.loss, straight.history_.loss)
    np.testing.assert_array_equal(hist.val_loss, straight.history_.val_loss)
    _assert_same_state(straight, resumed)
    assert resumed.epoch_ == 4


def test_resume_from_continues_the_epoch_count(tmp_path):
    path = tmp_path / "c.safetensors"
    model = _model()
    _fit(model, 2)
    model.save(path)
    again = _model(seed=99)  # other initial weights: all of them come from the file
    seen = []

    class Record(Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(epoch)

    hist = _fit(again, 5, resume_from=path, callbacks=[Record()])
    assert seen == [2, 3, 4]
    assert hist.epoch == [0, 1, 2, 3, 4] and again.epoch_ == 5
    assert again.optimizer_.step_count == 5 * 5  # 72 training samples / 16 -> 5 steps
    assert _fit(again, 5, resume_from=path).epoch == [0, 1, 2, 3, 4]  # same again
    done = _model()
    assert len(_fit(done, 2, resume_from=path)) == 2  # nothing left to train


def test_save_into_a_missing_directory_names_the_directory(tmp_path):
    missing = tmp_path / "no" / "such"
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        _model().save(missing / "m.safetensors")
    assert not (tmp_path / "no").exists()


def test_resume_into_a_different_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "c.safetensors"
    model = _model()
    _fit(model, 1)
    model.save(path)
    other = mlpx.MLP([6, 8, 3], seed=0)
    with pytest.raises(CheckpointError, match="different architecture"):
        _fit(other, 2, resume_from=path)
    # same layer classes, another width: the message names the differing setting
    other.save(tmp_path / "mlp.safetensors")
    narrow = mlpx.MLP([6, 5, 3], seed=0)
    with pytest.raises(CheckpointError, match=r"layer 0 \(Dense\): units=8 in the checkpoint, 5"):
        _fit(narrow, 2, resume_from=tmp_path / "mlp.safetensors")
    with pytest.raises(CheckpointError, match="float64"):
        _fit(_model(dtype="float64"), 2, resume_from=path)


@pytest.fixture
def saved(tmp_path):
    model = _model()
    _fit(model, 1)
    return model.save(tmp_path / "good.safetensors")


@pytest.mark.parametrize("keep", [0, 5, 8, 40, "half", -1])
def test_truncated_file_names_the_file(saved, keep):
    blob = saved.read_bytes()
    n = len(blob) // 2 if keep == "half" else (len(blob) - 1 if keep == -1 else keep)
    saved.write_bytes(blob[:n])
    with pytest.raises(CheckpointError, match=r"good\.safetensors.*(truncated|corrupted)"):
        mlpx.load(saved)


@pytest.mark.parametrize("where", ["data", "header"])
def test_corrupted_file_names_the_file(saved, where):
    blob = bytearray(saved.read_bytes())
    n = int.from_bytes(blob[:8], "little")
    pos = len(blob) - 3 if where == "data" else 8 + n // 2
    blob[pos] ^= 0x5A
    saved.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match=r"good\.safetensors"):
        mlpx.load(saved)


def test_missing_file_and_newer_format(tmp_path, saved):
    with pytest.raises(CheckpointError, match="nope.safetensors.*does not exist"):
        mlpx.load(tmp_path / "nope.safetensors")
    tensors, meta = container.read_file(saved)
    blob = container.encode(tensors, {"format": "mlpx", "format_version": "99",
                                       "mlpx": json.dumps(meta)})
    saved.write_bytes(blob)
    with pytest.raises(CheckpointError, match="format version 99.*upgrade"):
        mlpx.load(saved)


def test_model_without_optimizer_saves_and_loads(tmp_path):
    model = mlpx.MLP([4, 5, 2], seed=1, dtype="float64")
    loaded = mlpx.load(model.save(tmp_path / "fresh.safetensors"))
    assert loaded.optimizer_ is None and loaded.loss_ is None and loaded.epoch_ == 0
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
