"""predict on a handful of rows through the compiled forward pass: the layers' own outputs,
bit for bit, on every GEMM route, and never where it does not apply."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from _helpers import library_threads, threads_back, with_statistics

import mlpx
from mlpx.backends import compiled_forward, compiled_step

pytestmark = pytest.mark.skipif(
    compiled_step._numpy_gemm_addresses() is None,
    reason="NumPy's BLAS is not the bundled ILP64 OpenBLAS the compiled code calls",
)


@pytest.fixture(autouse=True)
def no_chain(monkeypatch):
    """The small-batch chain off: every row count above one takes the compiled forward."""
    monkeypatch.setenv("MLPX_SMALL_BATCH", "0")
    monkeypatch.setenv("MLPX_COMPILED_STEP", "1")


@pytest.fixture
def calls(monkeypatch):
    count = {"n": 0}
    call = compiled_forward.CompiledForward.__call__

    def counted(self, x):
        out = call(self, x)
        count["n"] += out is not None
        return out

    monkeypatch.setattr(compiled_forward.CompiledForward, "__call__", counted)
    return count


def _model(sizes, activation="relu", dtype="float32"):
    model = mlpx.MLP(sizes, activation=activation, dtype=dtype, seed=1)
    model.build(sizes[0])
    return model


def _rows(n, width, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal((n, width)).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "leaky_relu"])
def test_same_bits_as_the_layers(calls, dtype, activation):
    model = _model([30, 40, 24, 5], activation, dtype)
    for n in (2, 3, 16, 64):
        X = _rows(n, 30, np.dtype(dtype), seed=n)
        got = model.predict(X)
        assert got.dtype == np.dtype(dtype)
        assert got.tobytes() == model.infer(X).tobytes()
        assert got.tobytes() == model.predict(X, batch_size=1024).tobytes()
    assert calls["n"] == 8  # predict(X) and predict(X, batch_size=1024)


@pytest.mark.parametrize("one_thread", [False, True], ids=["all-threads", "one-thread"])
@pytest.mark.parametrize("path", ["numpy", "onednn"])
def test_same_bits_on_each_gemm_route(monkeypatch, calls, path, one_thread):
    """Every GEMM route takes the compiled pass: the layers' bits, the route's code, and the
    libraries' thread counts afterwards (a one-thread route's library back at mlpx's count,
    the other library as it was; on all threads, both as they were)."""
    from mlpx.backends import _onednn, gemm_routes

    if path == "onednn" and not _onednn.available():
        pytest.skip("oneDNN (the onednn-cpu-gomp wheel) is not installed")
    monkeypatch.setattr(gemm_routes, "route_for",
                        lambda *a: gemm_routes.Route(path, one_thread=one_thread))
    before = library_threads()
    gemm_routes.forget()
    try:
        model = _model([64, 256, 128, 10])
        X = _rows(16, 64)
        got = model.predict(X)
        assert library_threads() == (threads_back(path, before) if one_thread else before)
        k = compiled_step._kernels()
        code = k.ROUTE_NUMPY if path == "numpy" else k.ROUTE_DNNL
        routes = model._small_batch[2]._routes_for(16)
        assert (routes[:, 0] == code + (k.ONE_THREAD if one_thread else 0)).all()
        gemm_routes.forget()
        want = model.infer(X)
    finally:
        gemm_routes.forget()
    assert calls["n"] == 1
    assert got.tobytes() == want.tobytes()


def _norm_model(layers, dtype):
    return with_statistics(mlpx.Sequential(layers, input_dim=30, dtype=dtype, seed=1), seed=5)


_NORM_MODELS = {
    "batchnorm": lambda L: [L.Dense(40, activation="relu"), L.BatchNorm(), L.Dense(5)],
    "layernorm": lambda L: [L.Dense(40, activation="tanh"), L.LayerNorm(), L.Dropout(0.3),
                            L.Dense(5)],
    "prelu": lambda L: [L.Dense(40, activation="prelu"), L.Dense(24), L.PReLU(), L.Dense(5)],
    "on-the-input-and-top": lambda L: [L.BatchNorm(), L.LayerNorm(), L.Dense(40), L.BatchNorm(),
                                       L.PReLU(), L.Dense(5), L.LayerNorm()],
}


# every model in float32, the one with every op kind in float64 too (each structure is a
# compilation of its own)
@pytest.mark.parametrize(("name", "dtype"), [(name, "float32") for name in sorted(_NORM_MODELS)]
                         + [("on-the-input-and-top", "float64")])
def test_norm_and_prelu_layers_same_bits_as_the_layers(calls, dtype, name):
    """BatchNorm, LayerNorm and PReLU run inside the compiled pass, with the layers' bits."""
    model = _norm_model(_NORM_MODELS[name](mlpx.layers), dtype)
    for n in (2, 5, 64):
        X = _rows(n, 30, np.dtype(dtype), seed=n)
        got = model.predict(X)
        assert got.tobytes() == model.infer(X).tobytes()
    assert calls["n"] == 3


