"""Training step, inference and the GEMM-only bound, per backend and batch size.

Each benchmark's `extra_info` carries samples/s and GFLOP/s so that
`pytest benchmarks --benchmark-only --benchmark-json=out.json` keeps them.
"""

from __future__ import annotations

import numpy as np

import mlpx
from mlpx.commands.bench_worker import step_flops, step_gemms

STEPS = 4  # steps per timed fit() call: the per-epoch work is amortised as in real training


def _data(n: int, sizes: list[int], ops):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], size=n)
    return ops.asarray(X), ops.asarray(y)


def _info(benchmark, batch: int, flops: int, per_call: int = 1) -> None:
    stats = getattr(benchmark, "stats", None)
    if stats:  # absent with --benchmark-disable
        t = stats.stats.median / per_call
        benchmark.extra_info.update(samples_per_s=batch / t, gflops=flops / t / 1e9)


def test_train_step(benchmark, backend, batch, sizes):
    ops = mlpx.get_backend(backend)
    X, y = _data(batch * STEPS, sizes, ops)
    model = mlpx.MLP(sizes, activation="relu", backend=backend, seed=0)
    model.fit(X, y, loss="cross_entropy", optimizer="sgd", lr=0.01, epochs=1,
              batch_size=batch, verbose=0)

    def epoch():
        model.fit(X, y, epochs=1, batch_size=batch, verbose=0)
        ops.synchronize()

    benchmark.pedantic(epoch, rounds=5, warmup_rounds=1)
    _info(benchmark, batch * STEPS, step_flops(sizes, batch)["train"] * STEPS, 1)
    assert np.isfinite(model.history_.loss[-1])


def test_inference(benchmark, backend, batch, sizes):
    ops = mlpx.get_backend(backend)
    X, _ = _data(batch, sizes, ops)
    model = mlpx.MLP(sizes, activation="relu", backend=backend, seed=0)

    def forward():
        out = model.forward(X)
        ops.synchronize()
        return out

    out = benchmark(forward)
    _info(benchmark, batch, step_flops(sizes, batch)["infer"])
    assert out.shape == (batch, sizes[-1])


def test_gemm_only(benchmark, backend, batch, sizes):
    """The step's GEMMs alone on preallocated arrays: the bound a framework can reach."""
    ops = mlpx.get_backend(backend)
    rng = np.random.default_rng(0)
    calls = []
    for _, (sa, sb, so), ta, tb in step_gemms(sizes, batch):
        a = ops.asarray(rng.standard_normal(sa, dtype=np.float32))
        b = ops.asarray(rng.standard_normal(sb, dtype=np.float32))
        calls.append((a, b, ops.empty(so, np.float32), ta, tb))

    def gemms():
        for a, b, o, ta, tb in calls:
            ops.matmul(a, b, out=o, trans_a=ta, trans_b=tb)
        ops.synchronize()

    benchmark(gemms)
    _info(benchmark, batch, step_flops(sizes, batch)["train"])
    a, b, o, ta, tb = calls[0]
    np.testing.assert_allclose(ops.to_numpy(o), ops.to_numpy(a) @ ops.to_numpy(b), rtol=1e-4,
                               atol=1e-3)
