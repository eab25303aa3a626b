"""`mlpx bench --profile`'s op timer: every op of a step labelled, nothing changed."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.commands.bench_profile import OpTimer, profile_fit

SIZES = [6, 8, 5, 3]


def _fitted(rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    X = rng.standard_normal((64, SIZES[0])).astype(np.float32)
    y = rng.integers(0, SIZES[-1], 64)
    model = mlpx.MLP(SIZES, activation="relu", backend="cpu", seed=0)
    model.fit(X, y, loss="cross_entropy", optimizer="sgd", lr=0.05, epochs=1, batch_size=16,
              verbose=0)
    return model, X, y


def test_profile_labels_every_gemm_by_layer_and_pass():
    model, X, y = _fitted()
    prof = profile_fit(model, X, y, SIZES, batch=16, steps=4, epochs=2)
    ops = {o["label"]: o for o in prof["ops"]}
    gemms = {k for k, o in ops.items() if o["kind"] == "gemm"}
    # the first layer's input needs no gradient: no L0 dX
    assert gemms == {"GEMM L0 fwd", "GEMM L0 dW", "GEMM L1 fwd", "GEMM L1 dW", "GEMM L1 dX",
                     "GEMM L2 fwd", "GEMM L2 dW", "GEMM L2 dX"}
    assert all(ops[g]["calls_per_step"] == 1 for g in gemms)
    # elementwise kernels by layer: bias+activation forward, derivative of the hidden layers
    # with their bias gradient in the same pass, the logits' bias gradient alone
    for label in ("bias_act L0", "bias_act L1", "bias_act L2", "act_backward_bias_grad L0",
                  "act_backward_bias_grad L1", "sum_rows L2"):
        assert ops[label]["kind"] == "elementwise" and ops[label]["calls_per_step"] == 1
    assert "act_backward_bias_grad L2" not in ops  # logits: no activation
    assert "sum_rows L0" not in ops and "sum_rows L1" not in ops
    assert ops["gather (take_rows)"]["calls_per_step"] == 2  # X and y
    assert ops["loss (softmax_cross_entropy)"]["calls_per_step"] == 1
    assert ops["update (sgd_update)"]["calls_per_step"] == 6  # W and b of three layers
    assert 0 < prof["ops_s"] <= prof["step_s"]
    assert prof["python_s"] == pytest.approx(prof["step_s"] - prof["ops_s"])
    assert prof["timer_per_call_s"] > 0


def test_profiling_changes_neither_results_nor_the_backend():
    model, X, y = _fitted()
    twin, _, _ = _fitted()
    profile_fit(model, X, y, SIZES, batch=16, steps=4, epochs=2)
    twin.fit(X, y, epochs=2, batch_size=16, verbose=0)
    for a, b in zip(model.get_weights(), twin.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not [k for k in vars(model.ops) if k in ("matmul", "bias_act", "take_rows")]


def test_nested_op_calls_count_once():
    ops = mlpx.get_backend("reference")
    timer = OpTimer(ops, [4, 3])
    timer.install()
    try:
        a = np.ones((2, 4)); w = np.ones((4, 3)); out = np.empty((2, 3))  # noqa: E702
        ops.matmul(a, w, out=out)
        # an op that calls another op through the instance records only itself
        outer = timer._wrap("outer", lambda: ops.matmul(a, w, out=out))
        outer()
    finally:
        timer.remove()
    assert timer.calls["GEMM L0 fwd"] == 1 and timer.calls["outer"] == 1
    assert "matmul" not in vars(ops)
