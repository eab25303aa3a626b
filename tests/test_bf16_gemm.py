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
    yield monkeypatch
    _bf16_gemm._state.pop("choice", None)


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
    assert _bf16_gemm.choice() == "emulated"
    text = _bf16_gemm.describe()
    assert text.startswith("emulated") and "avx512_bf16" in text and "slower" in text


def test_an_unknown_choice_is_a_clear_error(fresh_choice):
    fresh_choice.setenv("MLPX_BF16_GEMM", "amx")
    with pytest.raises(ValueError, match="MLPX_BF16_GEMM must be one of auto, emulated, mkl"):
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
