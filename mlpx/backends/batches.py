"""Where the training data lives during `fit`, and how each mini-batch reaches the device.

`Backend.batch_source(X, y, batch_size, dtype, stream)` returns one of two sources; the fit
loop only iterates `source.epoch(order)` and never asks which one it got:

- `ResidentBatches`: X and y are copied to the backend's device once per `fit`; each shuffled
  batch is gathered on the device into a reused buffer (`ops.take_rows`). Every backend uses
  it for data that fits.
- `StreamedBatches` (cuda backend, data that does not fit on the GPU): X and y stay in host
  memory. Each batch is gathered on the host (`gather_rows`, no temporary) into one of two
  pinned (page-locked) buffers, copied asynchronously on a dedicated copy stream into one of
  two device buffers, and an
  event marks the copy's end; the compute stream waits on that event (a device-side wait,
  no host synchronisation) before the step uses the batch. The gather and copy of batch i+1
  run while the GPU computes batch i (double buffering). The host blocks only before it
  overwrites a pinned buffer, on the event of that buffer's previous copy (issued a whole
  step earlier, so normally long finished).

Both sources are cut the same way (`EpochCuts`: the batch size in use, steps per epoch, each
batch's rows, the last batch's size), and the fit loop reads that arithmetic from the source
it got. Both produce the same batches from the same `order`, so a streamed fit gives the same
weights, bit for bit, as a resident one. `epoch(order, part)` takes an optional `part(lo, hi)`
that narrows each batch's rows `lo:hi` of the order to a sub-range: a data-parallel process
gathers (and, streamed, copies) only its shard of every global batch.

The CUDA primitives (pinned memory, streams, events, async copies) come from a small runtime
object (`CupyStreamRuntime`), so tests can run the streaming logic with a host emulation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

#: Data is copied to the GPU whole when X and y together take at most this fraction of the
#: GPU memory that is free when `fit` starts (CuPy's cached pool blocks count as free). The
#: rest is left for the weights, optimiser state, each layer's activations and gradients for
#: the batch, and cuBLAS workspace.
RESIDENT_FRACTION = 0.5


def data_nbytes(X: Any, y: Any, dtype: Any) -> int:
    """Bytes X (stored as `dtype`) and y take on the device."""
    x_bytes = int(np.prod(X.shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return x_bytes + int(np.prod(y.shape, dtype=np.int64)) * np.dtype(y.dtype).itemsize


def check_stream_data(stream_data: Any) -> bool | None:
    if stream_data is None or isinstance(stream_data, bool):
        return stream_data
    raise TypeError(
        "stream_data must be None (decide from the free GPU memory), True (stream batches "
        f"from host memory) or False (copy the data to the device once), got {stream_data!r}"
    )


def checked_order(order: Any, n: int) -> np.ndarray:
    """`order` as int64 row numbers, every one checked to lie in [0, n) (once per epoch, so
    the per-batch gathers need not check again)."""
    order = np.asarray(order)
    if order.ndim != 1 or not np.issubdtype(order.dtype, np.integer):
        raise TypeError(f"the batch order must be a 1-D array of row numbers, got {order!r}")
    order = order.astype(np.int64, copy=False)
    if order.size and (int(order.min()) < 0 or int(order.max()) >= n):
        raise IndexError(
            f"the batch order holds row numbers outside [0, {n}): "
            f"{int(order.min())}..{int(order.max())}"
        )
    return order


def gather_rows(src: np.ndarray, idx: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[i] = src[idx[i]], written straight into `out` (a pinned buffer). `idx` must come
    from `checked_order`: np.take's default mode="raise" gathers through a temporary and
    copies it, "clip" writes in place (about 3x faster: docs/benchmarks.md)."""
    return np.take(src, idx, axis=0, out=out, mode="clip")


