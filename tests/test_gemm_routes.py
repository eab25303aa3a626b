"""Measured GEMM routes of the cpu backend (mlpx.backends.gemm_routes): the decision rule with
fake timings, the shape classes and cache keys, the overrides, and every route's product."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlpx.backends import _onednn, gemm_routes, measured, numpy_blas, threads
from mlpx.backends.cpu import CPUBackend
from mlpx.backends.gemm_routes import Route

needs_onednn = pytest.mark.skipif(
    not _onednn.available(),
    reason="oneDNN is not installed (a dependency on x86-64 Linux only: pip install -e .)",
)

ONEDNN, NUMPY = Route("onednn"), Route("numpy")


def fake_timer(seconds: dict[Route, list[float]]):
    """A time_call that replays per-call seconds (cycling), recording the order of calls."""
    calls: list[Route] = []
    position = {r: 0 for r in seconds}

    def time_call(route: Route, repeats: int) -> float:
        calls.append(route)
        values = seconds[route]
        value = values[position[route] % len(values)]
        position[route] += 1
        return value * repeats

    return time_call, calls


def test_a_challenger_replaces_the_default_only_past_the_margin():
    timer, _ = fake_timer({ONEDNN: [1e-3], NUMPY: [0.97e-3]})  # 3 % faster: within noise
    assert gemm_routes.choose([ONEDNN, NUMPY], timer)[0] == ONEDNN
    timer, _ = fake_timer({ONEDNN: [1e-3], NUMPY: [0.8e-3]})
    route, medians = gemm_routes.choose([ONEDNN, NUMPY], timer)
    assert route == NUMPY
    assert medians == {"onednn": pytest.approx(1e-3), "numpy": pytest.approx(0.8e-3)}


def test_the_median_ignores_a_few_outliers_and_rounds_alternate():
    # numpy is faster in most rounds; one descheduled round (0.05 s) does not decide
    timer, calls = fake_timer({ONEDNN: [1e-3], NUMPY: [0.7e-3, 0.05, 0.7e-3, 0.7e-3]})
    assert gemm_routes.choose([ONEDNN, NUMPY], timer)[0] == NUMPY
    assert calls[:3] == [ONEDNN, ONEDNN, NUMPY]  # warm-up: the default twice, then the rest
    assert calls[3:7] == [ONEDNN, NUMPY, NUMPY, ONEDNN]  # each round reverses the order


def test_single_thread_routes_are_tried_on_short_gemms_only():
    one = Route("numpy", one_thread=True)
    timer, calls = fake_timer({NUMPY: [1e-4], one: [0.5e-4]})
    assert gemm_routes.choose([NUMPY, one], timer)[0] == one
    timer, calls = fake_timer({NUMPY: [0.01], one: [0.001]})  # long: one thread not timed
    route, medians = gemm_routes.choose([NUMPY, one], timer)
    assert route == NUMPY and "numpy 1-thread" not in medians
    assert calls == [NUMPY, NUMPY]  # nothing left to compare: no rounds


def test_candidates_keep_to_one_thread_pool():
    routes = gemm_routes.candidates(ONEDNN, "onednn", ["numpy"], page=True,
                                    one_thread=["onednn", "numpy"], threads=2)
    assert [r.label for r in routes] == ["onednn", "onednn 1-thread", "numpy 1-thread",
                                         "onednn pad"]
    assert all(Route.from_label(r.label) == r for r in routes)
    routes = gemm_routes.candidates(NUMPY, "numpy", ["onednn"], page=True, one_thread=[],
                                    threads=2)
    assert routes == [NUMPY]  # oneDNN's own pool is never woken beside OpenBLAS's
    routes = gemm_routes.candidates(NUMPY, "numpy", ["onednn"], page=False, one_thread=[],
                                    threads=1)
    assert routes == [NUMPY, ONEDNN]  # one thread in all: no second pool to wake
    # a product OpenBLAS runs in the calling thread: that is the default, tried first
    routes = gemm_routes.candidates(NUMPY, "onednn", ["numpy"], page=False,
                                    one_thread=["onednn"], threads=2)
    assert routes == [NUMPY, ONEDNN, Route("onednn", one_thread=True)]


def test_the_default_route_runs_small_products_in_the_calling_thread():
    both = ("onednn", "numpy")
    assert gemm_routes.default_route("onednn", both, 65536 * 4) == NUMPY
    assert gemm_routes.default_route("onednn", both, 65536 * 4 + 1) == ONEDNN
    assert gemm_routes.default_route("onednn", ("onednn",), 8) == ONEDNN  # MLPX_BLAS=onednn
    assert gemm_routes.default_route("numpy", both, 10**9) == NUMPY


def test_the_pool_library_is_chosen_on_the_geometric_mean_of_step_ratios():
    steps = len(gemm_routes._POOL_STEPS)

    def time_pass(times):
        return lambda lib, step: times[lib][step]

    ratios = gemm_routes.pool_ratios(("onednn", "numpy"), time_pass(
        {"onednn": [1.0] * steps, "numpy": [0.8] + [1.0] * (steps - 1)}), settle=0)
    assert ratios["onednn"] == [1.0] * steps
    assert ratios["numpy"] == pytest.approx([0.8] + [1.0] * (steps - 1))


def test_each_librarys_timed_passes_wait_for_the_others_threads_to_settle(monkeypatch):
    """Another library's idle threads spin a while after its GEMMs: the passes of one
    library are timed only after a pause, never right after the other's."""
    events = []
    monkeypatch.setattr(gemm_routes.time, "sleep", lambda s: events.append(("sleep", s)))
    gemm_routes.pool_ratios(("onednn", "numpy"),
                            lambda lib, step: events.append(lib) or 1.0, rounds=3)
    warm = 2 * len(gemm_routes._POOL_STEPS)
    timed = events[warm:]
    for i, event in enumerate(timed[1:], 1):
        if isinstance(event, str) and isinstance(timed[i - 1], str):
            assert event == timed[i - 1]  # a change of library comes after a pause
    assert timed.count(("sleep", gemm_routes._SETTLE_S)) == 6


