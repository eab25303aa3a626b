"""`mlpx check`: passes on correct backends, fails (and names the culprit) on a broken one."""

from __future__ import annotations

import numpy as np
import pytest

from mlpx.backends.cpu import CPUBackend
from mlpx.commands.check import run_check
from mlpx.commands.cli import main
from mlpx.commands.comparison import EPS32, F64_TOL, diff, tolerance

SMALL = ["--sizes", "20,32,16,4", "--batch", "24"]


def test_check_passes_on_correct_backends(capsys):
    assert main(["check", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "mlpx check passed" in out
    assert "cpu float64 vs reference float64: ok" in out
    assert "cpu float32 vs reference float64: ok" in out


def test_check_compares_with_pytorch_and_float64_is_tight():
    pytest.importorskip("torch")
    report = run_check([20, 32, 16, 4], batch=24, activation="tanh")
    labels = {(c.label, c.dtype) for c in report.comparisons}
    assert {("cpu", "float64"), ("cpu", "float32"), ("pytorch", "float64")} <= labels
    assert report.ok, report.failures()
    for c in report.comparisons:
        if c.dtype == "float64":
            # Same formulas in float64: far inside the documented 1e-10.
            assert max(d.max_rel for d in c.diffs) < 1e-13, c.label


def _perturbed(original, scale):
    def act_backward(self, dy, z, y, act, out, slopes=None):
        result = original(self, dy, z, y, act, out, slopes)
        out[0] *= scale  # one sample's delta slightly wrong: a subtle backward bug
        return result

    return act_backward


def _perturbed_fused(original, scale):
    def act_backward_bias_grad(self, dy, z, y, act, out, bias_grad):
        result = original(self, dy, z, y, act, out, bias_grad)
        out[0] *= scale
        return result

    return act_backward_bias_grad


def test_check_fails_when_a_gradient_is_wrong(monkeypatch, capsys):
    # Dense layers with a bias take the fused derivative + bias-gradient op, others act_backward
    monkeypatch.setattr(
        CPUBackend, "act_backward", _perturbed(CPUBackend.act_backward, 1.05)
    )
    monkeypatch.setattr(
        CPUBackend, "act_backward_bias_grad",
        _perturbed_fused(CPUBackend.act_backward_bias_grad, 1.05),
    )
    assert main(["check", *SMALL, "--no-torch"]) == 1
    out = capsys.readouterr().out
    assert "mlpx check FAILED" in out
    failing = [line for line in out.splitlines() if "differs from the float64 reference" in line]
    assert failing and all(line.strip().startswith("cpu ") for line in failing)
    # The hidden layers' weight gradients depend on the broken delta; the outputs do not.
    assert any("cpu float32: L0 W grad" in line for line in failing)
    assert any("cpu float64: L0 W grad" in line for line in failing)
    assert not any("output" in line for line in failing)


def test_check_fails_when_a_forward_gemm_is_wrong(monkeypatch):
    original = CPUBackend.matmul

    def matmul(self, a, b, out, trans_a=False, trans_b=False):
        original(self, a, b, out, trans_a, trans_b)
        if not (trans_a or trans_b) and out.shape[1] == 16:
            out[:, 0] += 1e-3 * np.abs(out).max()  # tiny error in layer 1's forward GEMM
        return out

    monkeypatch.setattr(CPUBackend, "matmul", matmul, raising=False)
    report = run_check([20, 32, 16, 4], batch=24, dtypes=("float32",), torch=False)
    assert not report.ok
    names = {d.name for c in report.comparisons if c.label == "cpu" for d in c.diffs if not d.ok}
    assert "L1 output" in names and "L0 output" not in names


def test_tolerances_and_diff_metric():
    assert tolerance("float64", 10_000) == F64_TOL
    assert tolerance("float32", 1024) == pytest.approx(1024 * EPS32)
    ref = np.array([[10.0, -2.0], [0.0, 1.0]])
    d = diff("t", ref + np.array([[0.0, 0.0], [1e-3, 0.0]]), ref, "float32", 100)
    assert d.max_abs == pytest.approx(1e-3) and d.max_rel == pytest.approx(1e-4)
    assert not d.ok  # 1e-4 > 100 * eps32 = 1.2e-5
    nan = diff("t", np.array([np.nan, 1.0]), np.array([1.0, 1.0]), "float64", 1)
    assert not nan.ok


def test_check_rejects_bad_arguments(capsys):
    assert main(["check", *SMALL, "--dtype", "float16"]) == 2
    assert "float32, float64, mixed_bfloat16" in capsys.readouterr().err
    assert main(["check", "--sizes", "784,x"]) == 2
    # an activation that cannot be trained, or a typo, is a usage error, not a traceback
    assert main(["check", *SMALL, "--activation", "step"]) == 2
    assert "'step' activation has no gradient" in capsys.readouterr().err
    assert main(["check", *SMALL, "--activation", "relux"]) == 2
    assert "unknown activation 'relux'" in capsys.readouterr().err
    assert main(["check", *SMALL, "--backend", "tpu"]) == 2
    assert "unknown backend 'tpu'; valid names are cpu" in capsys.readouterr().err


USER_MODULE = """
import mlpx

def layers():
    return [mlpx.Dense(5, activation="tanh"), mlpx.Dense(3)]

def one_output():
    return [mlpx.Dense(5, activation="tanh"), mlpx.Dense(1)]
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A module of the user's in the working directory, which is not on sys.path (as under
    an installed `mlpx` script); its name is unique so that no other test imports it."""
    import sys

    name = "mlpx_check_user_parts"
    (tmp_path / f"{name}.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(tmp_path))])
    yield name
    sys.modules.pop(name, None)


def test_import_and_model_find_modules_in_the_working_directory(user_module, capsys):
    argv = ["check", "--import", user_module, "--model", f"{user_module}:layers",
            "--sizes", "8", "--batch", "6", "--backend", "reference", "--no-torch"]
    assert main(argv) == 0, capsys.readouterr().err
    assert "mlpx check passed" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--sizes", "8,1"], "--sizes: loss 'cross_entropy' needs at least 2 outputs (one per "
                         "class), got 1; end the sizes with the number of classes"),
    (["--sizes", "8"], "--sizes needs an input and an output width"),
    (["--model", "{m}:one_output", "--sizes", "8"],
     "--model {m}:one_output: loss 'cross_entropy' needs at least 2 outputs"),
    (["--model", "{m}:missing", "--sizes", "8"], "AttributeError"),
])
def test_an_output_width_the_loss_cannot_take_is_one_line_and_exit_2(argv, message, user_module,
                                                                     capsys):
    argv = [a.format(m=user_module) for a in argv]
    assert main(["check", *argv, "--batch", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mlpx check: "), err
    assert message.format(m=user_module) in err[0]


def test_run_check_looks_the_loss_up_once(monkeypatch):
    from mlpx import losses

    calls = []
    real_get = losses.get
    monkeypatch.setattr(losses, "get", lambda spec: calls.append(spec) or real_get(spec))
    run_check([6, 8, 3], batch=4, backends=["reference"], torch=False, loss="mse",
              dtypes=["float64"])
    assert calls.count("mse") == 1, calls


def test_prelu_is_compared_with_pytorch_slopes_and_all():
    pytest.importorskip("torch")
    report = run_check([10, 8, 6, 3], 12, "prelu", dtypes=["float64"], backends=["reference"])
    assert report.ok, report.failures()
    torch = [c for c in report.comparisons if c.label == "pytorch"]
    assert torch and {"L0 slopes grad", "L1 slopes grad"} <= {d.name for d in torch[0].diffs}
    assert not any("PyTorch left out" in n for n in report.notes)
