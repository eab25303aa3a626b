"""Sizes of the benchmark suite.

`pytest benchmarks --benchmark-only` measures the default model (784-1024-1024-10) at batch
sizes 256..16384 (GPU: up to 65536). With `--benchmark-disable` (the smoke run of
`make test`) every case runs once on a small model, so the suite cannot rot and stays fast;
MLPX_BENCH_FULL=1 forces the full sizes.
"""

from __future__ import annotations

import os

import pytest

import mlpx

FULL_SIZES = [784, 1024, 1024, 10]
SMOKE_SIZES = [64, 128, 128, 10]
CPU_BATCHES = [256, 1024, 4096, 16384]
GPU_BATCHES = [256, 1024, 4096, 16384, 65536]
SMOKE_BATCHES = [64]


def full_run(config: pytest.Config) -> bool:
    if os.environ.get("MLPX_BENCH_FULL", "") not in ("", "0"):
        return True
    return not config.getoption("benchmark_disable", default=False)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    full = full_run(metafunc.config)
    names = metafunc.fixturenames
    if "backend" in names and "batch" in names:
        cases = []
        for b in mlpx.available_backends():
            batches = (CPU_BATCHES if b == "cpu" else GPU_BATCHES) if full else SMOKE_BATCHES
            cases += [pytest.param(b, n, id=f"{b}-B{n}") for n in batches]
        metafunc.parametrize(("backend", "batch"), cases)
    elif "batch" in names:
        metafunc.parametrize("batch", CPU_BATCHES if full else SMOKE_BATCHES,
                             ids=lambda n: f"B{n}")
    elif "backend" in names:
        metafunc.parametrize("backend", mlpx.available_backends())


@pytest.fixture
def sizes(request: pytest.FixtureRequest) -> list[int]:
    return list(FULL_SIZES if full_run(request.config) else SMOKE_SIZES)