def test_not_taken_where_it_does_not_apply(monkeypatch, calls):
    X = _rows(8, 12)
    one_row = _model([12, 16, 3])
    one_row.predict(X[:1])  # one row: np.matmul runs a GEMV, not the GEMM called here
    no_bias = mlpx.Sequential([mlpx.layers.Dense(16, activation="relu", use_bias=False),
                               mlpx.layers.Dense(3)], input_dim=12, seed=0)
    residual = mlpx.Sequential([mlpx.layers.Dense(16, activation="relu"),
                                mlpx.layers.Residual([mlpx.layers.Dense(16)]),
                                mlpx.layers.Dense(3)], input_dim=12, seed=0)
    softmax = mlpx.Sequential([mlpx.layers.Dense(16, activation="relu"),
                               mlpx.layers.Dense(3, activation="softmax")], input_dim=12, seed=0)
    for model in (no_bias, residual, softmax):
        assert compiled_forward.plan(model) is None
        model.predict(X)
    assert calls["n"] == 0
    monkeypatch.setenv("MLPX_COMPILED_STEP", "0")
    assert compiled_forward.plan(_model([12, 16, 3])) is None


def test_routes_are_looked_up_again_after_they_were_forgotten(monkeypatch, calls):
    """set_num_threads makes the cpu backend forget its routes: the compiled pass must not
    keep the old count's routes either."""
    from mlpx.backends import gemm_routes

    model = _model([12, 16, 3])
    X = _rows(8, 12)
    model.predict(X)
    assert calls["n"] == 1
    monkeypatch.setattr(gemm_routes, "route_for", lambda *a: gemm_routes.Route("mkl"))
    forward = model._small_batch[2]
    assert forward._routes_for(8) is not None  # the routes it looked up before
    gemm_routes.forget()
    try:
        assert forward._routes_for(8) is None  # MKL: a library compiled code does not call
    finally:
        gemm_routes.forget()


def test_other_libraries_leave_the_rows_to_the_layers(monkeypatch, calls):
    from mlpx.backends import gemm_routes

    monkeypatch.setattr(gemm_routes, "route_for", lambda *a: gemm_routes.Route("mkl"))
    gemm_routes.forget()
    try:  # the layers keep the route per shape: forgotten after, for the other tests
        model = _model([12, 16, 3])
        X = _rows(8, 12)
        assert model.predict(X).tobytes() == model.infer(X).tobytes()
    finally:
        gemm_routes.forget()
    assert calls["n"] == 0


def test_non_finite_rows_get_the_general_error():
    model = _model([12, 16, 3])
    X = _rows(8, 12)
    X[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.predict(X)


def test_each_call_returns_a_new_array(calls):
    model = _model([12, 16, 3])
    X = _rows(8, 12)
    a = model.predict(X)
    b = model.predict(2 * X)
    assert a is not b and not np.shares_memory(a, b)
    assert a.tobytes() == model.infer(X).tobytes()


def test_threads_predict_at_once(calls):
    model = _model([40, 64, 32, 4], "tanh")
    inputs = [_rows(8 + i, 40, seed=i) for i in range(4)]
    wants = [model.infer(x) for x in inputs]
    errors = []

    def worker(i):
        for _ in range(50):
            if model.predict(inputs[i]).tobytes() != wants[i].tobytes():
                errors.append(i)
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert calls["n"] == 200


def test_threads_on_a_one_thread_route_leave_mlpxs_count(monkeypatch, calls):
    """OpenBLAS's count is the process's: threads predicting at once on its one-thread route
    leave it at mlpx's count (not at one, as a count read while another thread's call had
    set one and then put back would). Their bits are not compared: another thread's call
    can set the count during this one's GEMM, on the layers' path too, and OpenBLAS's sums
    of some shapes depend on it."""
    from mlpx.backends import gemm_routes

    monkeypatch.setattr(gemm_routes, "route_for",
                        lambda *a: gemm_routes.Route("numpy", one_thread=True))
    gemm_routes.forget()
    try:
        model = _model([40, 256, 256, 4], "tanh")
        inputs = [_rows(32, 40, seed=i) for i in range(4)]

        def worker(i):
            for _ in range(200):
                model.predict(inputs[i])

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        gemm_routes.forget()
    assert calls["n"] == 800
    assert library_threads()[0] == mlpx.get_num_threads()


def test_regularised_layers_and_estimators_take_it(calls):
    """Regularisers play no part in inference: an estimator's model (alpha is an L2 penalty)
    predicts a few rows through the compiled forward pass too."""
    from mlpx.sklearn import MLPClassifier

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 12)).astype(np.float32)
    y = rng.integers(0, 3, 60)
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=2, random_state=0).fit(X, y)
    model = next(v for v in vars(clf).values() if isinstance(v, mlpx.Sequential))
    assert model.layers[0].kernel_regularizer is not None
    proba = clf.predict_proba(X[:8])
    assert calls["n"] >= 1
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLPX_COMPILED_STEP", "0")
        model.__dict__.pop("_small_batch", None)  # planned again, now without it
        layers_path = clf.predict_proba(X[:8])
    assert calls["n"] == 1
    assert proba.tobytes() == layers_path.tobytes()
