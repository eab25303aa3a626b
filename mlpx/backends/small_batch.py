"""Small-batch inference on the cpu backend: `predict` on one row, or a handful, with as
little work per call as the product itself needs.

A model that is a chain of Dense layers (built-in elementwise or PReLU activations, with or
without bias), with Dropout (the identity at inference), BatchNorm, LayerNorm and PReLU layers
anywhere (mlpx.backends.inference_ops) gets a `Chain`: its layers' weights as
one compiled call (mlpx.backends.small_batch_kernels: matrix-vector style products with the bias
and activation fused, in the calling thread), with per-thread output buffers, so a call
validates and allocates only what one row needs. It serves the batch sizes at which it was
measured faster than the layers' own path (a GEMM library per layer, with its threads) on this
machine for this model's layer sizes (`measured_cutoff`, a `Reach`); for other sizes, or any
other model, `predict` takes the layers' path. MLPX_SMALL_BATCH overrides the measurement: 0
turns the chain off, a number N serves every batch up to N rows. For wide layers (a weight
matrix of MBs) the chain may also share each layer's block sums between threads, with the same
bits, at the batch sizes measured the same way (mlpx.backends.small_batch_split), before the
cut-off (`configure`).

Thread-safe and re-entrant: the weights are only read, each thread writes its own buffers,
and the caller holds the model's read lock (as for every prediction).
"""

from __future__ import annotations

import functools
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

#: the batch sizes the cut-off is measured at (the chain's reach never exceeds the largest)
PROBE_ROWS = (1, 2, 4, 8, 16, 32, 64)
QUESTION = "small_batch_inference"
_MARGIN = 0.97  # the chain must be 3 % faster: ties keep the layers' path
SLOW_CALL_S = 2e-3  # from this time per call, 3 alternated rounds (alternated_wins)
_ENV = "MLPX_SMALL_BATCH"
_METHOD = 10  # how the cut-off is measured, or the chain it times: a new one measures again


@functools.cache  # the import machinery once, not on every call
def _kernels() -> Any:
    from . import small_batch_kernels

    return small_batch_kernels


@functools.cache
def _split() -> Any:
    from . import small_batch_split

    return small_batch_split


class Reach:
    """The batch sizes one way of predicting serves: inclusive spans of row counts. A way is
    measured at the probe sizes, and a probe size it won also covers the sizes above the
    probe below it (3 rows: the 4-row probe). Not a prefix: at 1 row a GEMM library's
    matrix-vector call, or the serial chain against the threaded one, can tie or win, while
    from 2 rows on the other way wins."""

    def __init__(self, spans: Any = ()) -> None:
        self.spans = tuple((int(lo), int(hi)) for lo, hi in spans if 1 <= lo <= hi)

    @classmethod
    def up_to(cls, rows: int) -> Reach:
        """Every batch of 1 to `rows` rows (none for 0)."""
        return cls(((1, rows),)) if rows > 0 else cls()

    @classmethod
    def of_probes(cls, won: Any, probes: Any) -> Reach:
        """The sizes served where the probe sizes in `won` were won (probes ascending)."""
        spans: list[tuple[int, int]] = []
        below = 0
        for rows in probes:
            if rows in won:
                if spans and spans[-1][1] == below:
                    spans[-1] = (spans[-1][0], rows)  # adjacent probes make one span
                else:
                    spans.append((below + 1, rows))
            below = rows
        return cls(spans)

    @classmethod
    def from_json(cls, value: Any) -> Reach | None:
        """The reach stored as [[lo, hi], ...], or None where `value` is not one."""
        if not isinstance(value, list) or not all(
                isinstance(s, list) and len(s) == 2 and all(type(v) is int for v in s)
                for s in value):
            return None
        return cls(value)

    def to_json(self) -> list[list[int]]:
        return [list(span) for span in self.spans]

    def __contains__(self, rows: int) -> bool:
        for lo, hi in self.spans:  # a loop, not any(generator): asked on every prediction
            if lo <= rows <= hi:
                return True
        return False

    def __bool__(self) -> bool:
        return bool(self.spans)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reach) and self.spans == other.spans

    def __hash__(self) -> int:
        return hash(self.spans)

    @property
    def largest(self) -> int:
        """The largest batch served (0: none)."""
        return max((hi for _, hi in self.spans), default=0)

    def __str__(self) -> str:
        if not self.spans:
            return "none"
        return ", ".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.spans)

    def __repr__(self) -> str:
        return f"Reach({self})"


