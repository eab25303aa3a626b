"""Optimisers: each step against a hand-computed NumPy step and against torch.optim on the
same gradients; Numba kernels against the reference backend; state_dict round trips."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx import optim
from mlpx.layers.base import Parameter

torch = pytest.importorskip("torch")

SHAPES = [(7, 5), (5,)]
STEPS = 6

# (mlpx class, kwargs, torch class, torch kwargs); the kwargs are PyTorch's own names
CASES = {
    "sgd": (optim.SGD, {"lr": 0.1}),
    "sgd_wd": (optim.SGD, {"lr": 0.1, "weight_decay": 0.05}),
    "momentum": (optim.SGD, {"lr": 0.05, "momentum": 0.9}),
    "momentum_dampening_wd": (
        optim.SGD, {"lr": 0.05, "momentum": 0.8, "dampening": 0.3, "weight_decay": 0.01}
    ),
    "nesterov": (optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.02}),
    "adagrad": (optim.Adagrad, {"lr": 0.1}),
    "adagrad_all": (
        optim.Adagrad,
        {"lr": 0.1, "lr_decay": 0.05, "weight_decay": 0.01, "initial_accumulator_value": 0.2,
         "eps": 1e-6},
    ),
    "rmsprop": (optim.RMSprop, {"lr": 0.01}),
    "rmsprop_centered_momentum": (
        optim.RMSprop,
        {"lr": 0.01, "alpha": 0.9, "eps": 1e-6, "weight_decay": 0.01, "momentum": 0.7,
         "centered": True},
    ),
    "rmsprop_momentum": (optim.RMSprop, {"lr": 0.01, "momentum": 0.5}),
    "rmsprop_centered": (optim.RMSprop, {"lr": 0.01, "centered": True}),
    "adam": (optim.Adam, {"lr": 0.01}),
    "adam_l2": (optim.Adam, {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.1}),
    "adamw": (optim.AdamW, {"lr": 0.01}),
    "adamw_wd": (optim.AdamW, {"lr": 0.01, "betas": (0.85, 0.995), "weight_decay": 0.3}),
}


def _problem(dtype, seed=0):
    rng = np.random.default_rng(seed)
    w0 = [rng.normal(size=s).astype(dtype) for s in SHAPES]
    grads = [[rng.normal(size=s).astype(dtype) for s in SHAPES] for _ in range(STEPS)]
    return w0, grads


def _run_mlpx(ops, cls, kwargs, w0, grads):
    params = [
        Parameter(f"p{i}", ops.asarray(w.copy()), ops.zeros(w.shape, w.dtype))
        for i, w in enumerate(w0)
    ]
    opt = cls(**kwargs)
    opt.bind(params, ops)
    traj = []
    for step_grads in grads:
        for p, g in zip(params, step_grads, strict=True):
            ops.copy_into(p.grad, ops.asarray(g))
        opt.step()
        traj.append([ops.to_numpy(p.data).copy() for p in params])
    return traj, opt


def _run_torch(cls, kwargs, w0, grads):
    tparams = [torch.nn.Parameter(torch.from_numpy(w.copy())) for w in w0]
    topt = getattr(torch.optim, cls.torch_name)(tparams, **kwargs)  # the declared twin
    traj = []
    for step_grads in grads:
        for p, g in zip(tparams, step_grads, strict=True):
            p.grad = torch.from_numpy(g.copy())
        topt.step()
        traj.append([p.detach().numpy().copy() for p in tparams])
    return traj


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_torch(backend, case, dtype):
    cls, kwargs = CASES[case]
    ops = mlpx.get_backend(backend)
    w0, grads = _problem(dtype)
    ours, _ = _run_mlpx(ops, cls, kwargs, w0, grads)
    theirs = _run_torch(cls, kwargs, w0, grads)
    # float64: only the order of a few roundings differs; float32: torch rounds every
    # intermediate to float32, mlpx rounds once per stored value
    rtol, atol = (1e-12, 1e-14) if dtype == np.float64 else (2e-5, 2e-6)
    for step, (a_step, b_step) in enumerate(zip(ours, theirs, strict=True)):
        for a, b in zip(a_step, b_step, strict=True):
            assert a.dtype == dtype
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"step {step + 1}")
    # the run must actually move the weights
    assert not np.allclose(ours[-1][0], w0[0])


def _hand_steps(case, w, grads):
    """The textbook formulas, written out independently of mlpx, in float64."""
    cls, kw = CASES[case]
    w = w.astype(np.float64)
    lr = kw["lr"]
    wd = kw.get("weight_decay", 0.01 if cls is optim.AdamW else 0.0)
    s1 = np.zeros_like(w)
    s2 = np.zeros_like(w)
    s3 = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        g = g.astype(np.float64)
        if cls is optim.SGD:
            g = g + wd * w
            mu, damp = kw.get("momentum", 0.0), kw.get("dampening", 0.0)
            if mu:
                s1 = g.copy() if t == 1 else mu * s1 + (1 - damp) * g
                g = g + mu * s1 if kw.get("nesterov") else s1
            w = w - lr * g
        elif cls is optim.Adagrad:
            if t == 1:
                s1 = s1 + kw.get("initial_accumulator_value", 0.0)
            g = g + wd * w
            s1 = s1 + g**2
            clr = lr / (1 + (t - 1) * kw.get("lr_decay", 0.0))
            w = w - clr * g / (np.sqrt(s1) + kw.get("eps", 1e-10))
        elif cls is optim.RMSprop:
            a, eps, mu = kw.get("alpha", 0.99), kw.get("eps", 1e-8), kw.get("momentum", 0.0)
            g = g + wd * w
            s1 = a * s1 + (1 - a) * g**2
            if kw.get("centered"):
                s2 = a * s2 + (1 - a) * g
                avg = np.sqrt(s1 - s2**2) + eps
            else:
                avg = np.sqrt(s1) + eps
            if mu:
                s3 = mu * s3 + g / avg
                w = w - lr * s3
            else:
                w = w - lr * g / avg
        else:  # Adam / AdamW
            b1, b2 = kw.get("betas", (0.9, 0.999))
            eps = kw.get("eps", 1e-8)
            if cls is optim.AdamW:
                w = w - lr * wd * w
            else:
                g = g + wd * w
            s1 = b1 * s1 + (1 - b1) * g
            s2 = b2 * s2 + (1 - b2) * g**2
            mhat = s1 / (1 - b1**t)
            vhat = s2 / (1 - b2**t)
            w = w - lr * mhat / (np.sqrt(vhat) + eps)
    return w


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_hand_computed_steps(backend, case):
    cls, kwargs = CASES[case]
    ops = mlpx.get_backend(backend)
    w0, grads = _problem(np.float64, seed=3)
    ours, _ = _run_mlpx(ops, cls, kwargs, w0, grads[:3])
    for i in range(len(SHAPES)):
        expected = _hand_steps(case, w0[i], [g[i] for g in grads[:3]])
        np.testing.assert_allclose(ours[-1][i], expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernels_match_reference_backend(case, dtype):
    """The cpu backend's Numba kernels give the reference backend's numbers bit for bit."""
    cls, kwargs = CASES[case]
    w0, grads = _problem(dtype, seed=7)
    fast, opt_fast = _run_mlpx(mlpx.get_backend("cpu"), cls, kwargs, w0, grads)
    ref, opt_ref = _run_mlpx(mlpx.get_backend("reference"), cls, kwargs, w0, grads)
    for a_step, b_step in zip(fast, ref, strict=True):
        for a, b in zip(a_step, b_step, strict=True):
            np.testing.assert_array_equal(a, b)
    for sa, sb in zip(opt_fast.state, opt_ref.state, strict=True):
        assert set(sa) == set(sb)
        for k in sa:
            np.testing.assert_array_equal(sa[k], sb[k])


@pytest.mark.parametrize("case", ["momentum_dampening_wd", "adagrad_all",
                                  "rmsprop_centered_momentum", "adam_l2", "adamw_wd"])
def test_state_dict_round_trip(backend, case):
    """Stopping after 3 steps, restoring into a fresh optimiser and continuing gives the
    same weights as an uninterrupted run."""
    cls, kwargs = CASES[case]
    ops = mlpx.get_backend(backend)
    w0, grads = _problem(np.float32, seed=5)
    full, _ = _run_mlpx(ops, cls, kwargs, w0, grads)
    part, opt = _run_mlpx(ops, cls, kwargs, w0, grads[:3])
    sd = opt.state_dict()
    assert sd["step_count"] == 3 and sd["config"]["name"] == cls.name
    assert all(isinstance(v, np.ndarray) for s in sd["state"] for v in s.values())
    resumed = optim.from_config(sd["config"])
    params = [
        Parameter(f"p{i}", ops.asarray(w), ops.zeros(w.shape, w.dtype))
        for i, w in enumerate(part[-1])
    ]
    resumed.bind(params, ops)
    resumed.load_state_dict(sd)
    for step_grads in grads[3:]:
        for p, g in zip(params, step_grads, strict=True):
            ops.copy_into(p.grad, ops.asarray(g))
        resumed.step()
    for p, w in zip(params, full[-1], strict=True):
        np.testing.assert_array_equal(ops.to_numpy(p.data), w)


def test_load_state_dict_rejects_mismatch():
    ops = mlpx.get_backend("cpu")
    w0, grads = _problem(np.float64)
    _, adam = _run_mlpx(ops, optim.Adam, {"lr": 0.01}, w0, grads[:1])
    _, sgd = _run_mlpx(ops, optim.SGD, {"lr": 0.1, "momentum": 0.9}, w0, grads[:1])
    with pytest.raises(ValueError, match="cannot load 'adam'"):
        sgd.load_state_dict(adam.state_dict())
    plain = optim.SGD(lr=0.1)
    plain.bind(sgd.params, ops)
    with pytest.raises(ValueError, match="momentum_buffer"):
        plain.load_state_dict(sgd.state_dict())
    bad = adam.state_dict()
    bad["state"][0]["exp_avg"] = np.zeros((2, 2))
    before = ops.to_numpy(adam.state[0]["exp_avg"]).copy()
    with pytest.raises(ValueError, match="shape"):
        adam.load_state_dict(bad)
    np.testing.assert_array_equal(adam.state[0]["exp_avg"], before)  # nothing written


def test_names_and_presets():
    assert {"sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"} <= set(
        optim.names()
    )
    nest = optim.get("nesterov", lr=0.05)
    assert isinstance(nest, optim.SGD) and nest.nesterov and nest.momentum == 0.9
    assert nest.lr == 0.05
    assert isinstance(optim.get("AdamW"), optim.AdamW) and optim.get("adamw").weight_decay == 0.01
    assert optim.get("adam").lr == 1e-3
    for name in ("sgd", "adagrad", "rmsprop", "adam", "adamw"):
        opt = optim.get(name, lr=0.2)
        again = optim.from_config(opt.get_config())
        assert type(again) is type(opt) and again.get_config() == opt.get_config()
    with pytest.raises(ValueError, match="unknown optimizer 'adamax'.*adam"):
        optim.get("adamax")


def test_an_optimiser_class_instead_of_an_object_says_what_to_pass():
    """optimizer=mlpx.optim.Adam (no call) is an easy slip; the message shows both fixes."""
    with pytest.raises(TypeError, match=r"optimizer=Adam is a class; pass an object, "
                                        r"optimizer=Adam\(lr=...\), or its name, "
                                        r"optimizer='adam'"):
        optim.get(optim.Adam)
    model = mlpx.MLP([2, 2], seed=0)
    with pytest.raises(TypeError, match="optimizer=AdamW is a class"):
        model.fit(np.zeros((4, 2)), np.zeros(4, int), loss="cross_entropy",
                  optimizer=optim.AdamW, verbose=0)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: optim.SGD(lr=0.1, nesterov=True), "Nesterov momentum requires momentum > 0"),
        (lambda: optim.SGD(lr=0.1, momentum=-0.5), "momentum must be a finite number >= 0"),
        (lambda: optim.Adam(betas=(0.9, 1.0)), r"betas\[1\] must be .* < 1"),
        (lambda: optim.Adam(betas=0.9), "betas must be a pair"),
        (lambda: optim.RMSprop(alpha=1.5), "alpha must be"),
        (lambda: optim.Adagrad(eps="small"), "eps must be a number"),
        (lambda: optim.AdamW(lr=0.0), "learning rate must be a positive"),
    ],
)
def test_bad_hyperparameters_are_explained(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


def test_fit_by_name_and_object(backend):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 6)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(np.int64)
    model = mlpx.MLP([6, 16, 2], backend=backend, seed=0)
    hist = model.fit(X, y, loss="cross_entropy", optimizer="adam", lr=0.01, epochs=8,
                     batch_size=32, verbose=0)
    assert isinstance(model.optimizer_, optim.Adam) and model.optimizer_.lr == 0.01
    assert model.optimizer_.step_count == 8 * 8
    assert hist.loss[-1] < 0.5 * hist.loss[0]
    opt = optim.SGD(lr=0.05, momentum=0.9, nesterov=True)
    with pytest.raises(ValueError, match="either to the optimiser object or as lr="):
        model.fit(X, y, optimizer=opt, lr=0.1, verbose=0)
    model.fit(X, y, optimizer=opt, epochs=1, verbose=0)
    assert model.optimizer_ is opt
    # a later fit(lr=...) keeps the optimiser's kind and hyperparameters
    model.fit(X, y, lr=0.01, epochs=1, verbose=0)
    kept = model.optimizer_
    assert isinstance(kept, optim.SGD) and kept.nesterov and kept.momentum == 0.9
    assert kept.lr == 0.01
