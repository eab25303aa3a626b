"""Many training steps per call: a chunk of an epoch's steps as one compiled call.

Where `fit` takes the compiled step (mlpx.backends.compiled_step) and nothing needs Python
between two steps (no batch-level callback hooks, a single process, resident data), the
training loop hands it whole chunks of the epoch: one Numba call
(mlpx.backends.compiled_epoch_kernels) gathers each batch's rows by the epoch's order into
the batch buffers, runs the compiled step on it, sums the loss as the loop does and counts
what the accuracy metric counts. Weights, optimiser state, loss and metrics are bit for bit
those of one compiled step per call; only the Python around each step goes (the batch
gathers, the loop, the metric update).

A chunk is short (at most `MAX_STEPS` steps and `MAX_WORK` batch rows x weights), so that
Ctrl-C, which is acted on between calls, still stops the run within tens of milliseconds.
Metrics other than the built-in accuracy run one step per call. MLPX_COMPILED_EPOCH=0 turns
the chunks off (each step is then its own call).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

_ENV = "MLPX_COMPILED_EPOCH"
#: at most this many steps per call
MAX_STEPS = 64
#: and at most this many batch rows x weights per call (784-256-128-10 at batch 32: 64 steps;
#: about 3 GFLOP of forward and backward GEMMs, some tens of milliseconds on two cores)
MAX_WORK = 1 << 29


def enabled() -> bool:
    """False when MLPX_COMPILED_EPOCH is 0, false, no or off."""
    return os.environ.get(_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


@functools.cache
def _kernels() -> Any:
    from . import compiled_epoch_kernels

    return compiled_epoch_kernels


def _count_kind(k: Any, loss_name: str, loss: Any, metrics: list) -> int | None:
    """What the kernel counts for `metrics` (None: a metric it cannot reproduce)."""
    from ..metrics import Accuracy

    if not metrics:
        return k.COUNT_NONE
    if len(metrics) > 1 or type(metrics[0]) is not Accuracy:
        return None
    if getattr(metrics[0], "_loss", None) is not loss:
        return None
    return {"softmax_xent": k.COUNT_ARGMAX, "bce_logits": k.COUNT_SIGN}.get(loss_name)


def plan(step: Any, source: Any, loss: Any, metrics: list, gbufs: dict) -> CompiledEpoch | None:
    """The chunked steps for a run whose steps take `step` (a CompiledStep, or None), on
    the batches of `source`, or None where they do not apply: turned off, data that is not
    resident host arrays in C order, or a metric the kernel does not count."""
    from .batches import ResidentBatches

    if step is None or not enabled() or type(source) is not ResidentBatches:
        return None
    X, y = source.X, source.y
    if not (isinstance(X, np.ndarray) and isinstance(y, np.ndarray)
            and X.flags.c_contiguous and y.flags.c_contiguous):
        return None
    k = _kernels()
    count = _count_kind(k, step.loss_name, loss, metrics)
    if count is None or source.batch_size not in gbufs:
        return None
    return CompiledEpoch(step, source, k, count, gbufs[source.batch_size])


class CompiledEpoch:
    """Runs steps s0..s1-1 of an epoch (full batches) as one call; see `run`."""

    def __init__(self, step: Any, source: Any, kernels: Any, count: int, g: Any) -> None:
        self.step, self.source, self._k, self._count, self._g = step, source, kernels, count, g
        self._steps = kernels.STEPS[step.loss_name]
        self.batch_size = bs = source.batch_size
        weights = sum(layer.W.data.size for layer in step.model.layers)
        #: steps per call
        self.chunk = max(1, min(MAX_STEPS, MAX_WORK // max(1, bs * weights)))
        n_out = step.model.layers[-1].W.data.shape[1]
        # accuracy's denominator per batch: samples (labels), or every output (bce)
        self._per_batch = bs * (n_out if count == kernels.COUNT_SIGN else 1)
        self._no_order = np.empty(0, np.int64)

    def covers(self, order: np.ndarray | None) -> bool:
        """Whether the compiled step takes this epoch's full batches now (nothing it was
        compiled for was swapped since: the check `covers` makes before every step)."""
        bs, source = self.batch_size, self.source
        if order is None:
            x, y = source.X[:bs], source.y[:bs]
        else:
            x, y = source.buffers(bs)
        return self.step.covers(x, y, self._g)

    def run(self, order: np.ndarray | None, s0: int, s1: int, total: Any,
            lr: float, metric_sums: list) -> tuple[Any, list]:
        """Steps s0..s1-1 of the epoch whose batch order is `order` (None: in order): the
        running loss sum after them and the metrics' running sums, as one step per call
        would leave them. The optimiser's step count goes up by s1 - s0."""
        step, source = self.step, self.source
        bs = self.batch_size
        xbuf, ybuf = source.buffers(bs)
        idx = self._no_order if order is None else np.ascontiguousarray(order, np.int64)
        opt = step.model.optimizer_
        args = step.step_args(bs, self._g, lr)
        new_total, correct = self._steps(source.X, source.y, idx, s0, s1, bs, xbuf, ybuf, args,
                                         opt.step_count, float(total), self._count)
        opt.step_count += s1 - s0
        step.model._grads_pending = False
        if self._count == self._k.COUNT_NONE:
            return np.float64(new_total), metric_sums
        # Accuracy.update's state: (correct count, denominator), added step by step
        batch = (np.int64(correct), self._per_batch * (s1 - s0))
        prev = metric_sums[0]
        sums = [batch if prev is None else (prev[0] + batch[0], prev[1] + batch[1])]
        return np.float64(new_total), sums
