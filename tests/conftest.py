"""Shared fixtures: a backend fixture over every backend, CUDA cases visibly skipped."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx._compat import gpu_count, has_cupy

ALL_BACKENDS = ["cpu", "cuda"]


def cuda_skip_reason() -> str | None:
    if not has_cupy():
        return ("CUDA backend not tested: CuPy is not installed (pip install '.[cuda13]' "
                "or '.[cuda12]' in a clone of mlpx)")
    if gpu_count() == 0:
        return "CUDA backend not tested: CuPy found no GPU on this machine"
    return None


def backend_params():
    reason = cuda_skip_reason()
    return [
        pytest.param("cpu", id="cpu"),
        pytest.param(
            "cuda", id="cuda",
            marks=[pytest.mark.cuda] + ([pytest.mark.skip(reason=reason)] if reason else []),
        ),
    ]


@pytest.fixture(params=backend_params())
def backend(request) -> str:
    """Every backend name; CUDA shows as skipped (with the reason) without a GPU."""
    return request.param


@pytest.fixture
def ops(backend):
    return mlpx.get_backend(backend)


@pytest.fixture
def reference():
    return mlpx.get_backend("reference")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True)
def _measurements_are_kept(monkeypatch):
    """Tests that check the cache of measured choices see it written whatever the load of the
    machine running them (a measurement on a busy machine is otherwise kept in memory only)."""
    from mlpx.backends import measured

    monkeypatch.setattr(measured, "busy", lambda: False)


def pytest_collection_finish(session) -> None:
    """PyTorch, the reference of many tests, computes on one thread: its OpenMP workers
    spin-wait between ops, and beside mlpx's own BLAS threads on a 2-core machine that turned
    a 645-step comparison from 5 s into 40 s. Its results do not depend on the count."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
