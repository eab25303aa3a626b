"""`mlpx demo --backend ...` names an unusable backend in one line and exits 2."""

from __future__ import annotations

import pytest

import mlpx.backends
from mlpx.commands.cli import main
from mlpx.errors import BackendUnavailableError


def _no_gpu(name):
    raise BackendUnavailableError(f"backend {name!r} needs a CUDA GPU; use backend='cpu'")


def test_demo_without_gpu_prints_one_line_and_exits_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(mlpx.backends, "get_backend", _no_gpu)
    rc = main(["demo", "--backend", "cuda", "--out", str(tmp_path / "out"), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "mlpx demo: backend 'cuda' needs a CUDA GPU; use backend='cpu'"
    ]
    assert not (tmp_path / "out").exists()  # nothing was trained or written


def test_demo_cuda_on_this_machine(capsys, tmp_path):
    """The real check: without a GPU the library's own message, no traceback."""
    if "cuda" in mlpx.available_backends():
        pytest.skip("a GPU is present, so `mlpx demo --backend cuda` trains instead")
    rc = main(["demo", "--backend", "cuda", "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mlpx demo: backend 'cuda'")
    assert "Traceback" not in err


def test_demo_unknown_backend_is_a_usage_error(capsys, tmp_path):
    rc = main(["demo", "--backend", "tpu", "--out", str(tmp_path), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "unknown backend 'tpu'" in err and len(err.strip().splitlines()) == 1
