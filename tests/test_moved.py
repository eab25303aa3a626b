"""Moved modules keep their old import paths: the same module object, a DeprecationWarning
where it is imported, and the `mlpx` scripts installed before the move still run without
showing it to their users. The library itself never imports a command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MOVED = {
    "mlpx.bench": "mlpx.commands.bench",
    "mlpx.bench_worker": "mlpx.commands.bench_worker",
    "mlpx.bench_profile": "mlpx.commands.bench_profile",
    "mlpx.check": "mlpx.commands.check",
    "mlpx.demo": "mlpx.commands.demo",
    "mlpx.tabular_commands": "mlpx.commands.tabular_commands",
    "mlpx.validation": "mlpx.preconditions",
}


def _python(code: str, *args: str) -> subprocess.CompletedProcess:
    # a fresh process: each old path warns once, when it is first imported
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYTHONWARNINGS", None)
    return subprocess.run([sys.executable, *args, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.parametrize("old, new", MOVED.items())
def test_old_path_is_the_new_module_and_warns(old, new):
    code = (f"import importlib, warnings\n"
            f"with warnings.catch_warnings(record=True) as seen:\n"
            f"    warnings.simplefilter('always')\n"
            f"    old = importlib.import_module({old!r})\n"
            f"assert old is importlib.import_module({new!r}), old\n"
            f"[w] = [w for w in seen if issubclass(w.category, DeprecationWarning)]\n"
            f"assert {new!r} in str(w.message), w.message\n")
    out = _python(code)
    assert out.returncode == 0, out.stderr


def test_old_cli_main_runs_without_a_warning_for_script_users():
    # what an `mlpx` script installed before the move does, with warnings shown as errors
    code = "import sys\nfrom mlpx.cli import main\nsys.exit(main(['--version']))"
    out = _python(code, "-W", "error::DeprecationWarning")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("mlpx ") and out.stderr == ""


def test_other_names_of_the_old_cli_warn():
    import mlpx.cli
    from mlpx.commands import cli

    with pytest.warns(DeprecationWarning, match="mlpx.commands.cli"):
        assert mlpx.cli.build_parser is cli.build_parser


def test_old_worker_path_still_runs_as_a_script():
    out = subprocess.run([sys.executable, "-m", "mlpx.bench_worker", "--help"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert "--batch" in out.stdout


def test_the_library_imports_no_command():
    code = ("import sys, mlpx, mlpx.sklearn\n"
            "mlpx.MLP([4, 3, 2], seed=0).fit([[0.0] * 4] * 4, [0, 1, 0, 1], epochs=1, "
            "loss='cross_entropy', verbose=0)\n"
            "print(sorted(m for m in sys.modules if m.startswith('mlpx.commands')))")
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