def steps_per_epoch(n: int, batch_size: int) -> int:
    """The number of batches an epoch of `n` samples is cut into (the last holds the rest)."""
    return -(-n // batch_size)


def _steps(n: int, batch_size: int) -> tuple[int, int]:
    bs = min(batch_size, n)
    return bs, steps_per_epoch(n, bs)


def _batch_rows(s: int, bs: int, n: int, part: Any) -> tuple[int, int]:
    """Rows `lo:hi` of the order that batch `s` takes (narrowed by `part` when given)."""
    lo, hi = s * bs, min((s + 1) * bs, n)
    return (lo, hi) if part is None else part(lo, hi)


class EpochCuts:
    """How an epoch of `n` samples is cut into batches: both sources are cut so, and the
    training loop reads the batch size, the number of steps and each batch's rows here."""

    def __init__(self, n: int, batch_size: int) -> None:
        self.n = n
        #: the batch size in use: the one asked for, at most n
        self.batch_size, self.steps = _steps(n, batch_size)
        #: the rows of the epoch's last batch (the rest of n after the full batches)
        self.last_rows = n - (self.steps - 1) * self.batch_size

    def rows(self, s: int, part: Any = None) -> tuple[int, int]:
        """Rows `lo:hi` of the epoch's order that batch `s` takes; with `part(lo, hi)` (a
        data-parallel process's share) the sub-range of them this process takes."""
        return _batch_rows(s, self.batch_size, self.n, part)

    def rows_before(self, step: int) -> int:
        """How many rows of the order the first `step` batches take."""
        return min(step * self.batch_size, self.n)


class ResidentBatches(EpochCuts):
    """Batches gathered on the device from X and y copied there once."""

    streamed = False

    def __init__(self, ops: Any, X: Any, y: Any, batch_size: int, dtype: Any) -> None:
        self.ops = ops
        self.X = ops.asarray(X, dtype=dtype)
        self.y = ops.asarray(y)
        super().__init__(int(self.X.shape[0]), batch_size)
        self._xbuf: dict[int, Any] = {}
        self._ybuf: dict[int, Any] = {}
        for m in {self.batch_size, self.last_rows}:
            self._xbuf[m] = ops.empty((m,) + tuple(self.X.shape[1:]), self.X.dtype)
            self._ybuf[m] = ops.empty((m,) + tuple(self.y.shape[1:]), self.y.dtype)

    def epoch(self, order: np.ndarray | None, part: Any = None,
              start: int = 0) -> Iterator[tuple[Any, Any]]:
        """The epoch's batches from batch `start` on: rows `order[k*bs:(k+1)*bs]`, or in
        order when None; with `part`, the sub-range `part(lo, hi)` of each batch's `lo:hi`."""
        idx_all = None if order is None else self.ops.asarray(order)
        for s in range(start, self.steps):
            lo, hi = self.rows(s, part)
            if idx_all is None:
                yield self.X[lo:hi], self.y[lo:hi]
                continue
            idx = idx_all[lo:hi]
            xbuf, ybuf = self.buffers(hi - lo)
            yield self.ops.take_rows(self.X, idx, xbuf), self.ops.take_rows(self.y, idx, ybuf)

    def buffers(self, m: int) -> tuple[Any, Any]:
        """The arrays a gathered batch of m rows is written into (x, y)."""
        if m not in self._xbuf:  # a shard's size: allocated once, at its first batch
            self._xbuf[m] = self.ops.empty((m,) + tuple(self.X.shape[1:]), self.X.dtype)
            self._ybuf[m] = self.ops.empty((m,) + tuple(self.y.shape[1:]), self.y.dtype)
        return self._xbuf[m], self._ybuf[m]

    def close(self) -> None:
        """Nothing in flight to wait for."""


class CupyStreamRuntime:
    """Pinned memory, streams, events and async copies from CuPy (the real GPU path)."""

    def __init__(self) -> None:
        import cupy
        import cupyx

        self._cp = cupy
        self._cpx = cupyx

    def pinned_empty(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return self._cpx.empty_pinned(shape, dtype=dtype)

    def new_stream(self) -> Any:
        return self._cp.cuda.Stream(non_blocking=True)

    def current_stream(self) -> Any:
        return self._cp.cuda.get_current_stream()

    def event(self) -> Any:
        return self._cp.cuda.Event(block=False, disable_timing=True)

    def copy_async(self, dst: Any, src: np.ndarray, stream: Any) -> None:
        dst.set(src, stream=stream)  # cudaMemcpyAsync: asynchronous because src is pinned


class StreamedBatches(EpochCuts):
    """Batches streamed from host memory through two pinned and two device buffers."""

    streamed = True

    def __init__(
        self, ops: Any, X: Any, y: Any, batch_size: int, dtype: Any, runtime: Any
    ) -> None:
        self.ops = ops
        self.rt = runtime
        # one host copy in the model's dtype (none when X already is one), gathered from
        self.X = np.ascontiguousarray(X, dtype=dtype)
        self.y = np.ascontiguousarray(y)
        super().__init__(int(self.X.shape[0]), batch_size)
        bs = self.batch_size
        xshape, yshape = (bs,) + self.X.shape[1:], (bs,) + self.y.shape[1:]
        self.pinned_x = [runtime.pinned_empty(xshape, self.X.dtype) for _ in range(2)]
        self.pinned_y = [runtime.pinned_empty(yshape, self.y.dtype) for _ in range(2)]
        self.dev_x = [ops.empty(xshape, self.X.dtype) for _ in range(2)]
        self.dev_y = [ops.empty(yshape, self.y.dtype) for _ in range(2)]
        self.compute = runtime.current_stream()
        self.copy_stream = runtime.new_stream()
        self.copied = [runtime.event() for _ in range(2)]  # on the copy stream: batch landed
        self.consumed = [runtime.event() for _ in range(2)]  # on compute: step used the slot
        self._copy_pending = [False, False]
        self._in_use = [False, False]

    def _prefetch(self, order: np.ndarray | None, s: int, slot: int, part: Any = None) -> int:
        """Gather batch `s` into pinned[slot] and queue its copy to the device; its rows."""
        start, stop = self.rows(s, part)
        m = stop - start
        px, py = self.pinned_x[slot][:m], self.pinned_y[slot][:m]
        if self._copy_pending[slot]:
            # the only host wait: pinned[slot]'s previous copy must have read it
            self.copied[slot].synchronize()
        if order is None:
            px[...] = self.X[start:stop]
            py[...] = self.y[start:stop]
        else:
            idx = order[start:stop]  # checked once per epoch in epoch()
            gather_rows(self.X, idx, px)
            gather_rows(self.y, idx, py)
        if self._in_use[slot]:
            # device-side wait: the step that read dev[slot] must finish before it is rewritten
            self.copy_stream.wait_event(self.consumed[slot])
        self.rt.copy_async(self.dev_x[slot][:m], px, self.copy_stream)
        self.rt.copy_async(self.dev_y[slot][:m], py, self.copy_stream)
        self.copied[slot].record(self.copy_stream)
        self._copy_pending[slot] = True
        return m

    def epoch(self, order: np.ndarray | None, part: Any = None,
              start: int = 0) -> Iterator[tuple[Any, Any]]:
        """The epoch's batches from batch `start` on (same rows as ResidentBatches.epoch),
        double buffered."""
        if order is not None:
            order = checked_order(order, self.n)
        if start >= self.steps:
            return
        ops = self.ops
        single = getattr(ops, "_single_gpu", True)
        ctx = contextlib.nullcontext() if single else ops._device
        with ctx:
            m = self._prefetch(order, start, start & 1, part)
        for s in range(start, self.steps):
            slot = s & 1
            with ctx:
                self.compute.wait_event(self.copied[slot])  # device-side: no host sync
            self._in_use[slot] = True
            yield self.dev_x[slot][:m], self.dev_y[slot][:m]
            with ctx:
                # the step for batch s is queued: mark the slot's release on the compute
                # stream, then prepare batch s+1 while the GPU computes batch s
                self.consumed[slot].record(self.compute)
                if s + 1 < self.steps:
                    m = self._prefetch(order, s + 1, 1 - slot, part)

    def close(self) -> None:
        """Wait for queued copies, so no copy writes into memory that is freed afterwards."""
        self.copy_stream.synchronize()
