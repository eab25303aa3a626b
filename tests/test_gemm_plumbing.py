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
