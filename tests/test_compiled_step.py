"""The compiled training step (mlpx.backends.compiled_step) against the layer path: the same
weights, optimiser state and history bit for bit, and the layer path wherever it is not
covered."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import library_threads, loss_targets_data, threads_back

import mlpx
from mlpx import optim
from mlpx.backends import compiled_step

pytestmark = pytest.mark.skipif(
    compiled_step._numpy_gemm_addresses() is None,
    reason="NumPy's BLAS is not the bundled ILP64 OpenBLAS the compiled step calls",
)


@pytest.fixture(autouse=True)
def one_step_per_call(monkeypatch):
    """These tests count the compiled step's calls: no chunks of steps per call (those are
    tests/test_compiled_epoch.py's)."""
    monkeypatch.setenv("MLPX_COMPILED_EPOCH", "0")


@pytest.fixture
def calls(monkeypatch):
    """Counts the compiled steps taken."""
    count = {"n": 0}
    run = compiled_step.CompiledStep.run

    def counted(self, *args, **kwargs):
        count["n"] += 1
        return run(self, *args, **kwargs)

    monkeypatch.setattr(compiled_step.CompiledStep, "run", counted)
    return count




def _fit(monkeypatch, compiled, sizes, activation, loss, make_opt, dtype, n=70,
         batch_size=16, shuffle=True, epochs=2, **fit_kw):
    monkeypatch.setenv("MLPX_COMPILED_STEP", "1" if compiled else "0")
    X, y = loss_targets_data(n, sizes[0], sizes[-1], loss, dtype)
    model = mlpx.MLP(sizes, activation=activation, backend="cpu", dtype=dtype, seed=3)
    hist = model.fit(X, y, loss=loss, optimizer=make_opt(), epochs=epochs,
                     batch_size=batch_size, shuffle=shuffle, verbose=0, **fit_kw)
    return model, hist


def _assert_same_run(a, b):
    (ma, ha), (mb, hb) = a, b
    for wa, wb in zip(ma.get_weights(), mb.get_weights(), strict=True):
        assert wa.dtype == wb.dtype and wa.tobytes() == wb.tobytes()
    sa, sb = ma.optimizer_.state_dict(), mb.optimizer_.state_dict()
    assert sa["step_count"] == sb["step_count"]
    for da, db in zip(sa["state"], sb["state"], strict=True):
        assert {k: v.tobytes() for k, v in da.items()} == {k: v.tobytes() for k, v in db.items()}
    assert ha.history["loss"] == hb.history["loss"]


def _sgd():
    return optim.SGD(lr=0.05)


