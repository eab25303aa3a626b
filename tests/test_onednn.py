"""The oneDNN float32 GEMM path of the cpu backend (mlpx.backends._onednn): the default
(`MLPX_BLAS=auto`) where the onednn-cpu-gomp wheel is installed, i.e. on x86-64 Linux."""

from __future__ import annotations

import multiprocessing
import os
import platform
import subprocess
import sys
import threading

import numpy as np
import pytest

import mlpx
from mlpx.backends import _onednn, gemm_routes
from mlpx.backends.cpu import CPUBackend

X86_LINUX = sys.platform == "linux" and platform.machine() == "x86_64"
needs_onednn = pytest.mark.skipif(
    not _onednn.available(),
    reason="oneDNN is not installed (a dependency on x86-64 Linux only: pip install -e .)",
)


def test_onednn_is_installed_where_it_is_a_dependency():
    """The wheel is a dependency on x86-64 Linux: there, the tests below must run."""
    if not X86_LINUX:
        pytest.skip("onednn-cpu-gomp is a dependency on x86-64 Linux only")
    assert _onednn.available(), _onednn.error() or "libdnnl not found; pip install -e ."
    assert _onednn.version().startswith("3.")


def _operands(rng, m, k, n, trans_a, trans_b, layout):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    if layout == "fortran":  # the transposes of row-major arrays
        a, b = np.asfortranarray(a), np.asfortranarray(b)
    elif layout == "padded":  # rows with a leading dimension larger than the width
        a = np.pad(a, ((0, 0), (0, 3)))[:, : a.shape[1]]
        b = np.pad(b, ((0, 0), (0, 5)))[:, : b.shape[1]]
    return a, b


@needs_onednn
@pytest.mark.parametrize("layout", ["c", "fortran", "padded"])
@pytest.mark.parametrize("trans_a, trans_b", [(False, False), (True, False), (False, True),
                                              (True, True)])
@pytest.mark.parametrize("m, k, n", [(67, 65, 63), (256, 784, 1024), (1, 784, 1024),
                                     (512, 64, 10)])
def test_gemm_matches_numpy(m, k, n, trans_a, trans_b, layout, rng):
    a, b = _operands(rng, m, k, n, trans_a, trans_b, layout)
    out = np.full((m, n), np.nan, np.float32)
    assert _onednn.gemm(a, b, out, trans_a, trans_b)
    want = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-4 * np.sqrt(k))


@needs_onednn
def test_gemm_declines_what_it_does_not_handle(rng):
    a = rng.standard_normal((80, 64)).astype(np.float32)
    b = rng.standard_normal((64, 60)).astype(np.float32)
    out = np.zeros((80, 60), np.float32)
    assert not _onednn.gemm(a.astype(np.float64), b.astype(np.float64), out.astype(np.float64))
    assert not _onednn.gemm(a, b, np.zeros((60, 80), np.float32).T)  # out not C-contiguous
    assert not _onednn.gemm(a[:, ::2], b[::2], out)  # strided columns
    tall = rng.standard_normal((160, 64)).astype(np.float32)
    every_other_row = np.zeros((80, 60), np.float32)  # a leading dimension of 128: handled
    assert _onednn.gemm(tall[::2], b, every_other_row)
    np.testing.assert_allclose(every_other_row, tall[::2] @ b, rtol=1e-5, atol=1e-4)
    overlap = np.zeros((80, 124), np.float32)
    assert not _onednn.gemm(overlap[:, :64], b, overlap[:, 64:])  # out overlaps an operand
    assert not _onednn.gemm(a[:, :0], b[:0], out)  # k == 0: NumPy writes the zeros
    assert _onednn.gemm(a[:8, :4], b[:4, :6], small := np.zeros((8, 6), np.float32))
    np.testing.assert_allclose(small, a[:8, :4] @ b[:4, :6], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="matmul shapes do not match"):
        _onednn.gemm(a, b, np.zeros((80, 59), np.float32))


@needs_onednn
def test_a_failed_call_falls_back_to_numpy(monkeypatch, rng):
    class Failing:
        @staticmethod
        def dnnl_sgemm(*args):
            return 2  # dnnl_invalid_arguments

    monkeypatch.setitem(_onednn._state, "lib", Failing())
    monkeypatch.setenv("MLPX_GEMM_MEASURE", "0")  # the plain oneDNN route, not measured
    gemm_routes.forget()
    ops = CPUBackend()
    ops.blas = "onednn"
    a = rng.standard_normal((160, 80)).astype(np.float32)
    b = rng.standard_normal((80, 40)).astype(np.float32)
    out = np.full((160, 40), np.nan, np.float32)
    ops.matmul(a, b, out)
    np.testing.assert_array_equal(out, a @ b)  # NumPy's product, every element written


@needs_onednn
def test_default_path_is_onednn_and_trains_like_numpys_blas(monkeypatch, rng):
    monkeypatch.delenv("MLPX_BLAS", raising=False)
    assert CPUBackend().blas == "onednn"
    X = rng.standard_normal((96, 20)).astype(np.float32)
    y = rng.integers(0, 4, 96)
    results = {}
    for blas in ("numpy", "onednn"):
        ops = CPUBackend()
        ops.blas = blas
        model = mlpx.MLP([20, 32, 16, 4], backend=ops, seed=5)
        loss, grads = model.loss_and_grad(X, y, loss="cross_entropy")
        results[blas] = (loss, grads)
    assert results["onednn"][0] == pytest.approx(results["numpy"][0], rel=1e-5)
    for g1, g2 in zip(results["onednn"][1], results["numpy"][1], strict=True):
        np.testing.assert_allclose(g1, g2, rtol=1e-4, atol=1e-5)
    # float64 has no oneDNN GEMM: NumPy's BLAS, bit for bit
    ops = CPUBackend()
    ops.blas = "onednn"
    a, b = rng.standard_normal((9, 7)), rng.standard_normal((7, 3))
    out = np.empty((9, 3))
    np.testing.assert_array_equal(ops.matmul(a, b, out), a @ b)