def test_shape_classes():
    assert gemm_routes.shape_class(256, 1024, 784, False, False, False) == "nn 2^27"
    assert gemm_routes.shape_class(1024, 10, 256, True, False, False) == "tn 2^21 narrow"
    assert gemm_routes.shape_class(256, 1024, 1024, False, True, True) == "nt 2^28 page"
    w = np.zeros((784, 1024), np.float32)
    assert gemm_routes.page_strided(w, True) and not gemm_routes.page_strided(w, False)
    assert not gemm_routes.page_strided(np.zeros((784, 1000), np.float32), True)


def test_the_cache_key_names_the_machine_threads_and_libraries(monkeypatch):
    gemm_routes.forget()
    key = gemm_routes.routes_key(("onednn", "numpy") if _onednn.available() else ("numpy",))
    assert f"threads {threads.get_num_threads()}" in key
    assert f"numpy {np.__version__}" in key and "paths " in key
    if _onednn.available():
        assert f"onednn {_onednn.version()}" in key


def test_routes_are_measured_once_then_read_from_the_cache(tmp_path, monkeypatch, rng):
    monkeypatch.setenv("MLPX_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("MLPX_GEMM_MEASURE", raising=False)
    gemm_routes.forget()
    chosen = []
    real_choose = gemm_routes.choose

    def counting_choose(routes, time_call):
        chosen.append([r.label for r in routes])
        return real_choose(routes, time_call)

    monkeypatch.setattr(gemm_routes, "choose", counting_choose)
    a = rng.standard_normal((64, 96)).astype(np.float32)
    b = rng.standard_normal((96, 40)).astype(np.float32)
    out = np.full((64, 40), np.nan, np.float32)
    libraries = ("onednn", "numpy") if _onednn.available() else ("numpy",)
    gemm_routes.gemm_for(libraries, a, b, out, False, False)(a, b, out, False, False)
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-5)
    entries = json.loads((tmp_path / "gemm_routes.json").read_text())
    measured_here = len(chosen)
    if len(libraries) > 1 or threads.get_num_threads() > 1:
        assert measured_here == 1
        (entry,) = [e for k, e in entries.items() if not k.endswith("| pool")]
        assert entry["shape"] == [64, 40, 96] and entry["route"] in entry["median_ms"]
        if len(libraries) > 1:  # the pool library was measured too, once
            pool = next(e for k, e in entries.items() if k.endswith("| pool"))
            assert pool["route"] in libraries and set(pool["time_ratio"]) == set(libraries)
    gemm_routes.forget()  # a new process: the class is read back, not measured
    gemm_routes.gemm_for(libraries, a, b, out, False, False)
    gemm_routes.gemm_for(libraries, a[:60], b, out[:60], False, False)  # same class
    assert len(chosen) == measured_here


