"""Losses: values and gradients against PyTorch (mean reduction) and finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from _helpers import central_differences

import mlpx
from mlpx import losses

torch = pytest.importorskip("torch", reason="PyTorch is the independent reference here")
F = torch.nn.functional

N, C = 7, 4


def _data(name: str, rng, scale: float = 2.0):
    """(network output, target as passed by the user) for each loss."""
    out = rng.normal(scale=scale, size=(N, C))
    if name in ("mse", "l1"):
        t = out + rng.choice([-1, 1], size=out.shape) * rng.uniform(0.2, 1.0, size=out.shape)
    elif name == "cross_entropy":
        t = rng.integers(0, C, size=N)
    elif name == "cross_entropy_soft":
        t = rng.dirichlet(np.ones(C), size=N)
    elif name == "bce":
        t = rng.integers(0, 2, size=(N, C)).astype(np.float64)  # multi-label
    elif name == "nll":
        out = torch.log_softmax(torch.tensor(out), dim=1).numpy()
        t = rng.integers(0, C, size=N)
    return out, t


def _torch_loss(name: str, out: torch.Tensor, t: np.ndarray) -> torch.Tensor:
    if name == "mse":
        return F.mse_loss(out, torch.tensor(t, dtype=out.dtype))
    if name == "l1":
        return F.l1_loss(out, torch.tensor(t, dtype=out.dtype))
    if name == "cross_entropy":
        return F.cross_entropy(out, torch.tensor(t))
    if name == "cross_entropy_soft":
        return F.cross_entropy(out, torch.tensor(t, dtype=out.dtype))
    if name == "bce":
        return F.binary_cross_entropy_with_logits(out, torch.tensor(t, dtype=out.dtype))
    if name == "nll":
        return F.nll_loss(out, torch.tensor(t))
    raise AssertionError(name)


def _ours(ops, name: str, out: np.ndarray, t: np.ndarray, dtype):
    loss = losses.get("cross_entropy" if name == "cross_entropy_soft" else name)
    target = ops.asarray(loss.prepare_target(t, C, dtype))
    outd = ops.asarray(out, dtype=dtype)
    grad = ops.empty(out.shape, dtype)
    value = ops.to_float(loss(ops, outd, target, grad))
    return value, ops.to_numpy(grad)


def _reference(name, out, t, dtype=np.float64):
    x = torch.tensor(out.astype(dtype), dtype=torch.float64, requires_grad=True)
    v = _torch_loss(name, x, t)
    v.backward()
    return float(v.detach()), x.grad.numpy()


NAMES = ["mse", "l1", "cross_entropy", "cross_entropy_soft", "bce", "nll"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", NAMES)
def test_loss_and_gradient_match_torch(ops, name, dtype, rng):
    out, t = _data(name, rng)
    value, grad = _ours(ops, name, out, t, dtype)
    tv, tg = _reference(name, out, t, dtype)  # torch float64 on the same rounded inputs
    tol = 1e-13 if dtype == np.float64 else 1e-6
    assert value == pytest.approx(tv, rel=tol, abs=tol)
    np.testing.assert_allclose(grad, tg, rtol=tol * 10, atol=tol * np.abs(tg).max())


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_central_differences(ops, name, rng):
    out, t = _data(name, rng)
    _, grad = _ours(ops, name, out, t, np.float64)
    fd = central_differences(lambda o: _ours(ops, name, o, t, np.float64)[0], out.copy())
    assert np.abs(grad - fd).max() <= 1e-7 * np.abs(fd).max()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name", ["cross_entropy", "cross_entropy_soft", "bce"])
def test_huge_logits_are_stable(ops, name, dtype, rng):
    """Logits of +-1e4 overflow a naive exp(); log-sum-exp and log1p(exp(-|x|)) do not."""
    out, t = _data(name, rng)
    out = np.sign(out) * 1e4 + out  # every logit of magnitude ~1e4
    value, grad = _ours(ops, name, out, t, dtype)
    tv, tg = _reference(name, out, t, dtype)
    assert np.isfinite(value) and np.isfinite(grad).all()
    assert value == pytest.approx(tv, rel=1e-6)
    np.testing.assert_allclose(grad, tg, rtol=1e-6, atol=1e-7 * np.abs(tg).max())


def test_perfect_prediction_gives_zero_cross_entropy(ops):
    out = np.array([[1e4, -1e4], [-1e4, 1e4]])
    value, grad = _ours(ops, "cross_entropy", out, np.array([0, 1]), np.float64)
    assert value == 0.0 and np.abs(grad).max() == 0.0


def test_mse_accepts_1d_target_for_single_output():
    loss = losses.get("mse")
    y = loss.prepare_target(np.arange(3.0), 1, np.float32)
    assert y.shape == (3, 1) and y.dtype == np.float32


def test_target_validation_messages():
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        losses.get("cross_entropy").prepare_target(np.array([0, 4]), 4, np.float32)
    with pytest.raises(ValueError, match="integer class labels"):
        losses.get("cross_entropy").prepare_target(np.array([0.5, 1.0]), 4, np.float32)
    with pytest.raises(ValueError, match="at least 2 outputs"):
        losses.get("cross_entropy").prepare_target(np.array([0, 1]), 1, np.float32)
    # labels as a (n, 1) column: the message says how to fix it
    for name in ("cross_entropy", "nll"):
        with pytest.raises(ValueError, match=r"got \(2, 1\); for labels in a column pass y.ravel"):
            losses.get(name).prepare_target(np.array([[0], [2]]), 3, np.float32)
    with pytest.raises(ValueError, match=r"bce targets must lie in \[0, 1\]"):
        losses.get("bce").prepare_target(np.array([[2.0]]), 1, np.float32)
    with pytest.raises(ValueError, match="shape"):
        losses.get("mse").prepare_target(np.zeros((3, 2)), 3, np.float32)
    with pytest.raises(ValueError, match="unknown loss 'hinge'.*valid names.*cross_entropy"):
        losses.get("hinge")
    assert isinstance(losses.get("categorical_crossentropy"), losses.CrossEntropyLoss)
    assert mlpx.losses.names() == ["bce", "cross_entropy", "l1", "mse", "nll"]



def test_text_labels_say_how_to_encode_them():
    """String class labels are the commonest first mistake: the message names the fix."""
    with pytest.raises(TypeError, match=r"dtype <U3; encode class labels as integers.*"
                                        r"np.unique\(y, return_inverse=True\).*MLPClassifier"):
        losses.get("cross_entropy").prepare_target(np.array(["cat", "dog"]), 2, np.float32)

def test_every_builtin_loss_matches_its_declared_torch_twin(rng):
    torch = pytest.importorskip("torch")
    ops = mlpx.get_backend("reference")
    out = rng.standard_normal((12, 4))
    for cls in losses.builtins():
        loss = cls()
        name, kwargs = loss.torch_module()
        if loss.name in ("cross_entropy", "nll"):
            y = rng.integers(0, 4, 12)
        elif loss.name == "bce":
            y = rng.integers(0, 2, (12, 4)).astype(np.float64)
        else:
            y = rng.standard_normal((12, 4))
        o = out if loss.expects != "log_probs" else out - np.log(np.exp(out).sum(1, keepdims=True))
        target = loss.prepare_target(y, 4, np.float64)
        grad = np.empty_like(o)
        value = float(loss(ops, o, target, grad))
        t_out = torch.tensor(o, requires_grad=True)
        t_val = getattr(torch.nn, name)(**kwargs)(t_out, torch.as_tensor(target))
        t_val.backward()
        assert value == pytest.approx(float(t_val.detach()), rel=1e-12), loss.name
        np.testing.assert_allclose(grad, t_out.grad.numpy(), rtol=1e-10, atol=1e-15)