def all_finite(x: np.ndarray) -> bool:
    """Whether no value of x is NaN or infinite (compiled: no temporary array)."""
    return bool(_kernels().all_finite(x))


class Chain:
    """The Dense layers of a model run as one compiled call (see the module), with the
    BatchNorm, LayerNorm and PReLU ops between them (mlpx.backends.inference_ops)."""

    def __init__(self, dense_layers: list[Any], dtype: np.dtype,
                 ops: list[list[Any]] | None = None):
        from .inference_ops import InferenceOps, activation_code

        self.layers = dense_layers
        self.dtype = np.dtype(dtype)
        self.sizes = [int(dense_layers[0].W.data.shape[0])] + [int(d.units) for d in
                                                                dense_layers]
        self.codes = tuple(activation_code(d) for d in dense_layers)
        self.alphas = tuple(float(getattr(d.activation, "alpha", 0.0) or 0.0)
                            for d in dense_layers)
        self.has_bias = tuple(d.b is not None for d in dense_layers)
        self._no_bias = tuple(np.zeros(n, self.dtype) for n in self.sizes[1:])
        self.ops = InferenceOps(ops or [[] for _ in range(len(dense_layers) + 1)], self.dtype)
        self._local = threading.local()
        self.reach = Reach()  # the batch sizes the chain serves (`configure`)
        self.split_reach = Reach()  # those the threaded chain serves (`choose_split`)
        self.parts = 1
        self._guard: Any = None  # gives the threaded chain up if it gets slow (measured)
        # per probe size the threaded chain serves: its measured time over the serial one's
        self.split_ratio: dict[int, float] = {}
        self._blocks: tuple[int, ...] | None = None  # per layer (small_batch_kernels.blocks)

    @property
    def label(self) -> str:
        """The layer sizes and ops, as the measured choices' keys name them."""
        sizes = "sizes " + "-".join(map(str, self.sizes))
        return f"{sizes} ops {self.ops.label}" if self.ops else sizes

    def _outputs(self, rows: int) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...],
                                            tuple[np.ndarray, np.ndarray]]:
        """This thread's buffers for `rows` rows: the layers' outputs, the last one a new
        array (the result), their block sums (a stand-in for a layer of one block), and the
        ops' work arrays (InferenceOps.buffers)."""
        cache = getattr(self._local, "buffers", None)
        if cache is None:
            cache = self._local.buffers = {}
        hidden = cache.get(rows)
        if hidden is None:
            if self._blocks is None:
                self._blocks = tuple(int(_kernels().blocks(k)) for k in self.sizes[:-1])
            sums = tuple(np.empty((p, rows, n) if p > 1 else (1, 1, 1), self.dtype)
                         for p, n in zip(self._blocks, self.sizes[1:], strict=True))
            outs = [np.empty((rows, n), self.dtype) for n in self.sizes[1:-1]]
            scratch = self.ops.buffers(rows, self.sizes)
            hidden = cache[rows] = (outs, sums, scratch)
        outs, sums, scratch = hidden
        return (*outs, np.empty((rows, self.sizes[-1]), self.dtype)), sums, scratch

    def __call__(self, x: np.ndarray) -> np.ndarray | None:
        """The outputs for C-contiguous `x` of the chain's dtype and width, or
        None when x holds NaN or infinity (the caller's full path then explains)."""
        return self._compute(x, x.shape[0] in self.split_reach)

    def _compute(self, x: np.ndarray, split: bool) -> np.ndarray | None:
        """__call__ on the serial chain, or (`split`) on the threaded one where no other
        thread is running it (mlpx.backends.small_batch_split): the same bits either way."""
        layers = self.layers
        ws = tuple([d.W.data for d in layers])  # read per call: set_weights may swap them
        bs = tuple([d.b.data if d.b is not None else z
                    for d, z in zip(layers, self._no_bias, strict=True)])
        outs, sums, scratch = self._outputs(x.shape[0])
        ops = None  # Dense layers alone: the kernels compiled without the ops
        if self.ops:
            ops = self.ops.pack(*scratch)
            if ops is None:
                return None
        ok = None
        if split:
            t0 = time.perf_counter()
            ok = _split().run(x, ws, bs, self.has_bias, self.codes, self.alphas, outs, sums,
                              ops, self.parts)
            if ok is not None and self._guard is not None \
                    and not self._guard.keep(x.shape[0], time.perf_counter() - t0):
                self.split_reach = Reach()  # far slower than measured: serial from now on
        if ok is None:
            ok = _kernels().dense_chain(x, ws, bs, self.has_bias, self.codes, self.alphas,
                                        outs, sums, ops)
        return outs[-1] if ok else None

    def choose_split(self, up_to: int) -> None:
        """The batch sizes (at most `up_to` rows) the threaded chain serves: measured against
        the serial chain on this machine for wide layers (see small_batch_split)."""
        sp = _split()
        self.parts = sp.parts()
        self.split_reach, serial_s, split_s = sp.measured_rows(
            self, lambda x: self._compute(x, False), lambda x: self._compute(x, True),
            PROBE_ROWS, up_to)
        self.split_ratio = {rows: split_s[rows] / serial_s[rows] for rows in split_s
                            if rows in serial_s and rows in self.split_reach}
        self._guard = sp.Guard(serial_s) if serial_s else None


