"""L1/L2 penalties (values, gradients vs finite differences and vs the unregularised gradient
+ the penalty's), gradient clipping by norm and by value (vs torch.nn.utils), and the
History's grad_norm."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import central_differences

import mlpx
from mlpx import regularizers
from mlpx.clipping import GradientClipper
from mlpx.layers.base import Parameter

N, D, H, C = 24, 5, 7, 3


def _data(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, D))
    y = rng.integers(0, C, size=N)
    return X, y


def _model(backend, kernel=None, bias=None, out_kernel=None, dtype="float64"):
    return mlpx.Sequential(
        [
            mlpx.Dense(H, activation="tanh", kernel_regularizer=kernel, bias_regularizer=bias),
            mlpx.Dense(C, kernel_regularizer=out_kernel),
        ],
        input_dim=D, backend=backend, dtype=dtype, seed=3,
    )


@pytest.mark.parametrize(
    "kernel, bias",
    [(regularizers.L2(0.3), None), (regularizers.L1(0.2), None),
     (regularizers.L1L2(l1=0.05, l2=0.4), regularizers.L2(0.7)), ("l2", "l1")],
    ids=["l2", "l1", "l1l2_bias_l2", "names"],
)
def test_penalty_adds_lambda_terms_to_loss_and_gradient(backend, kernel, bias):
    X, y = _data()
    reg = _model(backend, kernel, bias, out_kernel=kernel)
    plain = _model(backend)
    plain.set_weights(reg.get_weights())
    loss_r, grads_r = reg.loss_and_grad(X, y, loss="cross_entropy")
    loss_p, grads_p = plain.loss_and_grad(X, y, loss="cross_entropy")
    W1, b1, W2, b2 = reg.get_weights()
    kr, br = regularizers.get(kernel), regularizers.get(bias)

    def pen(r, w):
        return r.l1 * np.abs(w).sum() + r.l2 / 2 * (w**2).sum() if r else 0.0

    def dpen(r, w):
        return r.l1 * np.sign(w) + r.l2 * w if r else 0.0

    expected_penalty = pen(kr, W1) + pen(br, b1) + pen(kr, W2)
    assert expected_penalty > 0
    assert loss_r == pytest.approx(loss_p + expected_penalty, rel=1e-12)
    np.testing.assert_allclose(grads_r[0], grads_p[0] + dpen(kr, W1), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grads_r[1], grads_p[1] + dpen(br, b1), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(grads_r[2], grads_p[2] + dpen(kr, W2), rtol=1e-12, atol=1e-14)
    # the output bias has no regulariser: its gradient is untouched
    np.testing.assert_array_equal(grads_r[3], grads_p[3])


def test_penalty_gradients_match_finite_differences(backend):
    X, y = _data(1)
    model = _model(backend, regularizers.L1L2(l1=0.03, l2=0.5), regularizers.L2(0.2),
                   out_kernel=regularizers.L1(0.1))
    rng = np.random.default_rng(0)
    # nonzero biases too, away from the L1 kink at 0
    model.set_weights([w + 0.1 * np.sign(rng.normal(size=w.shape)) for w in model.get_weights()])
    _, grads = model.loss_and_grad(X, y, loss="cross_entropy")
    weights = model.get_weights()
    h = 1e-6
    for i, w in enumerate(weights):
        picked = [np.unravel_index(flat, w.shape)
                  for flat in rng.choice(w.size, size=min(6, w.size), replace=False)]

        def f(wi, i=i):
            model.set_weights(weights[:i] + [wi] + weights[i + 1:])
            return model.loss_and_grad(X, y, loss="cross_entropy")[0]

        fd = central_differences(f, w.copy(), h, picked)
        for idx in picked:
            assert abs(w[idx]) > 10 * h  # stay off the L1 kink
            assert grads[i][idx] == pytest.approx(fd[idx], rel=1e-6, abs=1e-8), (i, idx)
    model.set_weights(weights)


def test_reported_training_loss_includes_the_penalty(backend):
    """One full-batch epoch: the loss is the data loss at the start weights (the only batch)
    plus the penalty at the end-of-epoch weights."""
    X, y = _data(2)
    lam = 0.8
    model = _model(backend, kernel=regularizers.L2(lam))
    w0 = model.get_weights()
    with_pen, _ = model.loss_and_grad(X, y, loss="cross_entropy")
    data0 = with_pen - lam / 2 * ((w0[0] ** 2).sum())
    hist = model.fit(X, y, loss="cross_entropy", optimizer="sgd", lr=0.1, epochs=1,
                     batch_size=N, shuffle=False, verbose=0)
    w1 = model.get_weights()
    assert hist.loss[0] == pytest.approx(data0 + lam / 2 * (w1[0] ** 2).sum(), rel=1e-10)
    # and the step followed the regularised gradient: w1 = w0 - lr (g + lam w0)
    plain = _model(backend)
    plain.set_weights(w0)
    _, g = plain.loss_and_grad(X, y, loss="cross_entropy")
    np.testing.assert_allclose(w1[0], w0[0] - 0.1 * (g[0] + lam * w0[0]), rtol=1e-12)
    np.testing.assert_allclose(w1[1], w0[1] - 0.1 * g[1], rtol=1e-12)


def test_penalties_inside_residual_blocks_are_applied(backend):
    X, y = _data(7)

    def build(reg):
        return mlpx.Sequential(
            [mlpx.Dense(6, activation="tanh"),
             mlpx.Residual([mlpx.Dense(6, activation="tanh", kernel_regularizer=reg)]),
             mlpx.Dense(C)],
            input_dim=D, backend=backend, dtype="float64", seed=2,
        )

    reg, plain = build(regularizers.L2(0.4)), build(None)
    plain.set_weights(reg.get_weights())
    loss_r, g_r = reg.loss_and_grad(X, y, loss="cross_entropy")
    loss_p, g_p = plain.loss_and_grad(X, y, loss="cross_entropy")
    W = reg.get_weights()[2]  # the Dense inside the residual block
    assert loss_r == pytest.approx(loss_p + 0.2 * (W**2).sum(), rel=1e-12)
    np.testing.assert_allclose(g_r[2], g_p[2] + 0.4 * W, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(g_r[0], g_p[0])


def test_regularizer_config_round_trip_and_errors():
    layer = mlpx.Dense(4, kernel_regularizer=regularizers.L1L2(0.1, 0.2),
                       bias_regularizer=regularizers.L1(0.3))
    cfg = layer.get_config()
    assert regularizers.get(cfg["kernel_regularizer"]) == regularizers.L1L2(0.1, 0.2)
    assert regularizers.get(cfg["bias_regularizer"]) == regularizers.L1(0.3)
    assert mlpx.Dense(4).get_config()["kernel_regularizer"] is None
    assert regularizers.get("l2") == regularizers.L2(0.01)
    with pytest.raises(ValueError, match="unknown regularizer 'l3'"):
        mlpx.Dense(4, kernel_regularizer="l3")
    with pytest.raises(ValueError, match="l2 must be a finite number >= 0"):
        regularizers.L2(-1.0)


def test_penalty_kernels_match_reference():
    cpu, ref = mlpx.get_backend("cpu"), mlpx.get_backend("reference")
    rng = np.random.default_rng(4)
    for dtype in (np.float32, np.float64):
        w = rng.normal(size=(33, 17)).astype(dtype)
        w[0, :3] = 0.0  # sign(0) = 0
        g = rng.normal(size=w.shape).astype(dtype)
        a, b = g.copy(), g.copy()
        cpu.add_penalty_grad(w, a, 0.05, 0.3)
        ref.add_penalty_grad(w, b, 0.05, 0.3)
        np.testing.assert_array_equal(a, b)
        assert float(cpu.sum_abs(w)) == pytest.approx(float(ref.sum_abs(w)), rel=1e-13)
        for op, args in (("scale_", (0.37,)), ("clip_", (-0.5, 0.4))):
            a, b = g.copy(), g.copy()
            getattr(cpu, op)(a, *args)
            getattr(ref, op)(b, *args)
            np.testing.assert_array_equal(a, b)
        norm_c = float(cpu.global_norm([w, g]))
        norm_r = float(ref.global_norm([w, g]))
        assert norm_c == pytest.approx(norm_r, rel=1e-13)


# ------------------------------------------------------------------------------- clipping
torch = pytest.importorskip("torch")


def _params(ops, grads):
    return [
        Parameter(f"p{i}", ops.zeros(g.shape, g.dtype), ops.asarray(g.copy()))
        for i, g in enumerate(grads)
    ]


@pytest.mark.parametrize("max_norm", [0.5, 3.0, 1e3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_clip_norm_matches_torch(backend, max_norm, dtype):
    ops = mlpx.get_backend(backend)
    rng = np.random.default_rng(1)
    grads = [rng.normal(size=s).astype(dtype) for s in [(6, 4), (4,), (4, 2)]]
    params = _params(ops, grads)
    norm = GradientClipper(clip_norm=max_norm)(ops, params)
    tps = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float64)) for g in grads]
    for p, g in zip(tps, grads, strict=True):
        p.grad = torch.from_numpy(g.astype(np.float64))
    total = torch.nn.utils.clip_grad_norm_(tps, max_norm)
    assert ops.to_float(norm) == pytest.approx(float(total), rel=1e-12)
    rtol = 1e-12 if dtype == np.float64 else 1e-6
    for p, tp in zip(params, tps, strict=True):
        np.testing.assert_allclose(ops.to_numpy(p.grad), tp.grad.numpy(), rtol=rtol)
    if max_norm > float(total):
        for p, g in zip(params, grads, strict=True):
            np.testing.assert_array_equal(ops.to_numpy(p.grad), g)  # untouched


def test_clip_value_matches_torch(backend):
    ops = mlpx.get_backend(backend)
    rng = np.random.default_rng(2)
    grads = [rng.normal(size=s) * 3 for s in [(5, 3), (3,)]]
    params = _params(ops, grads)
    GradientClipper(clip_value=1.5)(ops, params)
    for p, g in zip(params, grads, strict=True):
        t = torch.from_numpy(g.copy())
        tp = torch.nn.Parameter(torch.zeros_like(t))
        tp.grad = t
        torch.nn.utils.clip_grad_value_([tp], 1.5)
        np.testing.assert_array_equal(ops.to_numpy(p.grad), tp.grad.numpy())
        assert np.abs(ops.to_numpy(p.grad)).max() == 1.5


def test_fit_clips_and_records_pre_clip_grad_norm(backend):
    X, y = _data(5)
    model = _model(backend, kernel=regularizers.L2(0.1))
    w0 = model.get_weights()
    _, g = model.loss_and_grad(X, y, loss="cross_entropy")  # includes the penalty gradient
    full_norm = np.sqrt(sum((a**2).sum() for a in g))
    limit = full_norm / 4
    hist = model.fit(X, y, loss="cross_entropy", optimizer="sgd", lr=1.0, epochs=1,
                     batch_size=N, shuffle=False, verbose=0, clip_norm=limit)
    assert hist.grad_norm[0] == pytest.approx(full_norm, rel=1e-12)
    step = np.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(model.get_weights(), w0,
                                                               strict=True)))
    assert step == pytest.approx(limit, rel=1e-5)
    # clip_value: every weight moves by at most lr * v
    model.set_weights(w0)
    model.fit(X, y, epochs=1, batch_size=N, shuffle=False, verbose=0, clip_value=1e-3)
    moved = max(np.abs(a - b).max() for a, b in zip(model.get_weights(), w0, strict=True))
    assert moved == pytest.approx(1e-3, rel=1e-9)


def test_grad_norm_is_the_last_steps_pre_clip_norm(backend):
    """Replaying an unshuffled SGD epoch by hand: History's grad_norm is the global norm of
    the last batch's gradients (penalty included), before clip_value clamps them."""
    X, y = _data(6)
    model = _model(backend, kernel=regularizers.L2(0.2))
    replay = _model(backend, kernel=regularizers.L2(0.2))
    replay.set_weights(model.get_weights())
    hist = model.fit(X, y, loss="cross_entropy", optimizer="sgd", lr=0.05, epochs=1,
                     batch_size=8, shuffle=False, verbose=0, clip_value=0.05)
    for start in (0, 8, 16):
        _, g = replay.loss_and_grad(X[start:start + 8], y[start:start + 8], loss="cross_entropy")
        norm = np.sqrt(sum((a**2).sum() for a in g))
        if start < 16:
            ws = replay.get_weights()
            replay.set_weights([w - 0.05 * np.clip(d, -0.05, 0.05) for w, d in zip(ws, g,
                                                                                    strict=True)])
    assert norm > 0.05  # clipping did change this step's gradients
    assert hist.grad_norm[0] == pytest.approx(norm, rel=1e-10)
    hist = model.fit(X, y, epochs=3, batch_size=8, verbose=0)
    assert len(hist.grad_norm) == 3 and all(v > 0 for v in hist.grad_norm)


@pytest.mark.parametrize("kw, message", [({"clip_norm": 0}, "clip_norm must be a positive"),
                                         ({"clip_value": "big"}, "clip_value must be")])
def test_bad_clip_arguments(kw, message):
    X, y = _data()
    model = _model("cpu")
    with pytest.raises((ValueError, TypeError), match=message):
        model.fit(X, y, loss="cross_entropy", verbose=0, **kw)
