"""Cross-backend parity: the same network, weights and batch give the same numbers everywhere.

Parametrised over every backend (`backend` fixture: cpu, and cuda, which shows as skipped with
the reason where there is no GPU). Each tensor is compared element by element relative to its
largest magnitude:

- float64 against the float64 reference backend: within 1e-10;
- float32 against the float64 reference: within C32 * K * eps32, K the largest GEMM inner
  dimension of the network (a feature width, or the batch size for the weight gradients),
  eps32 = 2**-23. The bound is the classical error growth of a length-K dot product; C32 = 4
  leaves room for the two GEMMs in series per layer (measured on the cpu backend: the worst
  observed ratio over these cases is below 0.2 K eps32, so the bound is not tight, but a
  wrong kernel exceeds it by orders of magnitude);
- every fused kernel on its own against the reference op: within 1e-12 (float64: only the
  platform's exp/log/erf differ, by ulps) or 2 eps32 (float32: values computed in float64 and
  rounded once, so at most one rounding apart).
"""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx import activations

EPS32 = float(np.finfo(np.float32).eps)
C32 = 4.0
TOL64 = 1e-10

SIZES = [20, 32, 24, 5]  # input, hidden, hidden, output
BATCH = 64
K_MAX = max(BATCH, *SIZES)
TOL32 = C32 * K_MAX * EPS32

ACTS = ["relu", "tanh", "sigmoid", "gelu", "silu", "softplus", activations.ELU(0.5),
        activations.LeakyReLU(0.1), activations.PReLU(0.2)]
LOSSES = ["cross_entropy", "bce", "mse", "l1"]


def _close(got, want, tol, what):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, what
    scale = max(float(np.max(np.abs(want))), np.finfo(np.float64).tiny)
    err = float(np.max(np.abs(got - want))) / scale
    assert err <= tol, f"{what}: max error {err:.3g} x max|value| exceeds {tol:.3g}"
    return err


def _problem(loss, seed=7):
    """Inputs, targets and float32-representable float64 weights (so every dtype starts equal)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((BATCH, SIZES[0])).astype(np.float32).astype(np.float64)
    c = SIZES[-1]
    if loss == "cross_entropy":
        y = rng.integers(0, c, BATCH)
    elif loss == "bce":
        y = (rng.random((BATCH, c)) > 0.5).astype(np.float64)
    else:
        y = rng.standard_normal((BATCH, c)).astype(np.float32).astype(np.float64)
    return X, y


def _run(backend, dtype, act, loss, X, y, weights=None):
    model = mlpx.MLP(SIZES, activation=act, backend=backend, dtype=dtype, seed=11)
    if weights is not None:
        model.set_weights(weights)
    out = model.predict(X)
    value, grads = model.loss_and_grad(X, y, loss=loss)
    return model, out, value, grads


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("act", ACTS, ids=str)
def test_network_parity(backend, act, loss):
    X, y = _problem(loss)
    ref_model, *_ = _run("reference", "float64", act, loss, X, y)
    weights = [w.astype(np.float32).astype(np.float64) for w in ref_model.get_weights()]
    _, out_r, loss_r, grads_r = _run("reference", "float64", act, loss, X, y, weights)

    # float64: agrees with the reference to 1e-10 of each tensor's largest magnitude
    _, out64, loss64, grads64 = _run(backend, "float64", act, loss, X, y, weights)
    _close(out64, out_r, TOL64, "float64 outputs")
    _close(loss64, loss_r, TOL64, "float64 loss")
    for i, (g, gr) in enumerate(zip(grads64, grads_r, strict=True)):
        _close(g, gr, TOL64, f"float64 gradient {i}")

    # float32: within C32 * K * eps32 of the float64 reference
    _, out32, loss32, grads32 = _run(backend, "float32", act, loss, X, y, weights)
    _close(out32, out_r, TOL32, "float32 outputs")
    _close(loss32, loss_r, TOL32, "float32 loss")
    for i, (g, gr) in enumerate(zip(grads32, grads_r, strict=True)):
        assert g.dtype == np.float32
        _close(g, gr, TOL32, f"float32 gradient {i}")

    if backend != "cpu":  # and against the cpu backend, in the same dtype
        _, out_c, loss_c, grads_c = _run("cpu", "float32", act, loss, X, y, weights)
        _close(out32, out_c, 2 * TOL32, "float32 outputs vs cpu")
        _close(loss32, loss_c, 2 * TOL32, "float32 loss vs cpu")
        for i, (g, gc) in enumerate(zip(grads32, grads_c, strict=True)):
            _close(g, gc, 2 * TOL32, f"float32 gradient {i} vs cpu")


def test_float32_bound_is_not_vacuous():
    """The float32 run really differs from float64 (else the bound would test nothing), and a
    perturbation far below the kernels' job would still be caught."""
    X, y = _problem("cross_entropy")
    ref_model, *_ = _run("reference", "float64", "tanh", "cross_entropy", X, y)
    w = [a.astype(np.float32).astype(np.float64) for a in ref_model.get_weights()]
    _, out_r, _, grads_r = _run("reference", "float64", "tanh", "cross_entropy", X, y, w)
    _, out32, _, grads32 = _run("cpu", "float32", "tanh", "cross_entropy", X, y, w)
    errs = [_close(g, gr, TOL32, "gradient") for g, gr in zip(grads32, grads_r, strict=True)]
    assert max(errs) > 0.0
    assert max(errs) < 0.25 * TOL32  # documented: observed well inside the bound
    wrong = grads32[0] * (1 + 100 * TOL32)
    with pytest.raises(AssertionError):
        _close(wrong, grads_r[0], TOL32, "perturbed gradient")


