"""The batch sources: how an epoch is cut (EpochCuts), and the streamed batches' host gather
(indices checked once per epoch, rows gathered in place)."""

from __future__ import annotations

import numpy as np
import pytest

import mlpx
from mlpx.backends.batches import EpochCuts, checked_order, gather_rows, steps_per_epoch


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


@pytest.mark.parametrize("n, batch_size", [(50, 16), (48, 16), (5, 16), (7, 1), (1, 3)])
def test_epoch_cuts_cover_the_epoch_once(n, batch_size):
    cuts = EpochCuts(n, batch_size)
    rows = [cuts.rows(s) for s in range(cuts.steps)]
    assert cuts.batch_size == min(batch_size, n)
    assert cuts.steps == steps_per_epoch(n, batch_size) == len(rows)
    assert rows[0][0] == 0 and rows[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(rows, rows[1:], strict=False))
    assert all(hi - lo == cuts.batch_size for lo, hi in rows[:-1])
    assert rows[-1][1] - rows[-1][0] == cuts.last_rows
    assert [cuts.rows_before(s) for s in range(cuts.steps + 1)] == [0] + [hi for _, hi in rows]


def test_epoch_cuts_narrow_each_batch_to_a_part():
    cuts = EpochCuts(50, 16)
    assert cuts.rows(3, part=lambda lo, hi: (lo + 1, hi)) == (49, 50)


def test_the_resident_source_is_cut_as_its_epoch_cuts_say(rng):
    X = rng.standard_normal((50, 3)).astype(np.float32)
    y = rng.integers(0, 2, 50)
    source = mlpx.get_backend("cpu").batch_source(X, y, 16, np.float32)
    sizes = [xb.shape[0] for xb, _ in source.epoch(None)]
    assert sizes == [hi - lo for lo, hi in (source.rows(s) for s in range(source.steps))]
    assert sizes[-1] == source.last_rows == 2


@pytest.mark.parametrize("start", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("shuffle", [True, False])
def test_an_epoch_from_a_later_batch_yields_the_rest_of_it(rng, start, shuffle):
    from mlpx.backends.batches import StreamedBatches

    cuda_host = pytest.importorskip("cuda_host")
    X = rng.standard_normal((50, 3)).astype(np.float32)
    y = rng.integers(0, 2, 50)
    order = rng.permutation(50) if shuffle else None
    resident = mlpx.get_backend("cpu").batch_source(X, y, 16, np.float32)
    streamed = StreamedBatches(_HostOps(), X, y, 16, np.float32,
                               cuda_host.FakeStreamRuntime())
    for source in (resident, streamed):
        whole = [(xb.copy(), yb.copy()) for xb, yb in source.epoch(order)]
        tail = [(xb.copy(), yb.copy()) for xb, yb in source.epoch(order, None, start=start)]
        assert len(tail) == max(0, source.steps - start)
        for (xa, ya), (xb, yb) in zip(whole[start:], tail, strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