CASES = [
    # sizes, hidden activation, loss, optimiser
    ([20, 12, 9, 5], "relu", "cross_entropy", _sgd),
    ([20, 12, 9, 5], "tanh", "cross_entropy", lambda: optim.SGD(lr=0.05, momentum=0.9)),
    ([20, 12, 9, 5], "gelu", "mse",
     lambda: optim.SGD(lr=0.02, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ([20, 12, 9, 5], "sigmoid", "bce", lambda: optim.Adam(lr=1e-2)),
    ([20, 12, 9, 5], "elu", "cross_entropy", lambda: optim.AdamW(lr=1e-2, weight_decay=0.1)),
    ([20, 12, 9, 5], "silu", "mse", lambda: optim.SGD(lr=0.02, weight_decay=1e-2)),
    ([20, 12, 9, 5], "softplus", "cross_entropy", lambda: optim.Adam(lr=1e-2)),
    ([20, 12, 9, 5], "leaky_relu", "bce", _sgd),
    ([20, 12, 9, 5], "identity", "mse", _sgd),
    ([20, 6, 3], "relu", "cross_entropy", lambda: optim.Adam(lr=1e-2)),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("sizes", "activation", "loss", "make_opt"), CASES)
def test_bitwise_equal_to_the_layer_path(monkeypatch, calls, dtype, sizes, activation, loss,
                                         make_opt):
    old = _fit(monkeypatch, False, sizes, activation, loss, make_opt, dtype)
    assert calls["n"] == 0
    new = _fit(monkeypatch, True, sizes, activation, loss, make_opt, dtype)
    # 70 rows in batches of 16: five steps an epoch, the last of 6 rows; the epoch's last
    # step runs the layer path (it records the gradient norm)
    assert calls["n"] == 2 * 4
    _assert_same_run(old, new)


@pytest.mark.parametrize("batch_size", [2, 7, 33])
@pytest.mark.parametrize("shuffle", [True, False])
def test_odd_batches_and_order(monkeypatch, calls, batch_size, shuffle):
    args = ([20, 12, 9, 5], "relu", "cross_entropy", _sgd, "float32")
    old = _fit(monkeypatch, False, *args, n=101, batch_size=batch_size, shuffle=shuffle)
    new = _fit(monkeypatch, True, *args, n=101, batch_size=batch_size, shuffle=shuffle)
    assert calls["n"] > 0
    _assert_same_run(old, new)


def test_gemms_of_every_route(monkeypatch, calls):
    # wide enough for oneDNN where it is the GEMM path, and a 1024-wide layer whose
    # input-gradient GEMM takes oneDNN's padded copy of its weights
    args = ([40, 1024, 1024, 4], "relu", "cross_entropy", lambda: optim.Adam(lr=1e-3),
            "float32")
    old = _fit(monkeypatch, False, *args, n=150, batch_size=64, epochs=1)
    new = _fit(monkeypatch, True, *args, n=150, batch_size=64, epochs=1)
    assert calls["n"] == 2
    _assert_same_run(old, new)


def _planned(monkeypatch):
    monkeypatch.setenv("MLPX_COMPILED_STEP", "1")
    model = mlpx.MLP([40, 1024, 1024, 4], backend="cpu", seed=0)
    model.build(40)
    model.compile(loss="cross_entropy", optimizer="sgd")
    return model, compiled_step.plan(model, model.loss_, model.optimizer_)


def test_routes_follow_the_cpu_backend(monkeypatch):
    """Each GEMM takes the route the cpu backend's matmul would take for it (measured per
    shape class), mapped onto the compiled step's calls."""
    from mlpx.backends import _onednn, gemm_routes

    model, step = _planned(monkeypatch)
    k = compiled_step._kernels()
    seen = []

    def route_for(libraries, a, b, out, trans_a, trans_b):
        seen.append((a.shape, b.shape, out.shape, trans_a, trans_b))
        if out.shape[1] == 4 or b.shape[1] == 4:  # the narrow last layer: NumPy's BLAS
            return gemm_routes.Route("numpy")
        return gemm_routes.Route("onednn", pad=trans_b)

    monkeypatch.setattr(gemm_routes, "route_for", route_for)
    routes = step._buffers(64)[-1]
    assert ((64, 40), (40, 1024), (64, 1024), False, False) in seen  # layer 0 forward
    assert ((64, 40), (64, 1024), (40, 1024), True, False) in seen  # layer 0 dW
    assert not any(o == (64, 40) for _, _, o, _, _ in seen)  # no input gradient of layer 0
    if _onednn.available():
        assert routes[1, :3].tolist() == [k.ROUTE_DNNL, k.ROUTE_DNNL, k.ROUTE_DNNL_PADDED]
    else:
        assert (routes[1, :3] == k.ROUTE_NUMPY).all()
    assert (routes[2, :3] == k.ROUTE_NUMPY).all()
    assert (routes[:, k.THREADS] == mlpx.get_num_threads()).all()


@pytest.mark.parametrize("pad", [False, True])
def test_same_run_on_forced_onednn_routes(monkeypatch, calls, pad):
    """Bit for bit the layer path on oneDNN routes too (whatever this machine measured)."""
    from mlpx.backends import _onednn, gemm_routes

    if not _onednn.available():
        pytest.skip("oneDNN (the onednn-cpu-gomp wheel) is not installed: no oneDNN route")

    def route_for(libraries, a, b, out, trans_a, trans_b):
        return gemm_routes.Route("onednn", pad=pad and trans_b)

    monkeypatch.setattr(gemm_routes, "route_for", route_for)
    gemm_routes.forget()
    try:
        args = ([40, 256, 1024, 4], "relu", "cross_entropy", lambda: optim.Adam(lr=1e-3),
                "float32")
        old = _fit(monkeypatch, False, *args, n=150, batch_size=64, epochs=1)
        gemm_routes.forget()
        new = _fit(monkeypatch, True, *args, n=150, batch_size=64, epochs=1)
    finally:
        gemm_routes.forget()
    assert calls["n"] == 2
    _assert_same_run(old, new)


def test_routes_are_looked_up_again_after_they_were_forgotten(monkeypatch):
    """set_num_threads makes the cpu backend forget its routes (measured per thread count):
    the compiled step must not keep running the routes of the old count."""
    from mlpx.backends import gemm_routes

    model, step = _planned(monkeypatch)
    x = np.zeros((64, 40), np.float32)
    y = np.zeros(64, np.int64)
    g = np.zeros((64, 4), np.float32)
    assert step.covers(x, y, g)
    monkeypatch.setattr(gemm_routes, "route_for", lambda *a: gemm_routes.Route("mkl"))
    assert step.covers(x, y, g)  # the routes it looked up before
    gemm_routes.forget()
    assert not step.covers(x, y, g)  # MKL: a library compiled code does not call


@pytest.mark.parametrize("route", [dict(path="mkl"), dict(path="mkl", one_thread=True)])
def test_batch_left_to_the_layer_path_where_a_route_is_not_called(monkeypatch, route):
    from mlpx.backends import gemm_routes

    model, step = _planned(monkeypatch)
    monkeypatch.setattr(gemm_routes, "route_for", lambda *a: gemm_routes.Route(**route))
    x = np.zeros((64, 40), np.float32)
    y = np.zeros(64, np.int64)
    g = np.zeros((64, 4), np.float32)
    assert not step.covers(x, y, g)


def _one_thread_library(path):
    """Skips where the one-thread route of `path` cannot run here."""
    from mlpx.backends import _onednn

    if path == "onednn" and not _onednn.available():
        pytest.skip("oneDNN (the onednn-cpu-gomp wheel) is not installed: no oneDNN route")
    assert path in compiled_step.one_thread_paths()  # found on any Linux wheel of NumPy


@pytest.mark.parametrize("route", [dict(path="numpy", one_thread=True),
                                   dict(path="onednn", one_thread=True),
                                   dict(path="onednn", one_thread=True, pad=True)])
def test_one_thread_routes_take_the_compiled_step(monkeypatch, calls, route):
    """A route measured faster on one thread is called from compiled code on one thread:
    bit for bit the layer path's run, and the libraries' thread counts back to mlpx's."""
    from mlpx.backends import gemm_routes

    _one_thread_library(route["path"])
    forced = gemm_routes.Route(**route)

    def route_for(libraries, a, b, out, trans_a, trans_b):
        return forced if trans_b or not forced.pad else gemm_routes.Route(forced.path, True)

    monkeypatch.setattr(gemm_routes, "route_for", route_for)
    before = library_threads()
    gemm_routes.forget()
    try:
        args = ([40, 256, 1024, 4], "relu", "cross_entropy", lambda: optim.Adam(lr=1e-3),
                "float32")
        old = _fit(monkeypatch, False, *args, n=150, batch_size=64, epochs=1)
        assert library_threads() == threads_back(route["path"], before)
        gemm_routes.forget()
        new = _fit(monkeypatch, True, *args, n=150, batch_size=64, epochs=1)
        assert library_threads() == threads_back(route["path"], before)
    finally:
        gemm_routes.forget()
    assert calls["n"] == 2
    _assert_same_run(old, new)
    k = compiled_step._kernels()
    model, step = _planned(monkeypatch)
    routes = step._buffers(64)[-1]
    assert (routes[:, :2] >= k.ONE_THREAD).all()  # layer 0 has no input-gradient GEMM
    assert (routes[1:, 2] >= k.ONE_THREAD).all()
    padded = k.ROUTE_DNNL_PADDED_1T if forced.pad else k.ROUTE_DNNL_1T
    assert routes[1, 2] == (k.ROUTE_NUMPY_1T if forced.path == "numpy" else padded)


@pytest.mark.parametrize("path", ["numpy", "onednn"])
def test_one_thread_route_without_its_thread_setter_takes_the_layer_path(monkeypatch, path):
    from mlpx.backends import gemm_routes

    _one_thread_library(path)
    model, step = _planned(monkeypatch)
    monkeypatch.setattr(gemm_routes, "route_for",
                        lambda *a: gemm_routes.Route(path, one_thread=True))
    x = np.zeros((64, 40), np.float32)
    y = np.zeros(64, np.int64)
    g = np.zeros((64, 4), np.float32)
    assert step.covers(x, y, g)
    gemm_routes.forget()
    real = compiled_step._thread_setter
    monkeypatch.setattr(compiled_step, "_thread_setter",
                        lambda p: None if p == path else real(p))
    assert compiled_step.one_thread_paths() == {"numpy", "onednn"} - {path}
    assert not step.covers(x, y, g)


@pytest.mark.parametrize("blas", ["numpy"])
def test_numpy_blas_path(monkeypatch, calls, blas):
    from mlpx.backends import get_backend

    ops = get_backend("cpu")
    before = ops.blas, ops.gemm_libraries  # "auto" resolves to both libraries
    try:
        ops.blas = blas
        args = ([40, 300, 4], "tanh", "cross_entropy", _sgd, "float32")
        old = _fit(monkeypatch, False, *args, n=100, batch_size=32, epochs=1)
        new = _fit(monkeypatch, True, *args, n=100, batch_size=32, epochs=1)
    finally:
        ops._blas, ops._gemm_libraries = before
    assert calls["n"] == 3
    _assert_same_run(old, new)


def test_metrics_read_the_compiled_steps_outputs(monkeypatch, calls):
    args = ([20, 12, 5], "relu", "cross_entropy", _sgd, "float32")
    kw = {"metrics": ["accuracy", "top_2_accuracy"], "validation_split": 0.2}
    old = _fit(monkeypatch, False, *args, n=90, **kw)
    new = _fit(monkeypatch, True, *args, n=90, **kw)
    assert calls["n"] == 2 * 4
    _assert_same_run(old, new)
    assert old[1].history == new[1].history


@pytest.mark.parametrize("fit_kw", [
    {"clip_norm": 1.0},
    {"clip_value": 0.5},
    {"gradient_accumulation_steps": 2},
    {"sample_weight": np.ones(70)},
])
def test_runs_the_layer_path_where_not_covered(monkeypatch, calls, fit_kw):
    args = ([20, 12, 5], "relu", "cross_entropy", _sgd, "float32")
    _fit(monkeypatch, True, *args, **fit_kw)
    assert calls["n"] == 0


def test_a_width_of_one_runs_the_layer_path(monkeypatch, calls):
    # np.matmul hands a product with one output column to GEMV, which the step does not call
    args = ([20, 12, 1], "relu", "mse", _sgd, "float32")
    old = _fit(monkeypatch, False, *args)
    new = _fit(monkeypatch, True, *args)
    assert calls["n"] == 0
    _assert_same_run(old, new)


def test_uncovered_models_and_parts(monkeypatch, calls):
    monkeypatch.setenv("MLPX_COMPILED_STEP", "1")
    X, y = loss_targets_data(64, 8, 3, "cross_entropy", "float32")
    layered = [
        mlpx.Sequential([mlpx.Dense(6, activation="relu"), mlpx.Dropout(0.1), mlpx.Dense(3)],
                        input_dim=8, seed=0),
        mlpx.Sequential([mlpx.Dense(6, activation="relu", use_bias=False), mlpx.Dense(3)],
                        input_dim=8, seed=0),
        mlpx.Sequential([mlpx.Dense(6, activation="softmax"), mlpx.Dense(3)],
                        input_dim=8, seed=0),
        mlpx.Sequential([mlpx.Dense(6, activation="relu", kernel_regularizer="l2"),
                         mlpx.Dense(3)], input_dim=8, seed=0),
    ]
    for model in layered:
        model.fit(X, y, loss="cross_entropy", optimizer="sgd", epochs=1, batch_size=16,
                  verbose=0)
    model = mlpx.MLP([8, 6, 3], seed=0)
    with pytest.warns(UserWarning, match="log-probabilities"):
        model.fit(X, y, loss="nll", optimizer="rmsprop", epochs=1, batch_size=16, verbose=0)
    model.fit(X, np.eye(3)[y], loss="cross_entropy", optimizer="sgd", epochs=1,
              batch_size=16, verbose=0)  # probability rows: the soft-target kernel
    assert calls["n"] == 0


def test_turned_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("MLPX_COMPILED_STEP", "0")
    model = mlpx.MLP([8, 6, 3], seed=0)
    model.compile(loss="cross_entropy", optimizer="sgd")
    model.build(8)
    assert compiled_step.plan(model, model.loss_, model.optimizer_) is None
    monkeypatch.setenv("MLPX_COMPILED_STEP", "1")
    assert compiled_step.plan(model, model.loss_, model.optimizer_) is not None


def test_a_callback_that_swaps_the_optimiser(monkeypatch, calls):
    """A part changed between steps: the compiled step stands aside for the new one."""

    class Swap(mlpx.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                self.model.optimizer_ = optim.Adam(lr=1e-3)
                self.model.optimizer_.bind(self.model.parameters(), self.model.ops)

    runs = []
    for compiled in (False, True):
        monkeypatch.setenv("MLPX_COMPILED_STEP", "1" if compiled else "0")
        X, y = loss_targets_data(80, 8, 3, "cross_entropy", "float32")
        model = mlpx.MLP([8, 6, 3], seed=0)
        model.fit(X, y, loss="cross_entropy", optimizer="sgd", epochs=1, batch_size=16,
                  verbose=0, callbacks=[Swap()])
        runs.append(model.get_weights())
    assert calls["n"] == 2  # steps 0 and 1, before the swap
    for a, b in zip(*runs, strict=True):
        assert a.tobytes() == b.tobytes()


def test_instrumented_parts_see_every_step(monkeypatch, calls):
    """A replaced opt.step or a wrapped backend op is called as before: the layer path."""
    monkeypatch.setenv("MLPX_COMPILED_STEP", "1")
    X, y = loss_targets_data(64, 8, 3, "cross_entropy", "float32")
    model = mlpx.MLP([8, 6, 3], seed=0)
    seen = {"step": 0, "matmul": 0}

    class Instrument(mlpx.callbacks.Callback):
        def on_train_begin(self, logs=None):
            opt, ops = self.model.optimizer_, self.model.ops
            real_step, real_matmul = opt.step, ops.matmul

            def step():
                seen["step"] += 1
                real_step()

            def matmul(*args, **kwargs):
                seen["matmul"] += 1
                return real_matmul(*args, **kwargs)

            opt.step, ops.matmul = step, matmul

    try:
        model.fit(X, y, loss="cross_entropy", optimizer="sgd", epochs=1, batch_size=16,
                  verbose=0, callbacks=[Instrument()])
    finally:
        vars(model.ops).pop("matmul", None)
    assert calls["n"] == 0
    assert seen == {"step": 4, "matmul": 4 * 5}  # two forward GEMMs, three backward


def test_ctrl_c_during_a_compiled_step_stops_after_it(monkeypatch, calls):
    """Ctrl-C is acted on after the step in progress, as on the layer path: the model holds
    the weights of that step."""
    import os
    import signal

    run = compiled_step.CompiledStep.run

    def interrupted(self, *args, **kwargs):
        out = run(self, *args, **kwargs)
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(compiled_step.CompiledStep, "run", interrupted)
    monkeypatch.setenv("MLPX_COMPILED_STEP", "1")
    X, y = loss_targets_data(80, 8, 3, "cross_entropy", "float32")
    model = mlpx.MLP([8, 6, 3], seed=0)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, y, loss="cross_entropy", optimizer="sgd", epochs=2, batch_size=16,
                  verbose=0)
    assert calls["n"] == 2 and model.trainer_.step == 2  # right after the interrupted step

    class Stop(Exception):
        pass

    class StopAfterTwo(mlpx.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 1:
                raise Stop

    monkeypatch.setenv("MLPX_COMPILED_STEP", "0")
    two = mlpx.MLP([8, 6, 3], seed=0)
    with pytest.raises(Stop):
        two.fit(X, y, loss="cross_entropy", optimizer="sgd", epochs=2, batch_size=16,
                verbose=0, callbacks=[StopAfterTwo()])
    for a, b in zip(model.get_weights(), two.get_weights(), strict=True):
        assert a.tobytes() == b.tobytes()


RECORD_THREAD_CALLS = """
import ctypes, numpy as np
from mlpx.backends import _onednn, compiled_step
seen = []
blas = ctypes.CFUNCTYPE(None, ctypes.c_int)(lambda n: seen.append(("blas", n)))
omp = ctypes.CFUNCTYPE(None, ctypes.c_int)(lambda n: seen.append(("omp", n)))
setters = {p: ctypes.cast(f, ctypes.c_void_p).value for p, f in (("numpy", blas), ("onednn", omp))}
compiled_step._thread_setter = setters.get  # bound in place of the libraries'
k = compiled_step._kernels()
a, b = np.ones((4, 3), np.float32), np.ones((3, 5), np.float32)
routes = [k.ROUTE_NUMPY, k.ROUTE_NUMPY_1T] + ([k.ROUTE_DNNL, k.ROUTE_DNNL_1T]
                                               if _onednn.available() else [])
for route in routes:
    seen.clear()
    c = np.zeros((4, 5), np.float32)
    k._gemm(route, 3, False, False, 4, 5, 3, a, 3, b, 5, c, c)
    print(route, seen, float(c.sum()))
"""


def test_one_thread_routes_set_the_count_around_the_call(tmp_path):
    """The compiled GEMM of a one-thread route sets its library's count to one, calls the
    library and sets the count given (mlpx's); other routes touch no count. (A new process
    with its own kernel cache binds recording functions in place of the libraries'.)"""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(mlpx.__file__).resolve().parent.parent
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=str(root), MLPX_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", RECORD_THREAD_CALLS], env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    k = compiled_step._kernels()
    want = {k.ROUTE_NUMPY: [], k.ROUTE_NUMPY_1T: [("blas", 1), ("blas", 3)], k.ROUTE_DNNL: [],
            k.ROUTE_DNNL_1T: [("omp", 1), ("omp", 3)]}
    lines = out.stdout.strip().splitlines()
    assert len(lines) >= 2
    for line in lines:
        route, rest = line.split(" ", 1)
        seen, total = rest.rsplit(" ", 1)
        assert seen == str(want[int(route)]) and float(total) == 60.0
