"""The command line: every usage error is one line on stderr and exit status 2, before any
work starts, in a real process (no traceback); `mlpx --version`; a subcommand whose module
cannot be imported is listed and says why."""

from __future__ import annotations

import subprocess
import sys

import pytest

import mlpx
from mlpx.commands import cli

USAGE_ERRORS = [
    (["demo", "--epochs", "-1"], "--epochs must be >= 1"),
    (["demo", "--epochs", "x"], "--epochs must be an integer"),
    (["demo", "--backend", "bogus"], "unknown backend 'bogus'"),
    (["demo", "--seed", "-1"], "--seed must be >= 0"),
    (["check", "--seed", "-1"], "--seed must be >= 0"),
    (["check", "--sizes", "8,8,1"], "needs at least 2 outputs"),
    (["check", "--batch", "0"], "--batch must be >= 1"),
    (["check", "--loss", "nope"], "unknown loss 'nope'"),
    (["check", "--import", "mlpx_no_such_module"], "No module named"),
    (["check", "--model", "nocolon"], "MODULE:FUNCTION"),
    (["bench", "--min-time", "-2"], "--min-time must be >= 0"),
    (["bench", "--rounds", "0"], "--rounds must be >= 1"),
    (["bench", "--dtype", "int8"], "float32, float64, mixed_bfloat16"),
    (["nosuchcommand"], "invalid choice"),
]


@pytest.mark.parametrize("argv, message", USAGE_ERRORS, ids=lambda a: " ".join(a)
                         if isinstance(a, list) else "")
def test_usage_errors_exit_2_with_one_line(argv, message, capsys, tmp_path):
    assert cli.main([*argv, *(["--out", str(tmp_path / "o")] if argv[0] == "demo" else [])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert err[0].startswith("mlpx")
    assert not (tmp_path / "o").exists()  # nothing ran


@pytest.mark.parametrize("argv", [["demo", "--epochs", "-1"], ["check", "--sizes", "8,8,1"],
                                  ["demo", "--backend", "cuda:7"]])
def test_usage_errors_in_a_process_have_no_traceback(argv, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mlpx", *argv], capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_bare_mlpx_prints_the_help(capsys):
    assert cli.main([]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("usage: mlpx") and err == ""
    for command in ("train", "predict", "demo", "info", "bench", "check"):
        assert f"\n    {command} " in out, command


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"mlpx {mlpx.__version__}"


def test_backend_names_come_from_the_backend_registry():
    from mlpx.backends import VALID_NAMES, check_backend_name

    assert check_backend_name(" CUDA:1 ") == "cuda:1"
    for name in ("cpu", "cuda", "auto", "reference"):
        assert cli.backend_name(name) == name
    with pytest.raises(Exception, match="valid names are " + ", ".join(VALID_NAMES)):
        cli.backend_name("tpu")


def test_a_subcommand_that_cannot_be_imported_is_reported(monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def broken(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 1 and fromlist and "bench" in fromlist:
            raise ImportError("simulated: a dependency is missing")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.setattr(builtins, "__import__", broken)
    parser = cli.build_parser()
    assert "bench" in parser.format_help()  # still listed
    assert cli.main(["bench", "--quick"]) == 1
    err = capsys.readouterr().err
    assert ("mlpx bench: cannot import mlpx.commands.bench: simulated: a dependency is "
            "missing") in err


def test_check_reference_compares_with_something_independent(capsys):
    assert cli.main(["check", "--sizes", "6,8,3", "--batch", "8", "--backend", "reference",
                     "--no-torch"]) == 0
    out = capsys.readouterr().out
    assert "reference float64 gradients vs central finite differences: ok" in out
    assert "note: reference:" in out and "finite differences" in out


def test_check_finite_differences_catch_a_wrong_reference_gradient(monkeypatch):
    from mlpx import activations
    from mlpx.commands.check import run_check

    monkeypatch.setattr(activations.Tanh, "derivative",
                        lambda self, ops, dy, z, y: dy * (1.0 - y * y) * 1.01)
    report = run_check([6, 8, 3], batch=8, activation="tanh", backends=["reference"],
                       torch=False)
    fd = [c for c in report.comparisons if c.label == "finite differences"]
    assert fd and not fd[0].ok


@pytest.mark.parametrize("command", [["train", "data.csv", "--target", "y"], ["demo"]])
def test_an_out_directory_that_is_a_file_is_a_usage_error(command, tmp_path, capsys):
    existing = tmp_path / "existing_file"
    existing.write_text("keep me")
    assert cli.main([*command, "--backend", "cpu", "--out", str(existing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"mlpx {command[0]}: --out: "), err
    assert "existing_file': it is a file, not a directory" in err[0]
    assert existing.read_text() == "keep me"


@pytest.mark.parametrize("cupy, probe, says", [
    (False, (0, None), ['needs CuPy, which is not installed', 'pip install "mlpx[cuda12]"']),
    (True, (0, "CuPy is installed but cannot be imported (ImportError: libcudart.so.12)"),
     ["cannot be imported (ImportError: libcudart.so.12)", "reinstall it", "mlpx[cuda13]"]),
    (True, (0, "CUDARuntimeError: cudaErrorInsufficientDriver: CUDA driver version is "
               "insufficient"), ["could not reach one: CUDARuntimeError: "
                                 "cudaErrorInsufficientDriver", "nvidia-smi"]),
    (True, (0, None), ["CuPy is installed and found none", "backend='cpu'"]),
    (True, (2, None), ["cuda: 2 GPU(s)"]),
], ids=["no cupy", "cupy broken", "driver", "no gpu", "two gpus"])
def test_info_says_why_cuda_is_missing(cupy, probe, says, monkeypatch, capsys):
    from mlpx import backends

    monkeypatch.setattr(backends, "has_cupy", lambda: cupy)
    monkeypatch.setattr(backends, "gpu_probe", lambda: probe)
    monkeypatch.setattr("mlpx._compat.gpu_probe", lambda: probe)
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    [line] = [v for v in out.splitlines() if v.startswith("cuda: ")]
    for text in says:
        assert text in line, line


@pytest.mark.parametrize("cc,says", [("90", "native: cuBLAS GemmEx"), ("75", "not available")])
def test_info_says_how_cuda_runs_mixed_bfloat16(cc, says, monkeypatch, capsys):
    import types

    import mlpx
    from mlpx import backends

    monkeypatch.setattr(mlpx, "available_backends", lambda: ["cpu", "cuda"])
    gpu = types.SimpleNamespace(compute_capability=cc, device_id=0)
    real = backends.get_backend
    monkeypatch.setattr(backends, "get_backend",
                        lambda name="cpu": gpu if name == "cuda" else real(name))
    assert cli.main(["info"]) == 0
    [line] = [v for v in capsys.readouterr().out.splitlines()
              if v.startswith("dtype='mixed_bfloat16' on cuda: ")]
    assert says in line