def test_measuring_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPX_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("MLPX_GEMM_MEASURE", "0")
    gemm_routes.forget()
    a, b = np.ones((64, 96), np.float32), np.ones((96, 40), np.float32)
    out = np.empty((64, 40), np.float32)
    route = gemm_routes.route_for(("onednn", "numpy"), a, b, out, False, False)
    assert route == NUMPY  # a product OpenBLAS runs in the calling thread
    big = np.ones((512, 1024), np.float32), np.ones((1024, 1024), np.float32)
    route = gemm_routes.route_for(("onednn", "numpy"), *big, np.empty((512, 1024), np.float32),
                                  False, False)
    assert route == ONEDNN and not (tmp_path / "gemm_routes.json").exists()
    monkeypatch.setenv("MLPX_GEMM_MEASURE", "maybe")
    with pytest.raises(ValueError, match="MLPX_GEMM_MEASURE='maybe'.*use 1"):
        gemm_routes.route_for(("onednn", "numpy"), a, b, out, False, False)


def test_a_named_library_runs_every_float32_gemm(monkeypatch, rng):
    monkeypatch.setenv("MLPX_BLAS", "numpy")
    ops = CPUBackend()
    assert ops.blas == "numpy" and ops.gemm_libraries == ("numpy",)
    if _onednn.available():
        ops.blas = "onednn"
        assert ops.gemm_libraries == ("onednn",)
        ops.blas = "auto"
        assert ops.gemm_libraries == ("onednn", "numpy")


@pytest.mark.parametrize("label", ["numpy", "numpy 1-thread", "onednn", "onednn 1-thread",
                                   "onednn pad"])
def test_every_route_computes_the_product(label, rng):
    route = Route.from_label(label)
    if route.path == "onednn" and not _onednn.available():
        pytest.skip("oneDNN is not installed (a dependency on x86-64 Linux only)")
    a = rng.standard_normal((48, 256)).astype(np.float32)
    w = rng.standard_normal((96, 1024)).astype(np.float32)  # rows 4 KiB apart
    out = np.full((48, 96), np.nan, np.float32)
    gemm_routes.runner(route)(a[:, :256], w[:, :256], out, False, True)
    np.testing.assert_allclose(out, a @ w[:, :256].T, rtol=1e-4, atol=1e-4)
    d = rng.standard_normal((48, 1024)).astype(np.float32)
    out = np.full((48, 96), np.nan, np.float32)
    gemm_routes.runner(route)(d, w, out, False, True)  # the page-strided dX product
    np.testing.assert_allclose(out, d @ w.T, rtol=1e-4, atol=1e-3)


@needs_onednn
def test_the_padded_copy_is_only_taken_when_asked(monkeypatch, rng):
    copies = []
    real = _onednn._padded_copy
    monkeypatch.setattr(_onednn, "_padded_copy", lambda b: copies.append(b.shape) or real(b))
    d = rng.standard_normal((32, 1024)).astype(np.float32)
    w = rng.standard_normal((64, 1024)).astype(np.float32)
    out = np.empty((32, 64), np.float32)
    assert _onednn.gemm(d, w, out, False, True) and copies == []
    assert _onednn.gemm(d, w, out, False, True, pad=True) and copies == [(64, 1024)]
    np.testing.assert_allclose(out, d @ w.T, rtol=1e-4, atol=1e-3)


