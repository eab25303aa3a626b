"""One optimiser step over every parameter of an MLP, per optimiser and backend, plus the
global gradient norm that clipping needs. The `reference` backend (plain NumPy expressions)
is the baseline the fused Numba kernels of `cpu` are measured against.

Full sizes: the 784-256-128-10 MLP (235,146 parameters); smoke sizes (`--benchmark-disable`):
64-128-10. Every case checks the parameters stay finite.
"""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.clipping import GradientClipper

from .conftest import full_run

OPTIMIZERS = ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam", "adamw"]


@pytest.fixture
def opt_sizes(request) -> list[int]:
    return [784, 256, 128, 10] if full_run(request.config) else [64, 128, 10]


def _params(sizes: list[int], backend: str):
    """A model's parameters with the gradients of a real backward pass."""
    model = mlpx.MLP(sizes, backend=backend, seed=0)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], size=64)
    model.loss_and_grad(X, y, loss="cross_entropy")
    return model.ops, model.parameters()


@pytest.mark.parametrize("backend_name", ["cpu", "reference"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_step(benchmark, opt_sizes, name, backend_name):
    ops, params = _params(opt_sizes, backend_name)
    opt = mlpx.optim.get(name, lr=1e-6)  # tiny steps: finite however often it runs
    opt.bind(params, ops)
    benchmark(opt.step)
    assert all(np.isfinite(ops.to_numpy(p.data)).all() for p in params)


@pytest.mark.parametrize("backend_name", ["cpu", "reference"])
def test_global_grad_norm(benchmark, opt_sizes, backend_name):
    ops, params = _params(opt_sizes, backend_name)
    clip = GradientClipper(clip_norm=1e9)
    norm = benchmark(clip, ops, params)
    expected = np.sqrt(sum((ops.to_numpy(p.grad).astype(np.float64) ** 2).sum() for p in params))
    assert ops.to_float(norm) == pytest.approx(expected, rel=1e-12)
