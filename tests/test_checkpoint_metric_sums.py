"""Checkpoints taken inside an epoch of a fit with metrics: the metrics' running sums
(`training.metric_sums`) and History lists of different lengths (validation_freq) round-trip,
and crafted files are refused with a CheckpointError naming the file and the entry.

Crafted files carry a valid checksum (as someone editing a file on purpose would), so each
test reaches the schema checks rather than the checksum.
"""

from __future__ import annotations

import numpy as np
import pytest
from _crafted import craft
from _crafted import refused as _refused

import mlpx
from mlpx.callbacks import Callback
from mlpx.saving import container
from mlpx.saving.container import CheckpointError
from mlpx.saving.reader import read_checkpoint


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    return X, X[:, :2] @ np.array([[1.0, 0.5], [0.2, -1.0]])


def _model(seed=0):
    return mlpx.MLP([3, 6, 2], activation="tanh", dtype="float64", seed=seed)


def doubled_error(y_true, y_pred):
    return 2 * abs(y_pred - y_true).mean(axis=1)


FIT = dict(loss="mse", lr=0.05, epochs=3, batch_size=8, verbose=0,
           metrics=["r2", "mae", doubled_error], validation_split=0.2, validation_freq=2)


class Interrupt(Callback):
    """Ctrl-C after the second step of the second epoch."""

    def on_train_batch_end(self, batch, logs=None):
        if self.model.epoch_ == 1 and batch == 1:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def mid_epoch(tmp_path_factory):
    """A run stopped inside its second epoch and saved there."""
    X, y = _data()
    model = _model()
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, callbacks=[Interrupt()], **FIT)
    path = model.save(tmp_path_factory.mktemp("mid") / "mid.safetensors")
    return model, path, container.read_file(path)


def test_a_mid_epoch_run_resumes_to_the_metrics_of_an_uninterrupted_one(mid_epoch):
    _, path, (tensors, meta) = mid_epoch
    assert meta["training"]["step"] == 2
    assert sorted(meta["training"]["metric_sums"]) == ["doubled_error", "mae", "r2"]
    assert tensors["metric_sums.r2.1"].shape == (2,)  # one mean per output
    X, y = _data()
    straight = _model().fit(X, y, **FIT)
    resumed = _model(seed=7).fit(X, y, resume_from=path, **FIT)
    assert resumed.history == straight.history
    assert resumed.epochs_of("val_loss") == [1]


def test_metric_sums_and_partial_history_round_trip_bitwise(mid_epoch, tmp_path):
    model, path, _ = mid_epoch
    loaded = mlpx.load(path)
    want, got = model.trainer_.state_dict()["metric_sums"], loaded.trainer_.state_dict()[
        "metric_sums"]
    assert list(want) == list(got)
    for name in want:
        for a, b in zip(want[name], got[name], strict=True):
            assert (a.dtype, a.shape, a.tobytes()) == (b.dtype, b.shape, b.tobytes())
    again = container.read_file(loaded.save(tmp_path / "again.safetensors"))[1]["training"]
    first = container.read_file(path)[1]["training"]
    for key in ("step", "loss_sum", "history", "metric_sums"):
        assert again[key] == first[key], key


def test_histories_with_validation_every_second_epoch_round_trip(tmp_path):
    X, y = _data()
    model = _model()
    h = model.fit(X, y, **{**FIT, "epochs": 5})
    loaded = mlpx.load(model.save(tmp_path / "m.safetensors"))
    assert loaded.history_.history == h.history
    assert loaded.history_.epochs_of("val_r2") == [1, 3] and len(h.val_r2) == 2
    meta = container.read_file(tmp_path / "m.safetensors")[1]
    assert meta["training"]["history"]["epochs_of"]["val_loss"] == [1, 3]


# ------------------------------------------------------------------ crafted documents
def _craft(tmp_path, original, edit=None):
    return craft(tmp_path, original, edit=edit)


def _sums(m):
    return m["training"]["metric_sums"]


def _rename(t, m, old, new):
    """Move a metric's sums to another name (document and tensors alike)."""
    parts = _sums(m).pop(old)
    _sums(m)[new] = [{"__tensor__": f"metric_sums.{new}.{i}"} for i in range(len(parts))]
    for i in range(len(parts)):
        t[f"metric_sums.{new}.{i}"] = t.pop(f"metric_sums.{old}.{i}")


def _hist(m):
    return m["training"]["history"]


def test_the_crafted_copy_itself_loads(tmp_path, mid_epoch):
    assert mlpx.load(_craft(tmp_path, mid_epoch[2])).trainer_.step == 2


