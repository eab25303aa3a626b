"""An exception from any hook inside a fit (batch and epoch hooks of callbacks, a metric)
leaves the model and its run record at a step boundary: save, load and resume then end
exactly where the uninterrupted run does, as after Ctrl-C."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.callbacks import Callback
from mlpx.layers import BatchNorm, Dense, Dropout


class Boom(Exception):
    pass


def _data(n=96, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(np.int64) + (X[:, 3] > 1)
    return X, y


def _model(seed=3):
    return mlpx.Sequential([Dense(16, activation="relu"), BatchNorm(), Dropout(0.2), Dense(3)],
                           input_dim=6, seed=seed)


def Raiser(hook, at):  # noqa: N802 - builds a callback
    """A callback whose `hook` raises Boom on its `at`-th call (never when `at` is None)."""

    def maybe_raise(self, *args):
        self.calls += 1
        if self.calls == at:
            raise Boom(hook)

    cls = type(f"Raise_{hook}", (Callback,), {hook: maybe_raise, "calls": 0})
    return cls()


def _counting_metric(at):
    calls = []

    def hits(y_true, y_pred):
        calls.append(1)
        if len(calls) == at:
            raise Boom("metric")
        return (y_pred.argmax(axis=1) == y_true).astype(np.float64)

    return hits


def _fit(model, callbacks=(), metric_at=None, **kw):
    X, y = _data()
    return model.fit(X, y, loss="cross_entropy", optimizer="adam", lr=0.01, epochs=4,
                     batch_size=16, verbose=0, validation_split=0.25, shuffle=True,
                     metrics=[_counting_metric(metric_at), "top_2_accuracy"],
                     callbacks=list(callbacks), **kw)


def _assert_same_run(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
    assert a.optimizer_.step_count == b.optimizer_.step_count
    for x, y in zip(a.optimizer_.state, b.optimizer_.state, strict=True):
        for k in x:
            np.testing.assert_array_equal(mlpx.to_numpy(x[k]), mlpx.to_numpy(y[k]), err_msg=k)
    assert a.history_.history == b.history_.history


# 72 training rows / 16 -> 5 steps per epoch; validation runs the metric on 2 more batches
CASES = [
    ("on_train_batch_end", 3), ("on_train_batch_end", 5), ("on_train_batch_end", 9),
    ("on_train_batch_begin", 4), ("on_train_batch_begin", 6),
    ("on_epoch_begin", 2), ("on_epoch_end", 2),
]


@pytest.mark.parametrize("hook,at", CASES)
def test_a_hook_exception_leaves_a_run_that_saves_loads_and_resumes_exactly(tmp_path, hook,
                                                                             at):
    straight = _model()
    _fit(straight, [Raiser(hook, None)])
    model = _model()
    with pytest.raises(Boom):
        _fit(model, [Raiser(hook, at)])
    path = model.save(tmp_path / "failed.safetensors")
    mlpx.load(path, custom_objects={"hits": _counting_metric(None)})  # loads
    resumed = _model(seed=11)
    _fit(resumed, [Raiser(hook, None)], resume_from=path)
    _assert_same_run(straight, resumed)


@pytest.mark.parametrize("at", [2, 4, 7, 8])  # training steps, and (8) validation
def test_a_metric_exception_leaves_a_run_that_resumes_exactly(tmp_path, at):
    straight = _model()
    _fit(straight)
    model = _model()
    with pytest.raises(Boom):
        _fit(model, metric_at=at)
    path = model.save(tmp_path / "failed.safetensors")
    resumed = _model(seed=11)
    _fit(resumed, resume_from=path)
    _assert_same_run(straight, resumed)


def test_the_position_after_a_batch_hook_exception_is_the_last_completed_step():
    model = _model()
    with pytest.raises(Boom):
        _fit(model, [Raiser("on_train_batch_end", 8)])
    pos = model.trainer_.state_dict()
    assert (pos["epoch"], pos["step"]) == (1, 3)  # the 8th step ran: epoch 2, step 3 of 5
    assert model.optimizer_.step_count == 8 and pos["loss_sum"] > 0
    assert set(pos["metric_sums"]) == {"accuracy", "hits", "top_2_accuracy"}
