"""The fixed cost of a `fit` call: everything before the first step (argument checks, the
finite-input check, the unscaled-input check on a fixed-size sample, planning), timed as
`fit(epochs=0)` on 16384x784 float32 inputs.

Target (2 threads, float32, a quiet x86-64 machine): at most 5 ms per call, both on an array
already passed to `fit` (mlpx.array_memo) and on the first call on an array, which reads every
value once (mlpx.backends.scan_kernels: the finite-input check and the unscaled-input
statistics in one pass, shared between the threads). Full sizes with
`--benchmark-only`; the smoke run (`--benchmark-disable`) uses 1024x64 and checks nothing
about time.
"""

from __future__ import annotations

import numpy as np

import mlpx

from .conftest import full_run

TARGET_S = 5e-3


def _model_and_data(request):
    full = full_run(request.config)
    rows, cols = (16384, 784) if full else (1024, 64)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((rows, cols), dtype=np.float32)
    y = rng.integers(0, 10, rows)
    model = mlpx.MLP([cols, 1024, 1024, 10], seed=0)
    model.fit(X[:64], y[:64], loss="cross_entropy", epochs=1, verbose=0)  # compiled, built
    return full, model, X, y


def test_fit_setup_again(benchmark, request):
    """A later fit on the same array (one call per epoch, partial_fit): the target."""
    full, model, X, y = _model_and_data(request)
    benchmark(lambda: model.fit(X, y, epochs=0, batch_size=1024, verbose=0))
    if full and benchmark.stats is not None:
        assert benchmark.stats.stats.min <= TARGET_S, (
            f"fit set-up took {benchmark.stats.stats.min * 1e3:.1f} ms, target "
            f"{TARGET_S * 1e3:.0f} ms")


def test_fit_setup_first_call(benchmark, request):
    """The first fit on an array: every value is read once (the finite-input check)."""
    full, model, X, y = _model_and_data(request)

    def fresh():
        return (X.copy(), y), {}

    benchmark.pedantic(lambda a, b: model.fit(a, b, epochs=0, batch_size=1024, verbose=0),
                       setup=fresh, rounds=10)
    if full and benchmark.stats is not None:
        assert benchmark.stats.stats.min <= TARGET_S, (
            f"first fit set-up took {benchmark.stats.stats.min * 1e3:.1f} ms, target "
            f"{TARGET_S * 1e3:.0f} ms")
