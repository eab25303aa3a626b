"""The Numba SGD kernel of the cpu backend against the reference backend: bitwise."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.backends import numba_optim

CPU = mlpx.get_backend("cpu")
REF = mlpx.get_backend("reference")
DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_update_bitwise(dtype, rng):
    p = rng.standard_normal((30, 20)).astype(dtype)
    g = rng.standard_normal((30, 20)).astype(dtype)
    pc, pr = p.copy(), p.copy()
    CPU.sgd_update(pc, g, 0.0137)
    REF.sgd_update(pr, g, 0.0137)
    np.testing.assert_array_equal(pc, pr)
    assert not np.array_equal(pc, p)


def test_cpu_backend_dispatches_to_the_sgd_kernel(monkeypatch, rng):
    calls: list[str] = []
    fn = numba_optim.sgd_update
    monkeypatch.setattr(numba_optim, "sgd_update",
                        lambda *a: (calls.append("sgd_update"), fn(*a))[1])
    p = rng.standard_normal((4, 3)).astype(np.float32)
    CPU.sgd_update(p, p.copy(), 0.1)
    assert calls == ["sgd_update"]
