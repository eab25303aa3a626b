"""One model shared by threads: inference is re-entrant and never disturbs training."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import mlpx
from mlpx.layers import BatchNorm, Dense, Dropout, LayerNorm, PReLU, Residual


def _model(seed=0):
    return mlpx.Sequential(
        [Dense(32, activation="relu"), BatchNorm(), PReLU(), Dropout(0.1),
         Residual([Dense(32, activation="tanh"), LayerNorm(), Dense(32)]), Dense(3)],
        input_dim=8, seed=seed,
    )


def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 8)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1)
    return X, y


def _run_threads(target, n_threads):
    errors = []

    def wrapped(i):
        try:
            target(i)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_concurrent_inference_returns_what_serial_calls_return():
    X, y = _data()
    model = _model()
    model.fit(X, y, loss="cross_entropy", optimizer="adam", lr=0.01, epochs=2, batch_size=32,
              verbose=0)
    chunks = [X[i * 50:(i + 1) * 50] for i in range(12)]
    want_pred = [model.predict(c, batch_size=7) for c in chunks]
    want_proba = [model.predict_proba(c, batch_size=7) for c in chunks]
    want_eval = [model.evaluate(c, y[i * 50:(i + 1) * 50], batch_size=7)
                 for i, c in enumerate(chunks)]
    wrong = []

    def work(i):
        for r in range(30):
            k = (i + r) % len(chunks)
            if not np.array_equal(model.predict(chunks[k], batch_size=7), want_pred[k]):
                wrong.append(("predict", k))
            if not np.array_equal(model.predict_proba(chunks[k], batch_size=7), want_proba[k]):
                wrong.append(("predict_proba", k))
            got = model.evaluate(chunks[k], y[k * 50:(k + 1) * 50], batch_size=7)
            if got != want_eval[k]:
                wrong.append(("evaluate", k))

    _run_threads(work, 6)
    assert wrong == []


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_predict_during_fit_neither_changes_nor_breaks_training(opt):
    X, y = _data(n=2000)
    kw = dict(loss="cross_entropy", optimizer=opt, lr=0.01, epochs=6, batch_size=16,
              verbose=0, validation_split=0.1)
    alone = _model()
    alone.fit(X, y, **kw)
    shared = _model()  # same seed: the reference run above must be reproduced
    done = threading.Event()
    seen = []

    def reader(i):
        while not done.is_set():
            out = shared.predict(X[:40], batch_size=9)
            seen.append(np.isfinite(out).all())

    readers = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
    for t in readers:
        t.start()
    try:
        shared.fit(X, y, **kw)
    finally:
        done.set()
        for t in readers:
            t.join()
    assert len(seen) > 10 and all(seen)
    for a, b in zip(alone.get_weights(), shared.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    for k, v in alone.state_dict().items():
        np.testing.assert_array_equal(shared.state_dict()[k], v, err_msg=k)
    assert alone.history_.history == shared.history_.history


def test_inference_sees_a_consistent_snapshot_of_the_weights():
    """Each predict call computes with the weights of one completed step, never a mix."""
    X, y = _data(n=400)
    model = mlpx.MLP([8, 16, 3], seed=0)
    probe = X[:5]
    snapshots = []

    class Record(mlpx.Callback):
        def on_train_begin(self, logs=None):
            opt = self.model.optimizer_
            real = opt.step

            def step():
                real()
                snapshots.append(self.model.get_weights())

            opt.step = step

    done = threading.Event()
    outputs = []

    def reader(i):
        while not done.is_set():
            outputs.append(model.predict(probe))

    t = threading.Thread(target=reader, args=(0,))
    t.start()
    try:
        model.fit(X, y, loss="cross_entropy", lr=0.1, epochs=3, batch_size=8, verbose=0,
                  callbacks=[Record()])
    finally:
        done.set()
        t.join()
    # every output equals the forward pass of some step's weights (or the initial ones)
    ref = mlpx.MLP([8, 16, 3], seed=0)
    candidates = {ref.predict(probe).tobytes()}
    for ws in snapshots:
        ref.set_weights(ws)
        candidates.add(ref.predict(probe).tobytes())
    assert outputs and all(o.tobytes() in candidates for o in outputs)
