"""The optional MKL GEMM path of the cpu backend (mlpx.backends._mkl) and MLPX_BLAS."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import mlpx
from mlpx.backends import _mkl, _onednn
from mlpx.backends.cpu import CPUBackend

needs_mkl = pytest.mark.skipif(
    not _mkl.available(),
    reason="Intel MKL (libmkl_rt) is not installed: `pip install mkl` (part of the dev extra)",
)

TRANS = [(False, False), (True, False), (False, True), (True, True)]


def _operands(rng, m, n, k, ta, tb, dtype):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    return a, b


def _expected(a, b, ta, tb):
    return (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)


def _tol(dtype, k):
    # |error| <= k * eps * sum|a||b|; the operands are O(1), so k * eps * k bounds it loosely
    return 4 * k * np.finfo(dtype).eps * np.sqrt(k) + 1e-30


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ta,tb", TRANS)
def test_gemm_matches_numpy_for_every_transpose(dtype, ta, tb):
    rng = np.random.default_rng(0)
    m, n, k = 37, 29, 53
    a, b = _operands(rng, m, n, k, ta, tb, dtype)
    out = np.full((m, n), np.nan, dtype)
    assert _mkl.gemm(a, b, out, ta, tb) is True
    ref = np.matmul(a.T if ta else a, b.T if tb else b)
    np.testing.assert_allclose(out, ref, rtol=0, atol=_tol(dtype, k))
    np.testing.assert_allclose(out, _expected(a, b, ta, tb), rtol=0, atol=_tol(dtype, k))


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_reads_strided_and_column_major_operands_without_copies(dtype):
    rng = np.random.default_rng(1)
    big = rng.standard_normal((40, 60)).astype(dtype)
    a = big[3:20, 5:30]  # row-major with a leading dimension of 60
    b = np.asfortranarray(rng.standard_normal((25, 11)).astype(dtype))  # column-major
    out = np.empty((17, 11), dtype)
    assert _mkl.gemm(a, b, out)
    np.testing.assert_allclose(out, a @ b, rtol=0, atol=_tol(dtype, 25))
    out2 = np.empty((25, 11), dtype)  # a^T as a flag over the strided view
    assert _mkl.gemm(a, rng.standard_normal((17, 11)).astype(dtype), out2, trans_a=True)


@needs_mkl
def test_gemm_declines_what_blas_cannot_take_and_the_backend_falls_back():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((8, 6)).astype(np.float32)
    b = rng.standard_normal((6, 5)).astype(np.float32)
    cases = {
        "mixed dtypes": (a, b.astype(np.float64), np.empty((8, 5), np.float32)),
        "int dtype": (a.astype(np.int64), b.astype(np.int64), np.empty((8, 5), np.int64)),
        "strided out": (a, b, np.empty((8, 10), np.float32)[:, ::2]),
        "element-strided a": (np.ascontiguousarray(np.repeat(a, 2, axis=1))[:, ::2], b,
                              np.empty((8, 5), np.float32)),
        "negative strides": (a[::-1], b, np.empty((8, 5), np.float32)),
    }
    ops = CPUBackend()
    ops.blas = "mkl"
    for why, (x, w, out) in cases.items():
        if why != "mixed dtypes" and why != "int dtype":
            assert _mkl.gemm(x, w, out) is False, why
        if why == "mixed dtypes":
            continue  # NumPy itself would cast; not an op the layers issue
        ops.matmul(x, w, out=out)
        np.testing.assert_allclose(out, (x @ w).astype(out.dtype), rtol=1e-5, atol=1e-5,
                                   err_msg=why)
    # an output overlapping an operand goes to NumPy, which handles the overlap
    sq = rng.standard_normal((6, 6)).astype(np.float32)
    expect = sq @ sq
    assert _mkl.gemm(sq, sq, sq) is False
    ops.matmul(sq, sq, out=sq)
    np.testing.assert_allclose(sq, expect, rtol=1e-5, atol=1e-5)


@needs_mkl
def test_gemm_shape_errors_say_what_was_expected():
    a = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"out must be \(4, 2\)"):
        _mkl.gemm(a, np.zeros((3, 2), np.float32), np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="inner sizes"):
        _mkl.gemm(a, np.zeros((5, 2), np.float32), np.zeros((4, 2), np.float32))


@needs_mkl
def test_gemm_empty_inner_dimension_writes_zeros():
    out = np.full((3, 2), 7.0, np.float32)
    assert _mkl.gemm(np.zeros((3, 0), np.float32), np.zeros((0, 2), np.float32), out)
    assert not out.any()


@needs_mkl
def test_thread_count_is_settable_and_validated():
    before = _mkl.get_num_threads()
    try:
        _mkl.set_num_threads(1)
        assert _mkl.get_num_threads() == 1
    finally:
        _mkl.set_num_threads(before)
    with pytest.raises(ValueError, match="positive integer"):
        _mkl.set_num_threads(0)
    assert _mkl.version()[:1].isdigit()


@needs_mkl
def test_training_with_mkl_matches_numpy_blas_within_float32_rounding():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((96, 20)).astype(np.float32)
    y = rng.integers(0, 4, 96)
    grads = {}
    for blas in ("numpy", "mkl"):
        ops = CPUBackend()
        ops.blas = blas
        assert ops.blas == blas
        model = mlpx.MLP([20, 32, 16, 4], activation="tanh", backend=ops, seed=5)
        loss, g = model.loss_and_grad(X, y, loss="cross_entropy")
        grads[blas] = (loss, g)
    assert grads["mkl"][0] == pytest.approx(grads["numpy"][0], rel=1e-5)
    for gm, gn in zip(grads["mkl"][1], grads["numpy"][1], strict=True):
        np.testing.assert_allclose(gm, gn, rtol=1e-4, atol=1e-5)


def test_blas_choice_follows_mlpx_blas_and_rejects_unknown_values(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPX_CACHE_DIR", str(tmp_path))  # auto measures into a fresh cache
    # without oneDNN (which auto prefers; tests/test_onednn.py): auto is MKL vs NumPy's BLAS
    monkeypatch.setattr(_onednn, "available", lambda: False)
    ops = CPUBackend()
    ops.blas = "numpy"
    assert ops.blas == "numpy"
    ops.blas = "auto"
    auto = _mkl.measured_choice()  # cached by the line above: the same answer
    assert ops.blas == auto and auto in ("mkl", "numpy")
    if _mkl.available():
        assert _mkl.cached_choice()["choice"] == auto
    with pytest.raises(ValueError, match="use one of auto, onednn, mkl, numpy"):
        ops.blas = "openblas"
    code = "import mlpx, sys; print(mlpx.get_backend('cpu').blas); " \
           "print('mlpx.backends._mkl' in sys.modules)"
    # unset or empty: auto; numpy: NumPy's BLAS, MKL untouched
    for choice, expect in (("numpy", "numpy"), ("", auto), ("auto", auto), ("MKL ", "mkl")):
        if choice == "MKL " and not _mkl.available():
            continue
        env = dict(os.environ, MLPX_BLAS=choice, MLPX_CACHE_DIR=str(tmp_path),
                   MLPX_ONEDNN_LIB=str(tmp_path / "no-libdnnl.so"))
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True).stdout.split()
        assert out[0] == expect, choice
        assert out[1] == ("False" if choice == "numpy" else "True"), choice


def test_mlpx_blas_mkl_without_the_library_says_how_to_install(monkeypatch):
    monkeypatch.setattr(_mkl, "available", lambda: False)
    monkeypatch.setattr(_onednn, "available", lambda: False)
    ops = CPUBackend()
    with pytest.raises(RuntimeError, match=r"pip install mlpx\[mkl\]"):
        ops.blas = "mkl"
    ops.blas = "auto"
    assert ops.blas == "numpy"


def test_import_mlpx_does_not_load_mkl():
    code = "import mlpx, sys; print('mlpx.backends._mkl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"


# ------------------------------------------------------------------ MLPX_BLAS=auto, measured
@pytest.fixture
def fake_timings(tmp_path, monkeypatch):
    """MKL 'available', GEMM timings chosen by the test, a fresh cache directory."""
    monkeypatch.setenv("MLPX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_mkl, "available", lambda: True)
    monkeypatch.setattr(_mkl, "version", lambda: "2099.0")
    timings = {"numpy": 1.0, "mkl": 1.0, "calls": 0}

    def fake():
        timings["calls"] += 1
        return timings["numpy"], timings["mkl"]

    monkeypatch.setattr(_mkl, "_time_paths", fake)
    return timings


@pytest.mark.parametrize("numpy_s, mkl_s, expect", [
    (1.0, 0.80, "mkl"),     # MKL clearly faster (an Intel Xeon)
    (1.0, 1.15, "numpy"),   # OpenBLAS faster (the AMD EPYC benchmark machines)
    (1.0, 0.985, "numpy"),  # within 3 %: the default stays
])
def test_auto_picks_the_faster_library_with_a_margin(fake_timings, numpy_s, mkl_s, expect):
    fake_timings.update(numpy=numpy_s, mkl=mkl_s)
    assert _mkl.measured_choice() == expect
    entry = _mkl.cached_choice()
    assert entry["choice"] == expect and entry["numpy_s"] == numpy_s and entry["mkl_s"] == mkl_s


def test_auto_measures_once_per_machine_and_setting(fake_timings, monkeypatch, tmp_path):
    fake_timings.update(mkl=0.5)
    assert _mkl.measured_choice() == "mkl"
    fake_timings.update(mkl=2.0)  # a second process on the same machine reads the cache
    assert _mkl.measured_choice() == "mkl" and fake_timings["calls"] == 1
    monkeypatch.setattr(_onednn, "available", lambda: False)
    ops = CPUBackend()
    ops.blas = "auto"
    assert ops.blas == "mkl" and fake_timings["calls"] == 1
    monkeypatch.setenv("MLPX_NUM_THREADS", "7")  # another thread count is another question
    assert _mkl.measured_choice() == "numpy" and fake_timings["calls"] == 2
    monkeypatch.delenv("MLPX_NUM_THREADS")
    assert _mkl.measured_choice() == "mkl"  # both answers kept
    assert len(json.loads((tmp_path / "blas_choice.json").read_text())) == 2


def test_auto_survives_a_corrupt_or_unwritable_cache(fake_timings, monkeypatch, tmp_path):
    (tmp_path / "blas_choice.json").write_text("{not json")
    fake_timings.update(mkl=0.5)
    assert _mkl.measured_choice() == "mkl"
    assert json.loads((tmp_path / "blas_choice.json").read_text())  # rewritten
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("MLPX_CACHE_DIR", str(blocker / "sub"))  # cannot be created
    assert _mkl.measured_choice() == "mkl"
    assert _mkl.measured_choice() == "mkl" and fake_timings["calls"] == 3  # measured each time


def test_auto_without_mkl_measures_nothing(monkeypatch):
    monkeypatch.setattr(_mkl, "available", lambda: False)
    monkeypatch.setattr(_mkl, "_time_paths", lambda: pytest.fail("measured without MKL"))
    assert _mkl.measured_choice() == "numpy" and _mkl.cached_choice() is None


@needs_mkl
def test_auto_times_both_libraries_for_real():
    numpy_s, mkl_s = _mkl._time_paths()
    assert 0 < numpy_s < 30 and 0 < mkl_s < 30
