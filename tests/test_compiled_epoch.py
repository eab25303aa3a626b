"""Chunks of compiled steps per call (mlpx.backends.compiled_epoch) against one compiled step
per call: the same weights, optimiser state, history and metrics bit for bit, the same
divergence, Ctrl-C and resume behaviour, and one step per call wherever Python must run
between the steps."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from _helpers import library_threads, loss_targets_data, threads_back

import mlpx
from mlpx import optim
from mlpx.backends import compiled_epoch, compiled_step
from mlpx.errors import NonFiniteLossError

pytestmark = pytest.mark.skipif(
    compiled_step._numpy_gemm_addresses() is None,
    reason="NumPy's BLAS is not the bundled ILP64 OpenBLAS the compiled step calls",
)


@pytest.fixture
def chunks(monkeypatch):
    """Counts the chunks run and the steps they took; chunks of at most 4 steps, so that an
    epoch takes several."""
    seen = {"calls": 0, "steps": 0}
    run = compiled_epoch.CompiledEpoch.run

    def counted(self, order, s0, s1, *args, **kwargs):
        seen["calls"] += 1
        seen["steps"] += s1 - s0
        return run(self, order, s0, s1, *args, **kwargs)

    monkeypatch.setattr(compiled_epoch.CompiledEpoch, "run", counted)
    monkeypatch.setattr(compiled_epoch, "MAX_STEPS", 4)
    return seen




def _model(sizes, activation="relu", dtype="float32"):
    return mlpx.MLP(sizes, activation=activation, backend="cpu", dtype=dtype, seed=3)


def _fit(monkeypatch, chunked, sizes, activation, loss, make_opt, dtype="float32", n=150,
         batch_size=16, epochs=3, model=None, **fit_kw):
    monkeypatch.setenv("MLPX_COMPILED_STEP", "1")
    monkeypatch.setenv("MLPX_COMPILED_EPOCH", "1" if chunked else "0")
    X, y = loss_targets_data(n, sizes[0], sizes[-1], loss, dtype)
    model = model or _model(sizes, activation, dtype)
    hist = model.fit(X, y, loss=loss, optimizer=make_opt(), epochs=epochs,
                     batch_size=batch_size, verbose=0, **fit_kw)
    return model, hist


def _assert_same_run(a, b):
    (ma, ha), (mb, hb) = a, b
    for wa, wb in zip(ma.get_weights(), mb.get_weights(), strict=True):
        assert wa.dtype == wb.dtype and wa.tobytes() == wb.tobytes()
    sa, sb = ma.optimizer_.state_dict(), mb.optimizer_.state_dict()
    assert sa["step_count"] == sb["step_count"]
    for da, db in zip(sa["state"], sb["state"], strict=True):
        assert {k: v.tobytes() for k, v in da.items()} == {k: v.tobytes() for k, v in db.items()}
    assert ha.history == hb.history  # loss, accuracy, grad_norm, lr of every epoch


def _sgd():
    return optim.SGD(lr=0.05)


CASES = [
    # hidden activation, loss, optimiser
    ("relu", "cross_entropy", _sgd),
    ("tanh", "cross_entropy", lambda: optim.SGD(lr=0.05, momentum=0.9)),
    ("gelu", "mse", lambda: optim.SGD(lr=0.02, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("sigmoid", "bce", lambda: optim.Adam(lr=1e-2)),
    ("elu", "cross_entropy", lambda: optim.AdamW(lr=1e-2, weight_decay=0.1)),
    ("leaky_relu", "bce", _sgd),
    ("identity", "mse", _sgd),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize(("activation", "loss", "make_opt"), CASES)
def test_bitwise_equal_to_one_step_per_call(monkeypatch, chunks, dtype, shuffle, activation,
                                            loss, make_opt):
    args = ([20, 12, 9, 5], activation, loss, make_opt, dtype)
    old = _fit(monkeypatch, False, *args, shuffle=shuffle)
    assert chunks["calls"] == 0
    new = _fit(monkeypatch, True, *args, shuffle=shuffle)
    # 150 rows in batches of 16: ten steps an epoch, the last of 6 rows; the first nine in
    # chunks of at most 4, the last on its own (it records the gradient norm)
    assert chunks == {"calls": 3 * 3, "steps": 3 * 9}
    _assert_same_run(old, new)


@pytest.mark.parametrize("loss", ["cross_entropy", "mse", "bce"])
def test_the_chunk_kernels_can_be_cached(monkeypatch, chunks, loss):
    """Each loss's chunk kernel compiles no address in (the shared loop is inlined, so its
    function arguments become direct calls): Numba can keep it in its on-disk cache, and a
    new process loads it instead of compiling it again."""
    metrics = None if loss == "mse" else ["accuracy"]
    _fit(monkeypatch, True, [20, 12, 5], "relu", loss, _sgd, metrics=metrics)
    assert chunks["calls"] > 0
    kernel = compiled_epoch._kernels().STEPS[compiled_step._loss_kernel(
        mlpx.losses.get(loss))]
    assert kernel.overloads
    for compiled in kernel.overloads.values():
        assert not compiled.library.has_dynamic_globals


@pytest.mark.parametrize("batch_size", [2, 7, 64, 150])
def test_batch_sizes_and_whole_epochs_per_call(monkeypatch, chunks, batch_size):
    monkeypatch.setattr(compiled_epoch, "MAX_STEPS", 64)
    args = ([20, 12, 5], "relu", "cross_entropy", lambda: optim.Adam(lr=1e-2))
    old = _fit(monkeypatch, False, *args, batch_size=batch_size)
    new = _fit(monkeypatch, True, *args, batch_size=batch_size)
    steps = -(-150 // batch_size)
    assert chunks["steps"] == 3 * (steps - 1)
    _assert_same_run(old, new)


@pytest.mark.parametrize("path", ["numpy", "onednn"])
def test_one_thread_routes_run_in_chunks(monkeypatch, chunks, path):
    """GEMM routes on one thread: chunks of compiled steps, the layer path's run bit for
    bit, and the libraries' thread counts back to mlpx's afterwards."""
    from mlpx.backends import _onednn, gemm_routes

    if path == "onednn" and not _onednn.available():
        pytest.skip("oneDNN (the onednn-cpu-gomp wheel) is not installed")
    monkeypatch.setattr(gemm_routes, "route_for",
                        lambda *a: gemm_routes.Route(path, one_thread=True))
    before = library_threads()
    args = ([40, 256, 64, 5], "relu", "cross_entropy", lambda: optim.Adam(lr=1e-3))
    gemm_routes.forget()
    try:
        monkeypatch.setenv("MLPX_COMPILED_STEP", "0")  # the layer path
        X, y = loss_targets_data(150, 40, 5, "cross_entropy", "float32")
        layers = _model(args[0])
        old_hist = layers.fit(X, y, loss="cross_entropy", optimizer=args[3](), epochs=3,
                              batch_size=16, verbose=0)
        gemm_routes.forget()
        new = _fit(monkeypatch, True, *args)
        assert library_threads() == threads_back(path, before)
    finally:
        gemm_routes.forget()
    assert chunks == {"calls": 3 * 3, "steps": 3 * 9}
    _assert_same_run((layers, old_hist), new)


def test_chunks_are_bounded_by_work():
    model = _model([784, 1024, 1024, 10])
    model.compile(loss="cross_entropy", optimizer="sgd")
    model.build(784)
    step = compiled_step.plan(model, model.loss_, model.optimizer_)
    X, y = loss_targets_data(600, 784, 10, "cross_entropy", "float32")
    source = model.ops.batch_source(X, y, 256, np.float32)
    g = {256: np.empty((256, 10), np.float32)}
    big = compiled_epoch.plan(step, source, model.loss_, [], g)
    weights = 784 * 1024 + 1024 * 1024 + 1024 * 10
    assert big.chunk == max(1, compiled_epoch.MAX_WORK // (256 * weights))
    small = _model([784, 256, 128, 10])
    small.compile(loss="cross_entropy", optimizer="sgd")
    small.build(784)
    step = compiled_step.plan(small, small.loss_, small.optimizer_)
    source = small.ops.batch_source(X, y, 32, np.float32)
    assert compiled_epoch.plan(step, source, small.loss_, [],
                               {32: np.empty((32, 10), np.float32)}).chunk == 64


def test_other_metrics_take_one_step_per_call(monkeypatch, chunks):
    args = ([20, 12, 5], "relu", "cross_entropy", _sgd)
    kw = {"metrics": ["accuracy", "top_2_accuracy"], "validation_split": 0.2}
    old = _fit(monkeypatch, False, *args, **kw)
    new = _fit(monkeypatch, True, *args, **kw)
    assert chunks["calls"] == 0
    _assert_same_run(old, new)
    mse_args = ([20, 12, 5], "relu", "mse", _sgd)
    _fit(monkeypatch, True, *mse_args, metrics=["mae"])
    assert chunks["calls"] == 0
    _fit(monkeypatch, True, *mse_args, metrics=[])
    assert chunks["calls"] > 0


def test_validation_and_explicit_accuracy(monkeypatch, chunks):
    args = ([20, 12, 5], "relu", "bce", _sgd)
    kw = {"metrics": ["accuracy"], "validation_split": 0.2}
    old = _fit(monkeypatch, False, *args, **kw)
    new = _fit(monkeypatch, True, *args, **kw)
    assert chunks["calls"] > 0
    _assert_same_run(old, new)


def test_batch_hooks_take_one_step_per_call(monkeypatch, chunks):
    class Count(mlpx.callbacks.Callback):
        n = 0

        def on_train_batch_end(self, batch, logs=None):
            Count.n += 1

    args = ([20, 12, 5], "relu", "cross_entropy", _sgd)
    old = _fit(monkeypatch, False, *args, callbacks=[Count()])
    new = _fit(monkeypatch, True, *args, callbacks=[Count()])
    assert chunks["calls"] == 0 and Count.n == 2 * 3 * 10
    _assert_same_run(old, new)
    for fit_kw in ({"clip_norm": 1.0}, {"gradient_accumulation_steps": 2},
                   {"sample_weight": np.ones(150)}):
        _fit(monkeypatch, True, *args, **fit_kw)
    assert chunks["calls"] == 0


def test_turned_off_by_the_environment(monkeypatch, chunks):
    _fit(monkeypatch, False, [20, 12, 5], "relu", "cross_entropy", _sgd)
    assert chunks["calls"] == 0
    monkeypatch.setenv("MLPX_COMPILED_EPOCH", "off")
    assert not compiled_epoch.enabled()


def test_a_part_swapped_between_epochs(monkeypatch, chunks):
    """An optimiser swapped by a callback: the chunks stand aside for the new one."""

    class Swap(mlpx.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                self.model.optimizer_ = optim.Adam(lr=1e-3)
                self.model.optimizer_.bind(self.model.parameters(), self.model.ops)

    args = ([20, 12, 5], "relu", "cross_entropy", _sgd)
    runs = [_fit(monkeypatch, chunked, *args, callbacks=[Swap()])[0].get_weights()
            for chunked in (False, True)]
    assert chunks["calls"] == 3  # epoch 0 only
    for a, b in zip(*runs, strict=True):
        assert a.tobytes() == b.tobytes()


def test_progress_bar_counts_every_step(monkeypatch, chunks):
    from mlpx import progress

    counted = []
    update = progress.EpochProgress.update

    def count(self, n=1):
        counted.append(n)
        update(self, n)

    monkeypatch.setattr(progress.EpochProgress, "update", count)
    _fit(monkeypatch, True, [20, 12, 5], "relu", "cross_entropy", _sgd)
    assert sum(counted) == 3 * 10 and chunks["calls"] == 3 * 3


def test_divergence_mid_epoch_as_with_one_step_per_call(monkeypatch, chunks):
    """A loss that overflows inside a chunk: the same error, and the model keeps the state
    of its last finite epoch, as with one step per call."""

    def huge():
        return optim.SGD(lr=1e6)

    results = []
    for chunked in (False, True):
        model = _model([20, 12, 5])
        _fit(monkeypatch, chunked, [20, 12, 5], "relu", "mse", _sgd, model=model, epochs=1)
        before = [w.tobytes() for w in model.get_weights()]
        with pytest.raises(NonFiniteLossError) as err:
            _fit(monkeypatch, chunked, [20, 12, 5], "relu", "mse", huge, model=model,
                 epochs=3)
        assert [w.tobytes() for w in model.get_weights()] == before
        results.append((str(err.value), before, model.epoch_, model.history_.history))
    assert chunks["calls"] > 1
    assert results[0] == results[1]
    assert "the training loss became nan" in results[0][0] and "before this fit" in results[0][0]


def _interrupt_after_chunk(monkeypatch, at):
    """Ctrl-C (SIGINT) during chunk number `at`: acted on after it."""
    run = compiled_epoch.CompiledEpoch.run
    seen = {"n": 0}

    def interrupted(self, *args, **kwargs):
        out = run(self, *args, **kwargs)
        seen["n"] += 1
        if seen["n"] == at:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(compiled_epoch.CompiledEpoch, "run", interrupted)


@pytest.mark.parametrize("at", [1, 2, 5])
def test_ctrl_c_stops_after_the_chunk_and_resume_repeats_the_run(monkeypatch, chunks,
                                                                   tmp_path, at):
    args = ([20, 12, 5], "relu", "cross_entropy", lambda: optim.Adam(lr=1e-2))
    straight = _fit(monkeypatch, True, *args, validation_split=0.2)
    per_step = _fit(monkeypatch, False, *args, validation_split=0.2)
    _assert_same_run(straight, per_step)
    _interrupt_after_chunk(monkeypatch, at)
    model = _model([20, 12, 5])
    with pytest.raises(KeyboardInterrupt):
        _fit(monkeypatch, True, *args, model=model, validation_split=0.2)
    # 120 training rows in batches of 16: 8 steps an epoch, chunks of steps 0-3 and 4-6
    epoch, second = divmod(at - 1, 2)
    assert (model.trainer_.epoch, model.trainer_.step) == (epoch, 7 if second else 4)
    path = model.save(tmp_path / "interrupted.safetensors")
    resumed = _model([20, 12, 5])
    resumed = _fit(monkeypatch, True, *args, model=resumed, validation_split=0.2,
                   resume_from=path)
    _assert_same_run(straight, resumed)


def test_resume_inside_an_epoch_with_one_step_per_call(monkeypatch, chunks, tmp_path):
    """A position saved by one step per call resumes in chunks (and the other way round)."""
    args = ([20, 12, 5], "relu", "bce", lambda: optim.SGD(lr=0.05, momentum=0.9))
    straight = _fit(monkeypatch, False, *args)

    class StopAt(mlpx.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2 and self.model.epoch_ == 1:
                signal.raise_signal(signal.SIGINT)

    model = _model([20, 12, 5])
    with pytest.raises(KeyboardInterrupt):
        _fit(monkeypatch, False, *args, model=model, callbacks=[StopAt()])
    assert (model.trainer_.epoch, model.trainer_.step) == (1, 3)
    path = model.save(tmp_path / "mid.safetensors")
    resumed = _fit(monkeypatch, True, *args, model=_model([20, 12, 5]), resume_from=path)
    assert chunks["calls"] > 0
    _assert_same_run(straight, resumed)
