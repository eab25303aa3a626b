"""The GEMM plumbing the library bindings share lives in one leaf module."""

from __future__ import annotations


def test_gemm_bindings_share_one_plumbing_module_and_form_no_import_circle():
    import ast
    import pathlib

    import mlpx.backends as pkg

    root = pathlib.Path(pkg.__file__).parent

    def imported(name):
        tree = ast.parse((root / f"{name}.py").read_text())
        return {n.module.lstrip(".") for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom) and n.level == 1 and n.module}

    assert imported("gemm_plumbing") == set()  # a leaf
    assert "gemm_plumbing" in imported("_mkl") and "gemm_plumbing" in imported("_onednn")
    assert "cpu" not in imported("_onednn") and "_mkl" not in imported("_onednn")
    assert "cpu" not in imported("_mkl")


def test_thread_scratch_is_kept_grown_and_per_thread():
    import threading

    import numpy as np

    from mlpx.backends.gemm_plumbing import ALIGNMENT, thread_scratch

    local = threading.local()
    big = thread_scratch(local, "a", (64, 100), np.float32)
    assert big.shape == (64, 100) and big.flags.c_contiguous
    assert big.ctypes.data % ALIGNMENT == 0
    small = thread_scratch(local, "a", (3, 5), np.float32)
    assert small.shape == (3, 5) and np.shares_memory(small, big)  # reused, not reallocated
    assert not np.shares_memory(thread_scratch(local, "b", (3, 5), np.float32), big)
    assert thread_scratch(local, "a", (3, 5), np.uint16).dtype == np.uint16  # a new array
    seen = []
    t = threading.Thread(target=lambda: seen.append(thread_scratch(local, "a", (3, 5),
                                                                   np.uint16)))
    t.start()
    t.join()
    assert not np.shares_memory(seen[0], thread_scratch(local, "a", (3, 5), np.uint16))
