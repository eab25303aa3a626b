"""The host gather of the streamed (pinned-memory) batches: `batches.gather_rows` against
`np.take`'s default mode, which gathers through a temporary and copies it.

Full sizes: 16384 shuffled rows of a (65536, 784) float32 array into a preallocated buffer
(as StreamedBatches does each step); smoke sizes (`--benchmark-disable`): 64 of 256 rows.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlpx.backends.batches import checked_order, gather_rows

from .conftest import full_run


@pytest.mark.parametrize("impl", ["gather_rows", "take_raise"])
def test_streamed_gather(benchmark, request, impl):
    rows, batch = (65536, 16384) if full_run(request.config) else (256, 64)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((rows, 784), dtype=np.float32)
    idx = checked_order(rng.permutation(rows), rows)[:batch]
    out = np.empty((batch, 784), np.float32)
    if impl == "gather_rows":
        benchmark(gather_rows, X, idx, out)
    else:
        benchmark(lambda: np.take(X, idx, axis=0, out=out))
    np.testing.assert_array_equal(out, X[idx])
