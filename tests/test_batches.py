"""The streamed batches' host gather: indices checked once per epoch, rows gathered in place."""

from __future__ import annotations

import numpy as np
import pytest

from mlpx.backends.batches import checked_order, gather_rows


def test_gather_rows_writes_the_rows_in_place(rng):
    X = rng.standard_normal((50, 7)).astype(np.float32)
    y = rng.integers(0, 3, 50)
    idx = checked_order(rng.permutation(50), 50)[:20]
    out_x, out_y = np.empty((20, 7), np.float32), np.empty(20, y.dtype)
    assert gather_rows(X, idx, out_x) is out_x and gather_rows(y, idx, out_y) is out_y
    np.testing.assert_array_equal(out_x, X[idx])
    np.testing.assert_array_equal(out_y, y[idx])


@pytest.mark.parametrize("bad", [[0, 5], [-1, 2], [0, 1, 9]])
def test_checked_order_rejects_rows_out_of_range(bad):
    with pytest.raises(IndexError, match=r"outside \[0, 5\)"):
        checked_order(np.array(bad), 5)


def test_checked_order_needs_integer_rows():
    with pytest.raises(TypeError, match="row numbers"):
        checked_order(np.array([0.0, 1.0]), 5)
    with pytest.raises(TypeError, match="row numbers"):
        checked_order(np.zeros((2, 2), np.int64), 5)
    got = checked_order(np.array([3, 0], np.int32), 5)
    assert got.dtype == np.int64 and got.tolist() == [3, 0]
    assert checked_order(np.array([], np.int64), 0).size == 0


def test_streamed_epoch_checks_the_order_before_any_copy(rng):
    cuda_host = pytest.importorskip("cuda_host")
    from mlpx.backends.batches import StreamedBatches

    rt = cuda_host.FakeStreamRuntime()
    src = StreamedBatches(_HostOps(), rng.standard_normal((10, 3)), np.arange(10), 4,
                          np.float32, rt)
    with pytest.raises(IndexError, match="outside"):
        next(src.epoch(np.array([0, 1, 2, 10])))
    assert not any(entry[0] == "copy" for entry in rt.log)


class _HostOps:
    """The two calls StreamedBatches makes on its backend."""

    _single_gpu = True

    def empty(self, shape, dtype):
        return np.empty(shape, dtype)