@pytest.mark.parametrize("edit,fragments", [
    # the entry's structure
    (lambda t, m: m["training"].__setitem__("metric_sums", [1]),
     ["training.metric_sums", "must map metric names", "got list"]),
    (lambda t, m: _sums(m).__setitem__("mae", {"__tensor__": "metric_sums.mae.0"}),
     ["training.metric_sums['mae']", "list of 1 to 8 tensors"]),
    (lambda t, m: _sums(m).__setitem__("mae", [1.0, 2.0]),
     ["training.metric_sums['mae']", "list of 1 to 8 tensors"]),
    (lambda t, m: _sums(m).__setitem__("mae", []), ["training.metric_sums['mae']"]),
    (lambda t, m: _rename(t, m, "mae", "val_mae"),
     ["training.metric_sums['val_mae']", "not a metric name"]),
    (lambda t, m: _rename(t, m, "mae", "loss"),
     ["training.metric_sums['loss']", "not a metric name"]),
    (lambda t, m: _sums(m)["mae"].__setitem__(1, {"__tensor__": "metric_sums.mae.0"}),
     ["metric_sums.mae.1", "must reference the tensor 'metric_sums.mae.1'"]),
    (lambda t, m: m["training"].update(step=0, loss_sum=0),
     ["training.metric_sums", "empty at an epoch boundary"]),
    (lambda t, m: t.pop("metric_sums.mae.1"), ["the tensor table", "metric_sums.mae.1"]),
    # the arrays against the state mlpx's own metrics declare
    (lambda t, m: t.__setitem__("metric_sums.mae.0", t["metric_sums.mae.0"].astype(np.float32)),
     ["training.metric_sums['mae'][0]", "F32 []", "declares F64 []"]),
    (lambda t, m: t.__setitem__("metric_sums.r2.1", np.zeros(3)),
     ["training.metric_sums['r2'][1]", "F64 [3]", "declares F64 [2]"]),
    (lambda t, m: t.__setitem__("metric_sums.r2.0", np.zeros((1, 1))),
     ["training.metric_sums['r2'][0]", "F64 [1, 1]"]),
    (lambda t, m: t["metric_sums.r2.2"].__setitem__(0, np.nan),
     ["training.metric_sums['r2'][2]", "NaN or infinite"]),
    (lambda t, m: t.__setitem__("metric_sums.mae.1", np.array(-3.0)),
     ["training.metric_sums['mae'][1]", "must not be negative"]),
    (lambda t, m: (_sums(m)["r2"].pop(), t.pop("metric_sums.r2.3")),
     ["training.metric_sums['r2']", "holds 3 arrays", "declares 4"]),
    (lambda t, m: _rename(t, m, "mae", "accuracy"),
     ["training.metric_sums['accuracy']", "not recorded with the loss 'mse'"]),
    (lambda t, m: _rename(t, m, "mae", "top_3_accuracy"),
     ["training.metric_sums['top_3_accuracy']", "not recorded with the loss 'mse'"]),
    # a user's metric: its state is only known to the fit that records it, but float64
    (lambda t, m: t.__setitem__("metric_sums.doubled_error.0", np.zeros(2, np.float32)),
     ["training.metric_sums['doubled_error'][0]", "F32 [2]"]),
    (lambda t, m: t["metric_sums.doubled_error.0"].__setitem__((), np.inf),
     ["training.metric_sums['doubled_error'][0]", "NaN or infinite"]),
    # History lists of different lengths: the epochs they belong to
    (lambda t, m: _hist(m).__setitem__("epochs_of", [0]), ["training.history.epochs_of"]),
    (lambda t, m: _hist(m).__setitem__("epochs_of", {"val_x": [0]}),
     ["training.history.epochs_of['val_x']", "lacks"]),
    (lambda t, m: _hist(m).__setitem__("epochs_of", {"loss": [5]}),
     ["training.history.epochs_of['loss']", "epochs of training.history.epoch"]),
    (lambda t, m: _hist(m).__setitem__("epochs_of", {"loss": ["0"]}),
     ["training.history.epochs_of['loss']"]),
    (lambda t, m: _hist(m).__setitem__("epochs_of", {"loss": [0, 0]}),
     ["training.history.epochs_of['loss']", "once, in increasing order"]),
    (lambda t, m: (_hist(m)["epoch"].append(1), _hist(m).__setitem__("epochs_of",
                                                                     {"loss": [0, 1]})),
     ["training.history.epochs_of['loss']", "2 epochs for 1 values"]),
])
def test_metric_sums_and_history_entries_are_checked(tmp_path, mid_epoch, edit, fragments):
    _refused(_craft(tmp_path, mid_epoch[2], edit), *fragments)


def _resume(model, path, **kw):
    X, y = _data()
    return model.fit(X, y, resume_from=path, **{**FIT, **kw})


def test_sums_of_a_metric_the_resuming_fit_does_not_record_are_refused(tmp_path, mid_epoch):
    """A user's metric name passes the load (its state is the fit's to declare); the fit
    that resumes refuses sums of a metric it does not record, before changing anything."""
    path = _craft(tmp_path, mid_epoch[2], lambda t, m: _rename(t, m, "doubled_error", "bogus"))
    assert mlpx.load(path).trainer_.step == 2
    model = _model()
    before = model.state_dict()
    with pytest.raises(CheckpointError) as info:
        _resume(model, path)
    msg = str(info.value)
    assert "crafted.safetensors" in msg and "training.metric_sums['bogus']" in msg
    assert "does not record" in msg and "metrics=" in msg
    assert all((before[k] == v).all() for k, v in model.state_dict().items())
    assert model.trainer_ is None and model.optimizer_ is None
    with pytest.raises(CheckpointError, match=r"metric_sums\['r2'\].*does not record"):
        _resume(_model(), mid_epoch[1], metrics=["mae", doubled_error])


def test_a_user_metric_state_of_another_shape_is_refused_on_resume(tmp_path, mid_epoch):
    def widen(t, m):
        t["metric_sums.doubled_error.0"] = np.zeros(3)

    path = _craft(tmp_path, mid_epoch[2], widen)
    with pytest.raises(CheckpointError, match=r"crafted.*metric_sums\['doubled_error'\]\[0\]"
                                              r" is F64 \[3\]; the metric declares F64 \[\]"):
        _resume(_model(), path)


def test_files_without_metric_sums_still_load_and_resume(tmp_path, mid_epoch):
    """Written before fit recorded metrics: the partial epoch's metrics start afresh."""
    def drop(t, m):
        for name, parts in m["training"].pop("metric_sums").items():
            for i in range(len(parts)):
                del t[f"metric_sums.{name}.{i}"]

    path = _craft(tmp_path, mid_epoch[2], drop)
    record = read_checkpoint(path)
    assert record.run.metric_sums == {} and record.run.step == 2
    h = _resume(_model(), path)
    assert len(h.loss) == 3 and np.isfinite(h.mae).all()
