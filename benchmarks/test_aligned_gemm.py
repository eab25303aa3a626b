"""The step's largest GEMM on 64-byte aligned operands (what the cpu backend allocates) and
on NumPy's default 16-byte alignment (a cache line split across every row of packed panels).

Full size: (256, 1024) @ (1024, 1024) float32, the hidden layer of 784-1024-1024-10 at batch
256; smoke size (`--benchmark-disable`): (16, 64) @ (64, 64). Compare the two rows of
`pytest benchmarks/test_aligned_gemm.py --benchmark-only`.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlpx.backends.gemm_plumbing import ALIGNMENT, aligned_empty

from .conftest import full_run


def _misaligned(shape: tuple[int, int], offset: int = 16) -> np.ndarray:
    nbytes = 4 * shape[0] * shape[1]
    raw = np.empty(nbytes + 2 * ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT + offset
    return raw[start:start + nbytes].view(np.float32).reshape(shape)


@pytest.mark.parametrize("alignment", ["64-byte", "16-byte"])
def test_gemm_alignment(benchmark, request, alignment):
    m, k, n = (256, 1024, 1024) if full_run(request.config) else (16, 64, 64)
    alloc = aligned_empty if alignment == "64-byte" else (lambda s, dt: _misaligned(s))
    rng = np.random.default_rng(0)
    a, b, out = alloc((m, k), np.float32), alloc((k, n), np.float32), alloc((m, n), np.float32)
    a[...] = rng.standard_normal((m, k))
    b[...] = rng.standard_normal((k, n))
    want_aligned = alignment == "64-byte" and a.nbytes >= 4096
    assert (a.ctypes.data % ALIGNMENT == 0) == want_aligned
    benchmark(np.matmul, a, b, out=out)
    np.testing.assert_allclose(out, a @ b, rtol=1e-5, atol=1e-4)