def test_a_busy_machine_takes_the_default_routes_and_measures_later(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(measured, "busy", lambda: True)
    monkeypatch.delenv("MLPX_GEMM_MEASURE", raising=False)
    monkeypatch.setattr(gemm_routes, "choose", lambda *a: pytest.fail("measured while busy"))
    gemm_routes.forget()
    libraries = ("onednn", "numpy")
    a, b = np.ones((256, 784), np.float32), np.ones((784, 1024), np.float32)
    route = gemm_routes.route_for(libraries, a, b, np.empty((256, 1024), np.float32),
                                  False, False)
    assert route == ONEDNN and not (tmp_path / "gemm_routes.json").exists()
    assert "machine busy" in gemm_routes.chosen()["nn 2^27"]
    small = gemm_routes.route_for(libraries, a[:8, :64], b[:64, :64],
                                  np.empty((8, 64), np.float32), False, False)
    assert small == NUMPY  # OpenBLAS runs it in the calling thread


def test_info_reports_the_routes_measured_or_defaulted(tmp_path, monkeypatch, capsys):
    from mlpx.commands import cli

    monkeypatch.setenv("MLPX_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("MLPX_GEMM_MEASURE", "0")
    gemm_routes.forget()
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "float32 GEMM routes among" in out and "MLPX_GEMM_MEASURE=0" in out
    monkeypatch.delenv("MLPX_GEMM_MEASURE")
    assert cli.main(["info"]) == 0
    assert "none measured here yet" in capsys.readouterr().out
    libraries = CPUBackend().gemm_libraries
    key = gemm_routes.routes_key(libraries)
    measured.store(gemm_routes.QUESTION, f"{key} | nt 2^28 page",
                   {"route": "onednn pad", "shape": [256, 1024, 1024],
                    "median_ms": {"onednn": 3.7, "onednn pad": 2.7}})
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    [line] = [v for v in out.splitlines() if "nt 2^28 page" in v]
    assert "onednn pad" in line and "onednn 3.7" in line
    if len(libraries) < 2:
        return  # a single library: no thread-pool choice to report
    # the thread-pool choice holds step-time ratios, not per-library milliseconds
    measured.store(gemm_routes.QUESTION, f"{key} | pool",
                   {"route": libraries[-1], "time_ratio": {
                       libraries[0]: [1.0, 1.0], libraries[-1]: [0.5273, 1.0157]}})
    assert cli.main(["info"]) == 0
    [line] = [v for v in capsys.readouterr().out.splitlines() if "thread pool" in v]
    assert f"(step time / {libraries[0]}'s: {libraries[-1]} 0.527 / 1.02;" in line


def test_info_measure_measures_the_benchmark_steps(monkeypatch, capsys):
    from mlpx.backends import cpu_choices
    from mlpx.commands import cli

    asked = []
    monkeypatch.setattr(cpu_choices, "measure_training_shapes", asked.append)
    assert cli.main(["info", "--measure"]) == 0
    [models] = asked
    assert models[784, 1024, 1024, 10] == (256, 1024, 4096)
    assert models[784, 256, 128, 10] == (32, 64, 128, 256)
    assert "busy" not in capsys.readouterr().out
    monkeypatch.setattr(measured, "busy", lambda: True)
    assert cli.main(["info", "--measure"]) == 0
    out = capsys.readouterr().out
    assert "is busy" in out and "run it again when the machine is quiet" in out


def test_measure_training_shapes_runs_the_three_gemms_of_each_layer(monkeypatch):
    from mlpx.backends import cpu_choices, get_backend

    seen = []
    ops = get_backend("cpu")
    monkeypatch.setattr(type(ops), "matmul", lambda self, a, b, out, trans_a=False,
                        trans_b=False: seen.append((a.shape, b.shape, trans_a, trans_b)))
    cpu_choices.measure_training_shapes({(5, 4, 3): (8,)})
    assert seen == [((8, 5), (5, 4), False, False), ((8, 4), (5, 4), False, True),
                    ((8, 5), (8, 4), True, False), ((8, 4), (4, 3), False, False),
                    ((8, 3), (4, 3), False, True), ((8, 4), (8, 3), True, False)]


def test_cache_key_names_numpys_openblas_only(monkeypatch):
    """SciPy's OpenBLAS (loaded by Numba in some processes, not in others) must not change
    the key under which a machine's routes are cached."""
    import threadpoolctl

    numpy_blas = {"internal_api": "openblas", "version": "0.3.31",
                  "filepath": "/venv/site-packages/numpy.libs/libscipy_openblas64_.so"}
    scipy_blas = {"internal_api": "openblas", "version": "0.3.30",
                  "filepath": "/venv/site-packages/scipy.libs/libscipy_openblas.so"}
    infos = [[numpy_blas], [numpy_blas, scipy_blas]]
    keys = []
    for info in infos:
        monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda info=info: info)
        keys.append(gemm_routes._library_versions(("numpy",)))
    assert keys[0] == keys[1] == [f"numpy {np.__version__}", "openblas 0.3.31"]


def test_numpys_one_thread_limit_sets_numpys_openblas(monkeypatch):
    """NumPy's one-thread route limits the OpenBLAS np.matmul calls, also where SciPy's
    OpenBLAS is loaded beside it (Numba loads it with SciPy installed): one controller of
    each used to leave the route without a limit, so it ran on every thread."""
    from _helpers import library_threads

    from mlpx.backends import numba_common  # noqa: F401  - loads SciPy's BLAS where installed

    monkeypatch.setattr(gemm_routes, "_limits", {})
    limit = gemm_routes.thread_limit("numpy")
    assert limit is not None and limit.library == numpy_blas.path()
    limit.one()
    try:
        assert library_threads()[0] == 1
    finally:
        limit.back()
    assert library_threads()[0] == threads.get_num_threads()
