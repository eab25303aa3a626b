"""NumPy's own BLAS (mlpx.backends.numpy_blas): picked out beside SciPy's OpenBLAS, and the
one library both the compiled step and the one-thread GEMM route act on."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import pytest
import threadpoolctl

from mlpx.backends import compiled_step, gemm_routes, numpy_blas

NUMPYS = "/venv/site-packages/numpy.libs/libscipy_openblas64_-32a4b2a6.so"
OLD_NUMPYS = "/venv/site-packages/numpy/.libs/libopenblas64_p-r0-15028c96.3.21.so"
SCIPYS = "/venv/site-packages/scipy.libs/libscipy_openblas-6cdc3b4a.so"


@pytest.fixture
def loaded(monkeypatch):
    """Replaces the libraries threadpoolctl finds with fakes of the given files."""
    def load(*files: str, api: str = "openblas") -> None:
        found = [SimpleNamespace(internal_api=api, filepath=f) for f in files]
        monkeypatch.setattr(threadpoolctl, "ThreadpoolController",
                            lambda: SimpleNamespace(lib_controllers=found))
        numpy_blas.controller.cache_clear()

    yield load
    numpy_blas.controller.cache_clear()  # the real libraries again for later tests


@pytest.mark.parametrize("files", [(NUMPYS, SCIPYS), (SCIPYS, NUMPYS), (NUMPYS,),
                                   (OLD_NUMPYS, SCIPYS)])
def test_numpys_openblas_beside_scipys(loaded, files):
    loaded(*files)
    assert numpy_blas.path() == next(f for f in files if f != SCIPYS)


@pytest.mark.parametrize("files", [(SCIPYS,), (), (NUMPYS, OLD_NUMPYS)])
def test_none_without_exactly_one_openblas_of_numpys(loaded, files):
    loaded(*files)
    assert numpy_blas.controller() is None
    assert numpy_blas.path() is None


def test_another_blas_of_numpys_wheel_is_not_taken(loaded):
    loaded(NUMPYS, api="mkl")
    assert numpy_blas.path() is None


def test_the_compiled_step_and_the_one_thread_route_act_on_the_same_library(monkeypatch):
    """Both find NumPy's OpenBLAS here, also with SciPy's loaded (Numba loads it where SciPy
    is installed): the compiled step binds its GEMMs and thread setter, the one-thread route
    sets its count."""
    from mlpx.backends import numba_common  # noqa: F401  - loads SciPy's BLAS where installed

    path = numpy_blas.path()
    assert path is not None and numpy_blas.bundled_with_numpy(path)  # any Linux NumPy wheel
    if importlib.util.find_spec("scipy") is not None:
        others = [d["filepath"] for d in threadpoolctl.threadpool_info()
                  if d["internal_api"] == "openblas" and d["filepath"] != path]
        assert others and not any(numpy_blas.bundled_with_numpy(f) for f in others)
    assert compiled_step._numpy_blas()._name == path
    monkeypatch.setattr(gemm_routes, "_limits", {})
    limit = gemm_routes.thread_limit("numpy")
    assert limit is not None and limit.library == path