def chain_of(model: Any) -> Chain | None:
    """A Chain for `model` (built, cpu backend, float32/float64) when it is Dense layers with
    built-in elementwise or PReLU activations, with Dropout (the identity at inference),
    BatchNorm, LayerNorm and PReLU layers anywhere (their ops run between the Dense
    layers'; mlpx.backends.inference_ops); else None."""
    from .cpu import CPUBackend
    from .inference_ops import split_model

    if not isinstance(model.ops, CPUBackend) or np.dtype(model.dtype) not in (
            np.dtype(np.float32), np.dtype(np.float64)):
        return None
    split = split_model(model)
    if split is None or not split[0]:
        return None
    for layer in split[0]:
        if layer.W.data.dtype != model.dtype or not layer.W.data.flags.c_contiguous:
            return None
    return Chain(split[0], model.dtype, split[1])


# ------------------------------------------------------------------------ the cut-off
def _best_mean(fn: Callable[[], Any], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def alternated_wins(candidate: Callable[[np.ndarray], Any],
                    incumbent: Callable[[np.ndarray], Any], probe_rows: Any, width: int,
                    dtype: Any, rounds: int, scale: dict[int, float] | None = None,
                    ) -> tuple[list[int], dict, dict, float]:
    """Per probe size (ascending), seconds per call of `candidate` and `incumbent`, each the
    median of `rounds` alternated rounds, until the candidate has lost at two sizes in a row
    (it wins where it is 3 % faster, _MARGIN): (the sizes it won; candidate's; incumbent's
    seconds; the spread: the largest slowest-to-fastest round ratio of either side, see
    mlpx.backends.measured.store). One loss does not end it: at 1 row a GEMM library's
    matrix-vector call, or the serial chain against the threaded one, may tie, and from 2
    rows on the candidate win. `scale` multiplies the candidate's seconds at the sizes it
    names (see _measure). Shared by the chain's cut-off and the threaded chain's choice
    (small_batch_split)."""
    scale = scale or {}
    rng = np.random.default_rng(0)
    cand_s, inc_s = {}, {}
    won: list[int] = []
    spread, losses = 1.0, 0
    for rows in probe_rows:
        x = rng.standard_normal((rows, width)).astype(dtype)
        candidate(x)
        incumbent(x)  # warm-up: kernels compiled, buffers and pools made
        # ~1 ms of each per round, at least 3 calls: ~70 ms in all for a small model
        per = _best_mean(lambda x=x: incumbent(x), 3)
        calls = max(3, min(100, int(1e-3 / max(per, 1e-7))))
        a, b = [], []
        # a call of milliseconds is timed well by fewer rounds (at 64 rows of 784-2048-2048-10
        # each side's call is 15-30 ms: 7 rounds took a second of the first prediction)
        for _ in range(rounds if per < SLOW_CALL_S else min(rounds, 3)):
            # one untimed call first: each side is timed as it serves calls in a row, its
            # pool's threads awake, not as the first call after the other side's
            candidate(x)
            a.append(_best_mean(lambda x=x: candidate(x), calls))
            incumbent(x)
            b.append(_best_mean(lambda x=x: incumbent(x), calls))
        # the median round of each: a library's threads that stall whenever a CPU is busy
        # elsewhere (10-100x slower rounds on a shared machine) are part of its cost
        cand_s[rows] = statistics.median(a) * scale.get(rows, 1.0)
        inc_s[rows] = statistics.median(b)
        spread = max(spread, max(a) / max(min(a), 1e-12), max(b) / max(min(b), 1e-12))
        if cand_s[rows] < _MARGIN * inc_s[rows]:
            won.append(rows)
            losses = 0
            continue
        losses += 1
        if losses == 2:
            break  # past the crossing: larger batches only favour the incumbent more
    return won, cand_s, inc_s, spread


def _measure(chain: Chain, layers_path: Callable[[np.ndarray], Any]) -> dict[str, Any]:
    """Per probe size: seconds per call of the chain and of the layers' path, the median of
    5 alternated rounds; the chain serves the sizes it won (by 3 %), a Reach.

    The chain is timed serial, and at the sizes its threaded form serves, scaled by the
    threaded-to-serial ratio measured for them (choose_split). Timed directly, the threaded
    chain would pay for the layers' path's GEMMs just before it: OpenBLAS's threads spin for
    ~0.1 s after a call, and a Numba launch meanwhile waits for a CPU (ms per call). Serving
    calls in a row, as measured here for each side, it does not."""
    won, chain_s, layers_s, spread = alternated_wins(
        lambda x: chain._compute(x, False), layers_path, PROBE_ROWS, chain.sizes[0],
        chain.dtype, rounds=5, scale=chain.split_ratio)
    from .measured import gap

    return {"served": Reach.of_probes(won, PROBE_ROWS).to_json(), "chain_s": chain_s,
            "layers_s": layers_s, "spread": round(spread, 2), "gap": gap(chain_s, layers_s)}


def env_row_count(var: str, zero_means: str, unset_means: str) -> int | None:
    """The row count set in environment variable `var`, or None where it is unset; a clear
    error for anything else (the messages name what 0 and unset mean)."""
    value = os.environ.get(var, "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise ValueError(
            f"{var}={value!r} is not a row count; set it to 0 ({zero_means}) or a positive "
            f"number of rows, or unset it to {unset_means}")
    return int(value)


def _env_cutoff() -> int | None:
    return env_row_count(_ENV, "the layers' path always", "measure the cut-off on this machine")


def measured_cutoff(chain: Chain, layers_path: Callable[[np.ndarray], Any],
                    gemm_path: str) -> Reach:
    """The batch sizes the chain serves for these layer sizes on this machine: measured on
    first use, cached per processor, thread count, library versions and GEMM path
    (mlpx.backends.measured), or every size up to MLPX_SMALL_BATCH."""
    forced = _env_cutoff()
    if forced is not None:
        return Reach.up_to(forced)
    import numba

    from . import measured

    key = measured.machine_key(f"numpy {np.__version__}", f"numba {numba.__version__}",
                               f"gemm {gemm_path}", f"{chain.dtype.name}",
                               f"method {_METHOD}", f"threaded {chain.split_reach}",
                               chain.label)
    entry = measured.lookup(QUESTION, key)
    reach = None if entry is None else Reach.from_json(entry.get("served"))
    if reach is None:
        entry = measured.store(QUESTION, key, _measure(chain, layers_path))
        reach = Reach.from_json(entry["served"]) or Reach()
    return reach


def configure(chain: Chain, layers_path: Callable[[np.ndarray], Any], gemm_path: str) -> None:
    """How `chain` serves, measured on first use (or read back): first the batch sizes at
    which its threaded form beats the serial one (wide layers only), then those at which the
    chain so configured beats the layers' path. In this order, a model whose serial chain loses
    to a GEMM library's threads but whose threaded chain wins still gets the chain."""
    forced = _env_cutoff()
    chain.choose_split(PROBE_ROWS[-1] if forced is None else forced)
    chain.reach = measured_cutoff(chain, layers_path, gemm_path)
