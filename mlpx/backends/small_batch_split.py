"""The small-batch chain shared between threads, for models with wide layers: each wide
layer's block sums (mlpx.backends.small_batch_kernels: consecutive inputs, a count fixed by
the layer's width) computed by mlpx's threads at once (small_batch_split_kernels), with the
serial chain's bits. A serial chain reads every weight on one core; where a layer's weights
are MBs, that core's bandwidth bounds it, and two cores, each streaming its own weight rows,
read them faster. Waking the threads costs microseconds per layer, so it pays only for wide
layers and a few rows, and not on a machine whose other CPUs are busy.

Chosen by measurement, as the chain's cut-off is (mlpx.backends.small_batch): on first use,
per processor, thread count, library versions and layer sizes, the split chain against the
serial one at each probe size up to the chain's cut-off, alternated; it serves the sizes up
to the largest at which it always won by 3 %, and none where it never did.
MLPX_SMALL_BATCH_SPLIT overrides the measurement: 0 turns it off, a number sets the rows.

A chain that then runs far slower than measured (the machine got busy) gives the split up
for the rest of the process (`Guard`). One launch at a time: Numba's thread pool may not take
launches from several Python threads at once, so a thread that finds the split chain busy
runs the serial chain instead (the same bits).
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

QUESTION = "small_batch_split"
#: the smallest weight matrix (bytes) for which splitting is measured at all: below it one
#: core's bandwidth reads every layer in a few microseconds, less than waking the threads
MIN_BYTES = 1 << 20
_ENV = "MLPX_SMALL_BATCH_SPLIT"
#: the longest the split chain is run before its measurement, to outlast OpenBLAS's spin
SETTLE_S = 0.3
_METHOD = 7  # how the choice is measured, or the kernels it times: a new one measures again
_busy = threading.Lock()
_local = threading.local()
_state = {"forked": False}


def _forked() -> None:
    _state["forked"] = True


if hasattr(os, "register_at_fork"):
    # Numba's OpenMP threading layer cannot launch in a child forked after its threads
    # started (multiprocessing's default on Linux): children run the serial chain
    os.register_at_fork(after_in_child=_forked)


@functools.cache
def _kernels() -> Any:
    from . import small_batch_split_kernels

    return small_batch_split_kernels


def parts() -> int:
    """Threads sharing a layer's blocks: mlpx's thread count, within the threads Numba's
    pool can start."""
    import numba

    from .threads import get_num_threads

    return max(1, min(get_num_threads(), numba.config.NUMBA_NUM_THREADS))


def run(x: np.ndarray, ws: tuple, bs: tuple, has_bias: tuple, codes: tuple, alphas: tuple,
        outs: tuple, sums: tuple, ops: tuple, n_parts: int) -> bool | None:
    """The split chain's dense_chain, or None where another thread is running it (or in a
    forked child)."""
    if _state["forked"] or not _busy.acquire(blocking=False):
        return None
    try:
        if getattr(_local, "threads", None) != n_parts:
            # Numba's count is per calling thread: one pool thread per share, set once
            import numba

            numba.set_num_threads(n_parts)
            _local.threads = n_parts
        return bool(_kernels().dense_chain_split(x, ws, bs, has_bias, codes, alphas, outs,
                                                 sums, ops))
    finally:
        _busy.release()


def worth_measuring(sizes: list[int], itemsize: int, n_parts: int) -> bool:
    """Whether a chain of these layer sizes may gain: several threads and one weight matrix
    of at least MIN_BYTES whose inputs make several blocks."""
    blocks = _kernels().blocks
    widest = max((a * b for a, b in zip(sizes[:-1], sizes[1:], strict=False)
                  if blocks(a) > 1), default=0) * itemsize
    return n_parts > 1 and widest >= MIN_BYTES


def _measure(serial: Callable[[np.ndarray], Any], split: Callable[[np.ndarray], Any],
             width: int, dtype: np.dtype, max_rows: int, probe_rows: tuple[int, ...],
             ) -> dict[str, Any]:
    """Per probe size up to max_rows: seconds per call of each, the median of 7 alternated
    rounds; the split chain serves the sizes it won by 3 % (a small_batch.Reach)."""
    from .small_batch import Reach, alternated_wins

    probes = [r for r in probe_rows if r <= max_rows]
    _settle(serial, split, width, dtype)
    won, split_s, serial_s, spread = alternated_wins(split, serial, probes, width, dtype,
                                                     rounds=7)
    from .measured import gap

    return {"served": Reach.of_probes(won, probes).to_json(), "serial_s": serial_s,
            "split_s": split_s, "spread": round(spread, 2), "gap": gap(split_s, serial_s)}


def _settle(serial: Callable[[np.ndarray], Any], split: Callable[[np.ndarray], Any],
            width: int, dtype: np.dtype, most: float = SETTLE_S) -> None:
    """Run the split chain on one row until three calls in a row take at most twice the
    serial chain's time, for at most `most` seconds. A first prediction often follows
    GEMMs (the layers' path on a larger batch), and for ~0.1 s after one OpenBLAS's threads
    spin waiting for the next (its THREAD_TIMEOUT): each launch of Numba's threads then
    waits ms for a CPU, and the first probe sizes would time that wait, not the chain."""
    x = np.zeros((1, width), dtype)
    serial(x)
    t0 = time.perf_counter()
    serial(x)
    limit = 2 * (time.perf_counter() - t0)
    quick, start = 0, time.perf_counter()
    while quick < 3 and time.perf_counter() - start < most:
        t0 = time.perf_counter()
        split(x)
        quick = quick + 1 if time.perf_counter() - t0 <= limit else 0


def env_rows() -> int | None:
    from .small_batch import env_row_count

    return env_row_count(_ENV, "never split between threads", "measure on this machine")


def measured_rows(chain: Any, serial: Callable[[np.ndarray], Any],
                  split: Callable[[np.ndarray], Any], probe_rows: tuple[int, ...],
                  up_to: int) -> tuple[Any, dict[int, float], dict[int, float]]:
    """The batch sizes, up to `up_to` rows, the split chain serves for `chain` on this
    machine (a small_batch.Reach, empty for none), and the serial and split chains'
    measured seconds per call by probe size ({} where not measured): every size up to
    MLPX_SMALL_BATCH_SPLIT, else measured on first use and cached (mlpx.backends.measured)."""
    from .small_batch import Reach

    forced = env_rows()
    if forced is not None:
        return Reach.up_to(forced), {}, {}
    n_parts = parts()
    if up_to < 1 or not worth_measuring(chain.sizes, chain.dtype.itemsize, n_parts):
        return Reach(), {}, {}
    import numba

    from . import measured

    key = measured.machine_key(f"numpy {np.__version__}", f"numba {numba.__version__}",
                               f"{chain.dtype.name}", f"method {_METHOD}",
                               f"up to {up_to} rows",
                               chain.label)
    entry = measured.lookup(QUESTION, key)
    reach = None if entry is None else Reach.from_json(entry.get("served"))
    if reach is None:
        entry = measured.store(QUESTION, key, _measure(
            serial, split, chain.sizes[0], chain.dtype, up_to, probe_rows))
        reach = Reach.from_json(entry["served"]) or Reach()
    return reach, _seconds(entry.get("serial_s")), _seconds(entry.get("split_s"))


def _seconds(by_rows: Any) -> dict[int, float]:
    """Seconds per probe size as stored (JSON keys are strings), {} for anything else."""
    try:
        return {int(k): float(v) for k, v in by_rows.items()}
    except (AttributeError, TypeError, ValueError):
        return {}


class Guard:
    """Gives up the split chain for this process when it runs far slower than the serial
    chain was measured (other work took the CPUs its threads need since: each launch then
    waits on a descheduled thread): every call over SLOWER x the serial time for at least
    STRIKES calls and SUSTAINED seconds. Not sooner: for ~0.1 s after a GEMM, OpenBLAS's
    threads spin waiting for the next one (its THREAD_TIMEOUT, 2^28 cycles), and a launch
    meanwhile waits ms for a CPU; a few rows served right after a large batch would
    otherwise give the threaded chain up for good."""

    SLOWER, STRIKES, SUSTAINED = 2.0, 3, 0.5

    def __init__(self, serial_s: dict[int, float]) -> None:
        self._limit = {rows: self.SLOWER * s for rows, s in serial_s.items()}
        self._sizes = sorted(self._limit)
        self._strikes = 0
        self._since: float | None = None  # when the first slow call in a row started

    def limit(self, rows: int) -> float | None:
        """The slowest acceptable split call on `rows` rows (None: not guarded)."""
        for size in self._sizes:  # the nearest probe size at or above
            if size >= rows:
                return self._limit[size]
        return None

    def keep(self, rows: int, seconds: float, now: float | None = None) -> bool:
        """Record one split call that took `seconds` and ended at `now` (time.perf_counter's
        clock); False once the split chain should be given up."""
        limit = self.limit(rows)
        if limit is None or seconds <= limit:
            self._strikes, self._since = 0, None
            return True
        now = time.perf_counter() if now is None else now
        if self._since is None:
            self._since = now - seconds
        self._strikes += 1  # a benign race between threads: a strike more or less
        return self._strikes < self.STRIKES or now - self._since < self.SUSTAINED
