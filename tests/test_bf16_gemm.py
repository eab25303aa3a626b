"""The cpu backend's bfloat16 GEMM libraries (mlpx.backends._bf16_gemm) against the contract."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.backends import _bf16_gemm, _mkl, _onednn


@pytest.fixture
def fresh_choice(monkeypatch):
    """Forget the cached choice before and after a test that changes MLPX_BF16_GEMM."""
    monkeypatch.delitem(_bf16_gemm._state, "choice", raising=False)
    monkeypatch.delitem(_bf16_gemm._state, "libraries", raising=False)
    _bf16_gemm.forget()
    yield monkeypatch
    _bf16_gemm._state.pop("choice", None)
    _bf16_gemm._state.pop("libraries", None)
    _bf16_gemm.forget()


def _library_present(library):
    if library == "mkl":
        return _mkl.find_library() is not None
    return _onednn.find_library() is not None


@pytest.mark.parametrize("library", _bf16_gemm.LIBRARIES)
def test_a_library_that_runs_computes_the_contract(library):
    if not _library_present(library):
        pytest.skip(f"{library} is not installed")
    from mlpx.backends.bfloat16 import to_bfloat16_bits

    a = np.ones((4, 3), np.float32)
    out = np.full((4, 2), np.nan, np.float32)
    ran = _bf16_gemm.library_gemm(library, to_bfloat16_bits(a),
                                  to_bfloat16_bits(np.ones((3, 2), np.float32)), out)
    if not ran:  # e.g. oneDNN's bfloat16 GEMM needs AVX-512: it refuses, it never miscomputes
        assert not _bf16_gemm.agrees_with_contract(library)
        pytest.skip(f"{library}'s bfloat16 GEMM does not run on this CPU")
    np.testing.assert_array_equal(out, 3.0)
    assert _bf16_gemm.agrees_with_contract(library)


def test_without_bfloat16_instructions_auto_emulates(fresh_choice):
    fresh_choice.setattr(_bf16_gemm, "cpu_bf16_flags", lambda: [])
    fresh_choice.delenv("MLPX_BF16_GEMM", raising=False)
    assert _bf16_gemm.libraries() == []  # no library is timed: they would emulate too
    fresh_choice.setenv("MLPX_GEMM_MEASURE", "0")
    assert _bf16_gemm.route(256, 1024, 784, False, False, _f32_gemm) == "emulated"
    assert _bf16_gemm.route(1, 1024, 784, False, False, _f32_gemm) == "rows"
    text = _bf16_gemm.describe()
    assert text.startswith("emulated") and "avx512_bf16" in text and "slower" in text


def test_an_unknown_choice_is_a_clear_error(fresh_choice):
    fresh_choice.setenv("MLPX_BF16_GEMM", "amx")
    with pytest.raises(ValueError,
                       match="MLPX_BF16_GEMM must be one of auto, emulated, onednn, mkl"):
        _bf16_gemm.choice()


def test_forced_mkl_trains_like_the_emulated_path(fresh_choice):
    if not _bf16_gemm.agrees_with_contract("mkl"):
        pytest.skip("MKL's bfloat16 GEMM is not installed or does not run here")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 30)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    outs = []
    for path in ("emulated", "mkl"):
        fresh_choice.setenv("MLPX_BF16_GEMM", path)
        _bf16_gemm._state.pop("choice", None)
        model = mlpx.MLP([30, 40, 3], dtype="mixed_bfloat16", seed=1)
        _, grads = model.loss_and_grad(X, y, loss="cross_entropy")
        outs.append((model.predict(X), grads))
    (p0, g0), (p1, g1) = outs
    np.testing.assert_allclose(p1, p0, rtol=1e-5, atol=1e-6)
    for a, b in zip(g0, g1, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_cpu_and_reference_share_the_contract():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((50, 20)).astype(np.float32)
    y = rng.integers(0, 4, 50)
    results = []
    for backend in ("reference", "cpu"):
        model = mlpx.MLP([20, 32, 16, 4], activation="tanh", dtype="mixed_bfloat16", seed=4,
                         backend=backend)
        results.append((model.predict(X), model.loss_and_grad(X, y, loss="cross_entropy")))
    (p_ref, (l_ref, g_ref)), (p_cpu, (l_cpu, g_cpu)) = results
    np.testing.assert_allclose(p_cpu, p_ref, rtol=1e-5, atol=1e-6)
    assert abs(l_cpu - l_ref) < 1e-6
    for a, b in zip(g_ref, g_cpu, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------- routes measured per shape class
@pytest.fixture
def measured_routes(tmp_path, monkeypatch):
    """The per-shape routes among one fake library and the emulated route, with a fresh
    cache: `library_gemm` computes the contract's product with NumPy, `delay` seconds slower
    per call than the emulated route (set it in the test)."""
    import time

    from mlpx.backends import measured
    from mlpx.backends.bfloat16 import from_bfloat16_bits

    monkeypatch.setenv("MLPX_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("MLPX_GEMM_MEASURE", raising=False)
    monkeypatch.setattr(measured, "busy", lambda: False)
    monkeypatch.setitem(_bf16_gemm._state, "choice", "measured")
    monkeypatch.setitem(_bf16_gemm._state, "libraries", ["onednn"])
    calls, delay = [], {"s": 0.0}

    def fake_library(library, a16, b16, out, trans_a=False, trans_b=False):
        calls.append(library)
        time.sleep(delay["s"])
        a = from_bfloat16_bits(a16).reshape(a16.shape)
        b = from_bfloat16_bits(b16).reshape(b16.shape)
        np.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)
        return True

    monkeypatch.setattr(_bf16_gemm, "library_gemm", fake_library)
    # the emulated route on the float32 GEMM each test passes (not the library's own)
    monkeypatch.setattr(_bf16_gemm, "emulated_gemm", lambda fallback: fallback)
    _bf16_gemm.forget()
    yield calls, delay, tmp_path
    _bf16_gemm.forget()


def _f32_gemm(a, b, out, trans_a, trans_b):
    np.matmul(a.T if trans_a else a, b.T if trans_b else b, out=out)


def test_the_slower_route_loses_and_the_answer_is_cached(measured_routes):
    import json

    calls, delay, cache = measured_routes
    delay["s"] = 0.002  # the library: 2 ms a call more than the float32 GEMM
    assert _bf16_gemm.route(64, 48, 40, False, False, _f32_gemm) == "emulated"
    entries = json.loads((cache / f"{_bf16_gemm.QUESTION}.json").read_text())
    (entry,) = entries.values()
    assert entry["route"] == "emulated" and entry["shape"] == [64, 48, 40]
    assert set(entry["median_ms"]) == {"emulated", "onednn"}
    assert "nn 2^16" in next(iter(_bf16_gemm.chosen()))
    _bf16_gemm.forget()  # a new process: read back, not timed again
    timed = len(calls)
    assert _bf16_gemm.route(60, 48, 40, False, False, _f32_gemm) == "emulated"  # same class
    assert len(calls) == timed


def test_a_faster_library_wins_its_class_and_computes_the_product(measured_routes):
    calls, delay, _ = measured_routes
    rng = np.random.default_rng(3)
    a = rng.standard_normal((40, 64)).astype(np.float32)  # trans_a: op(a) is 64 x 40
    b = rng.standard_normal((40, 48)).astype(np.float32)

    def slow_f32(*args):
        import time

        time.sleep(0.002)
        _f32_gemm(*args)

    assert _bf16_gemm.route(64, 48, 40, True, False, slow_f32) == "onednn"
    out = np.full((64, 48), np.nan, np.float32)
    assert _bf16_gemm.gemm(a, b, out, True, False, slow_f32)  # the library ran it
    from mlpx.backends.bfloat16 import round_to_bfloat16

    want = round_to_bfloat16(a).T.astype(np.float64) @ round_to_bfloat16(b)
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_unmeasured_narrow_products_take_the_emulated_route(measured_routes, monkeypatch):
    calls, _, _ = measured_routes
    monkeypatch.setenv("MLPX_GEMM_MEASURE", "0")
    assert _bf16_gemm.route(1024, 10, 1024, False, False, _f32_gemm) == "emulated"
    assert _bf16_gemm.route(1024, 1024, 784, False, False, _f32_gemm) == "onednn"
    assert calls == []  # nothing timed
    assert "MLPX_GEMM_MEASURE=0" in _bf16_gemm.describe()


def test_a_forced_library_runs_every_shape(fresh_choice):
    if not _bf16_gemm.agrees_with_contract("onednn"):
        pytest.skip("oneDNN's bfloat16 GEMM does not run on this CPU (it needs AVX-512)")
    fresh_choice.setenv("MLPX_BF16_GEMM", "onednn")
    assert _bf16_gemm.choice() == "onednn"
    assert _bf16_gemm.route(1, 10, 3, False, False, _f32_gemm) == "onednn"
    assert _bf16_gemm.describe().startswith("native: oneDNN")


def test_operand_bits_match_the_contract_in_any_layout():
    from mlpx.backends.bfloat16 import to_bfloat16_bits
    from mlpx.backends.numba_bfloat16 import to_bits_into

    rng = np.random.default_rng(5)
    x = rng.standard_normal((37, 53)).astype(np.float32)
    x.flat[:8] = [np.nan, -np.nan, np.inf, -np.inf, 3.4e38, -0.0, 1 + 2**-8, 1 + 3 * 2**-8]
    x.flat[8] = np.float32(1e-45)  # subnormal
    for view in (x, x.T, x[::2, 3:]):
        got = _bf16_gemm.bits_of(view, "a")
        assert got.dtype == np.uint16 and got.shape == view.shape
        np.testing.assert_array_equal(got, to_bfloat16_bits(view))
        out = np.empty(view.shape, np.uint16)
        to_bits_into(view, out)
        np.testing.assert_array_equal(out, to_bfloat16_bits(view))


@pytest.mark.parametrize("blas,want", [("auto", ["onednn"]), ("mkl", ["mkl"]),
                                       ("numpy", ["onednn"])])
def test_one_library_per_process_the_float32_pools(fresh_choice, blas, want):
    """MKL's idle threads spin on the cores oneDNN's need (and the reverse): the routes
    choose between one library, the float32 GEMMs' own where it agrees, and the emulated
    route."""
    fresh_choice.setattr(_bf16_gemm, "cpu_bf16_flags", lambda: ["avx512_bf16"])
    fresh_choice.setattr(_bf16_gemm, "agrees_with_contract", lambda lib: True)
    fresh_choice.setenv("MLPX_BLAS", blas)
    assert _bf16_gemm.libraries() == want
    _bf16_gemm._state.pop("libraries")
    fresh_choice.setattr(_bf16_gemm, "agrees_with_contract", lambda lib: lib == "mkl")
    assert _bf16_gemm.libraries() == ["mkl"]  # the other, where only it agrees


def test_the_emulated_route_runs_on_the_librarys_threads(fresh_choice):
    """Where a library takes part, the emulated products run on its float32 GEMM (another
    library's idle threads would spin on the cores its next product needs); elsewhere on
    the backend's own."""
    from mlpx.backends import gemm_routes

    fresh_choice.setitem(_bf16_gemm._state, "libraries", ["onednn"])
    fresh_choice.setitem(_bf16_gemm._state, "choice", "measured")
    assert _bf16_gemm.emulated_gemm(_f32_gemm) is gemm_routes.runner(
        gemm_routes.Route("onednn"))
    fresh_choice.setitem(_bf16_gemm._state, "libraries", [])
    assert _bf16_gemm.emulated_gemm(_f32_gemm) is _f32_gemm
    fresh_choice.setitem(_bf16_gemm._state, "libraries", ["onednn"])
    fresh_choice.setitem(_bf16_gemm._state, "choice", "emulated")
    assert _bf16_gemm.emulated_gemm(_f32_gemm) is _f32_gemm
