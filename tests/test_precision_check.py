"""mixed_bfloat16 against PyTorch autocast (mlpx.commands.precision_check), for every activation and
loss with a PyTorch twin, and `mlpx check --dtype mixed_bfloat16`."""

from __future__ import annotations

import pytest

from mlpx import activations, losses
from mlpx.commands.check import run_check
from mlpx.commands.precision_check import C16, EPS16, tolerance

pytest.importorskip("torch")

ACTIVATIONS = [c().name for c in activations.builtins() if c().torch_module() is not None]
LOSSES = [c().name for c in losses.builtins() if c().torch_module() is not None]


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_forward_and_gradients_match_torch_autocast(activation):
    for loss in LOSSES:
        report = run_check([48, 40, 24, 6], 48, activation, dtypes=["mixed_bfloat16"],
                           backends=["cpu", "reference"], loss=loss)
        assert report.ok, report.failures()
        labels = [c.label for c in report.comparisons]
        assert labels[:2] == ["cpu", "pytorch autocast"]


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