# ------------------------------------------------------------------- op-level parity
def _tol(dtype):
    return 1e-12 if dtype == np.float64 else 2 * EPS32


def _arrays(rng, dtype, *shapes, scale=2.0):
    return [(rng.standard_normal(s) * scale).astype(dtype) for s in shapes]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize(
    "act", ["identity", "step", *ACTS[:-1], activations.PReLU(0.3)], ids=str
)
def test_activation_kernels_vs_reference(ops, reference, rng, act, dtype):
    act = activations.get(act)
    z0, b, dy = _arrays(rng, dtype, (129, 33), (33,), (129, 33))
    slopes = rng.uniform(0, 0.5, 33).astype(dtype) if act.has_parameters else None
    res = {}
    for name, o in (("ops", ops), ("ref", reference)):
        z, bb = o.asarray(z0.copy()), o.asarray(b)
        s = o.asarray(slopes) if slopes is not None else None
        y = o.empty(z.shape, dtype)
        o.bias_act(z, bb, act, out=y, slopes=s)
        out = [o.to_numpy(z), o.to_numpy(y)]
        if act.differentiable:
            d = o.empty(z.shape, dtype)
            if act.has_parameters:
                ds = o.empty((33,), dtype)
                o.prelu_backward(o.asarray(dy), z, s, d, ds)
                out.append(o.to_numpy(ds))
            else:
                o.act_backward(o.asarray(dy), z, y, act, out=d)
            out.append(o.to_numpy(d))
        res[name] = out
    for i, (got, want) in enumerate(zip(res["ops"], res["ref"], strict=True)):
        _close(got, want, _tol(dtype), f"{act.name} output {i}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("loss", ["softmax_cross_entropy", "bce_with_logits", "mse", "l1"])
def test_loss_kernels_vs_reference(ops, reference, rng, loss, dtype):
    (z,) = _arrays(rng, dtype, (257, 7), scale=4.0)
    if loss == "softmax_cross_entropy":
        t = rng.integers(0, 7, 257).astype(np.int64)
    elif loss == "bce_with_logits":
        t = rng.uniform(0, 1, (257, 7)).astype(dtype)
    else:
        (t,) = _arrays(rng, dtype, (257, 7))
    res = {}
    for name, o in (("ops", ops), ("ref", reference)):
        g = o.empty(z.shape, dtype)
        value = getattr(o, loss)(o.asarray(z), o.asarray(t), g)
        assert np.ndim(value) == 0  # a 0-d device value, not a host float
        res[name] = (o.to_float(value), o.to_numpy(g))
    _close(res["ops"][0], res["ref"][0], 1e-12, f"{loss} value")
    _close(res["ops"][1], res["ref"][1], _tol(dtype), f"{loss} gradient")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_optimiser_kernels_vs_reference(ops, reference, rng, dtype):
    shape = (65, 9)
    cases = [
        ("sgd_update", lambda p, g, s: (p, g, 0.05)),
        ("sgd_momentum_update", lambda p, g, s: (p, g, s[0], 0.1, 0.9, 0.1, True, 0.01)),
        ("adagrad_update", lambda p, g, s: (p, g, s[0], 0.1, 0.01, 1e-10)),
        ("rmsprop_update", lambda p, g, s: (p, g, s[0], s[1], s[2], 0.01, 0.99, 1e-8, 0.01,
                                            0.9, True)),
        ("adam_update", lambda p, g, s: (p, g, s[1], s[0], 1e-3, 0.9, 0.999, 1e-8, 0.01, 5,
                                         True)),
        ("add_penalty_grad", lambda p, g, s: (p, g, 0.01, 0.02)),
        ("scale_", lambda p, g, s: (p, 0.37)),
        ("clip_", lambda p, g, s: (p, -0.5, 0.5)),
    ]
    ran = 0
    for op, make in cases:
        if not hasattr(reference, op):
            continue
        p0, g0 = _arrays(rng, dtype, shape, shape, scale=1.0)
        s1, s2, s3 = _arrays(rng, dtype, shape, shape, shape, scale=1.0)
        # state: a positive second moment that exceeds the squared first moment (RMSProp)
        s0 = [np.abs(s1) + dtype(1.0), s2 * dtype(0.1), np.abs(s3)]
        res = {}
        for name, o in (("ops", ops), ("ref", reference)):
            p, g, s = o.asarray(p0.copy()), o.asarray(g0.copy()), [o.asarray(a.copy()) for a in s0]
            getattr(o, op)(*make(p, g, s))
            res[name] = [o.to_numpy(a) for a in (p, g, *s)]
        for i, (got, want) in enumerate(zip(res["ops"], res["ref"], strict=True)):
            _close(got, want, _tol(dtype), f"{op} array {i}")
        ran += 1
    assert ran >= 1


@pytest.mark.parametrize("trans", [(False, False), (True, False), (False, True)])
def test_gemm_and_bias_gradient_vs_reference(ops, reference, rng, trans):
    ta, tb = trans
    a, b = _arrays(rng, np.float64, (40, 30) if not ta else (30, 40), (30, 20) if not tb
                   else (20, 30))
    x = rng.standard_normal((50, 7))
    outs = {}
    for name, o in (("ops", ops), ("ref", reference)):
        out = o.empty((40, 20), np.float64)
        o.matmul(o.asarray(a), o.asarray(b), out=out, trans_a=ta, trans_b=tb)
        s = o.empty((7,), np.float64)
        o.sum_rows(o.asarray(x), out=s)
        outs[name] = (o.to_numpy(out), o.to_numpy(s))
    _close(outs["ops"][0], outs["ref"][0], 1e-13, "matmul")
    _close(outs["ops"][1], outs["ref"][1], 1e-13, "sum_rows")
