"""mixed_bfloat16 against PyTorch autocast (mlpx.commands.precision_check), for every
differentiable built-in activation (PReLU with its per-unit slopes) and every loss, and `mlpx
check --dtype mixed_bfloat16`."""

from __future__ import annotations

import pytest

from mlpx import activations, losses
from mlpx.commands.check import run_check
from mlpx.commands.precision_check import C16, EPS16, tolerance

pytest.importorskip("torch")

#: every built-in activation with a gradient: step has none, so no training step to check
ACTIVATIONS = [c().name for c in activations.builtins() if c is not activations.Step]
LOSSES = [c().name for c in losses.builtins()]


def test_every_activation_and_loss_is_compared():
    assert set(LOSSES) == {"mse", "l1", "cross_entropy", "bce", "nll"}
    assert {"sigmoid", "tanh", "elu", "gelu", "silu", "softplus", "prelu"} <= set(ACTIVATIONS)
    assert all(c().torch_module() is not None for c in losses.builtins())


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_forward_and_gradients_match_torch_autocast(activation):
    for loss in LOSSES:
        report = run_check([48, 40, 24, 6], 48, activation, dtypes=["mixed_bfloat16"],
                           backends=["cpu", "reference"], loss=loss)
        assert report.ok, report.failures()
        labels = [c.label for c in report.comparisons]
        assert labels[:2] == ["cpu", "pytorch autocast"]
        names = [d.name for d in report.comparisons[1].diffs]
        assert len(names) == 3 + 1 + 6 + (2 if activation == "prelu" else 0), names


def test_prelu_slopes_are_compared_with_pytorch():
    report = run_check([16, 12, 8, 3], 16, "prelu", dtypes=["mixed_bfloat16"],
                       backends=["cpu", "reference"])
    assert report.ok, report.failures()
    torch_diffs = {d.name: d for d in report.comparisons[1].diffs}
    assert {"L0 slopes grad", "L1 slopes grad"} <= set(torch_diffs)
    assert all(0 < torch_diffs[f"L{i} slopes grad"].max_rel for i in (0, 1))


def test_the_bound_catches_a_wrong_derivative_in_pytorchs_comparison(monkeypatch):
    # the comparison with autocast is not vacuous for the rounded derivatives: a derivative
    # off by a factor fails it
    from mlpx.commands import precision_check

    real = precision_check.run_torch_autocast

    def scaled(*args, **kwargs):
        outs, loss, grads = real(*args, **kwargs)
        return outs, loss, [g * 1.25 for g in grads]

    monkeypatch.setattr(precision_check, "run_torch_autocast", scaled)
    report = run_check([48, 40, 24, 6], 48, "gelu", dtypes=["mixed_bfloat16"],
                       backends=["cpu", "reference"])
    assert not report.ok


def test_the_bound_catches_a_product_left_in_float32(monkeypatch):
    # a backend that skipped the rounding computes float32 products: within float32's
    # tolerance of nothing, and far from the policy's reference
    from mlpx.backends import get_backend

    cpu = get_backend("cpu")
    monkeypatch.setattr(type(cpu), "matmul_bf16", type(cpu).matmul)
    report = run_check([48, 40, 24, 6], 48, "tanh", dtypes=["mixed_bfloat16"],
                       backends=["cpu", "reference"], torch=False)
    assert not report.ok
    assert "reference under the same policy" in report.failures()[0]


def test_tolerance_grows_with_depth():
    assert tolerance(1) == C16 * EPS16
    assert tolerance(6) == 6 * tolerance(1)


def test_the_check_command_takes_the_policy(capsys):
    from mlpx.commands.cli import main

    code = main(["check", "--dtype", "mixed_bfloat16", "--sizes", "16,8,3", "--batch", "8",
                 "--backend", "cpu"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "cpu mixed_bfloat16 vs reference mixed_bfloat16: ok" in out
    assert "pytorch autocast mixed_bfloat16" in out and "C16*K*eps16" in out


def test_backends_under_the_policy_get_the_rerounding_allowance():
    """Each layer's output is rounded to bfloat16 again as the next product's operand: two
    GEMM libraries' float32 results straddling a rounding boundary differ there by a bfloat16
    unit. The cpu backend's library against the reference's NumPy products, on a model wide
    enough for that to happen, meets the float32 tolerance times C_MIX * depth."""
    from mlpx.commands.comparison import EPS32
    from mlpx.commands.precision_check import C_MIX

    report = run_check([256, 512, 512, 10], 128, "relu", dtypes=["mixed_bfloat16"],
                       backends=["cpu", "reference"], torch=False)
    (comp,) = [c for c in report.comparisons if c.label == "cpu"]
    assert report.ok, report.failures()
    tol = {d.name: d.tol for d in comp.diffs}
    k_grad = 512
    assert tol["L0 output"] == pytest.approx(C_MIX * 1 * 256 * EPS32)
    assert tol["L2 output"] == pytest.approx(C_MIX * 3 * 512 * EPS32)
    assert tol["L0 W grad"] == pytest.approx(C_MIX * 6 * k_grad * EPS32)