def test_mlpx_blas_onednn_without_the_library_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(_onednn, "available", lambda: False)
    ops = CPUBackend()
    with pytest.raises(RuntimeError, match="pip install onednn-cpu-gomp"):
        ops.blas = "onednn"
    code = "import mlpx; print(mlpx.get_backend('cpu').blas)"
    env = dict(os.environ, MLPX_BLAS="auto", MLPX_ONEDNN_LIB=str(tmp_path / "missing.so"),
               MLPX_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.strip()
    assert out in ("numpy", "mkl")  # auto without oneDNN


def test_a_library_that_cannot_be_opened_is_reported_not_raised(tmp_path):
    bad = tmp_path / "libdnnl.so.3"
    bad.write_bytes(b"not a shared object")
    code = ("import mlpx; from mlpx.backends import _onednn; "
            "print(mlpx.get_backend('cpu').blas); print(_onednn.error())")
    env = dict(os.environ, MLPX_BLAS="", MLPX_ONEDNN_LIB=str(bad),
               MLPX_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert out[0] in ("numpy", "mkl") and str(bad) in out[1]


def _child_product(queue):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((128, 96)).astype(np.float32)
    b = rng.standard_normal((96, 64)).astype(np.float32)
    out = np.empty((128, 64), np.float32)
    mlpx.get_backend("cpu").matmul(a, b, out)
    queue.put((_onednn.available(), np.array_equal(out, a @ b)))


@needs_onednn
@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")
def test_a_forked_child_uses_numpys_blas_instead_of_hanging():
    """GNU OpenMP cannot start a parallel region in a child forked after its threads
    started: the child must not call oneDNN."""
    ops = mlpx.get_backend("cpu")
    a = np.ones((256, 256), np.float32)
    ops.matmul(a, a, np.empty_like(a))  # the parent's OpenMP threads are running
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_product, args=(queue,))
    child.start()
    child.join(60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "the forked child hung in a GEMM"
    assert queue.get(timeout=5) == (False, True)  # NumPy's BLAS, NumPy's very product


@needs_onednn
def test_concurrent_gemms_from_threads(rng):
    ops = CPUBackend()
    ops.blas = "onednn"
    a = rng.standard_normal((200, 300)).astype(np.float32)
    b = rng.standard_normal((300, 100)).astype(np.float32)
    want = np.empty((200, 100), np.float32)
    ops.matmul(a, b, want)
    bad = []

    def work():
        out = np.empty((200, 100), np.float32)
        for _ in range(20):
            ops.matmul(a, b, out)
            if not np.array_equal(out, want):
                bad.append(1)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad  # same inputs, same thread count: the same bits every time


@needs_onednn
@pytest.mark.parametrize("layout", ["c", "fortran"])
def test_transposed_operand_with_page_strided_rows_is_padded(layout, rng):
    """b's rows 4 KiB apart (1024 float32): multiplied from a padded copy, same product."""
    a = rng.standard_normal((64, 1024)).astype(np.float32)
    b = rng.standard_normal((96, 1024)).astype(np.float32)  # used as b.T: (1024, 96)
    out = np.empty((64, 96), np.float32)
    if layout == "fortran":  # b.T given as a column-major array: the same operand for BLAS
        assert _onednn.gemm(a, np.asfortranarray(b.T), out, False, False, pad=True)
    else:
        assert _onednn.gemm(a, b, out, False, True, pad=True)
    np.testing.assert_allclose(out, a.astype(np.float64) @ b.T, rtol=1e-4, atol=1e-3)
    scratch = dict(_onednn._local.scratch)
    assert any(buf.shape[1] == 1024 + _onednn._PAD // 4 for buf in scratch.values())
    b2 = rng.standard_normal((96, 1024)).astype(np.float32)
    assert _onednn.gemm(a, b2, out, False, True, pad=True)  # the scratch is reused
    assert all(_onednn._local.scratch[k] is v for k, v in scratch.items())
    np.testing.assert_allclose(out, a.astype(np.float64) @ b2.T, rtol=1e-4, atol=1e-3)
    assert np.array_equal(b2, b2.copy())  # the operand itself is only read


@needs_onednn
def test_padded_products_from_threads_use_their_own_scratch(rng):
    padded = gemm_routes.runner(gemm_routes.Route("onednn", pad=True))
    a = rng.standard_normal((32, 1024)).astype(np.float32)
    bs = [rng.standard_normal((48, 1024)).astype(np.float32) for _ in range(4)]
    wants = [a.astype(np.float64) @ b.T for b in bs]
    bad = []

    def work(i):
        out = np.empty((32, 48), np.float32)
        for _ in range(25):
            padded(a, bs[i], out, False, True)
            if not np.allclose(out, wants[i], rtol=1e-4, atol=1e-3):
                bad.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


def test_bench_records_the_library_of_each_dtype():
    from mlpx.commands.bench_worker import _gemm_path

    ops = CPUBackend()
    ops.blas = "numpy"
    assert _gemm_path(ops, np.float32) == _gemm_path(ops, np.float64) == "numpy"
    if _onednn.available():
        ops.blas = "onednn"
        assert _gemm_path(ops, np.float32) == "onednn"
        assert _gemm_path(ops, np.float64) == "numpy"  # oneDNN has no float64 GEMM
