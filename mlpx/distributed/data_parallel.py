"""`fit(distributed=True)`: one model trained by many processes, each on a shard of every batch.

What every process does (the trainer calls these hooks; see mlpx.training):

- start: run the fit's checks (`fit_plan.plan_fit`) and compare what each process was given (data
  shapes, dtypes and a checksum of sampled rows, architecture, dtype, seed, loss, optimiser,
  epochs, batch size, run position) with rank 0's; a process that failed or differs is named
  in the error every process raises. Then rank 0's parameters, buffers and optimiser state are
  broadcast, so every process starts from the same state.
- each step: the global batch (rows lo:hi of the epoch's order, the order of one process: same
  seed, run and epoch everywhere) is split into contiguous shards, rank r taking rows
  lo + r*M//P .. lo + (r+1)*M//P of its M rows. dL/d(output) of the shard's rows is scaled by
  (shard rows / M), so that after backward each process holds its rows' share of the gradient
  of the global batch's mean loss (weighted: by the shard's share of the batch's total sample
  weight, from the host copy of the weights); one all-reduce (sum) over a flat buffer
  allocated once gives every process the gradient one process would compute, exactly also for
  uneven shards. The metrics of `fit(metrics=...)` sum this process's rows only.
  The buffer carries one more number: whether a process was interrupted (Ctrl-C), so all stop
  after the same step. Dropout draws the words of its shard's rows; BatchNorm synchronises
  its batch statistics (two all-reduces forward, one backward).
- each epoch: the loss is totalled over the processes, the metrics' running sums gathered
  and merged (`Metric.merge`), and callbacks' stop requests are combined, so every process
  records the same History and stops together; rank 0 alone prints progress and runs the
  callbacks' after_epoch (ModelCheckpoint saves there). Batch hooks run on every process with
  its own running values; a stop they ask for on any process is agreed after the step.
- failure: an error raised by one process only (not a diverged epoch or an agreed Ctrl-C,
  which every process raises together) is printed and ends every process with MPI_Abort; a
  process that dies is noticed by the launcher, one that hangs by the watchdog (timeout).
"""

from __future__ import annotations

import hashlib
import traceback
import warnings
from typing import Any

import numpy as np

from ..metrics import mergeable, state_to_device, state_to_host
from .comm import (
    Communicator,
    DistributedError,
    communicator_for,
    launched_by_mpi,
    report,
    world,
)
from .watchdog import check_timeout

#: rows of X and y whose bytes are compared across processes at start (evenly spaced)
CHECKSUM_ROWS = 64
_UNSET = object()


class DataParallel:
    """Options of a data-parallel fit: `model.fit(..., distributed=DataParallel(timeout=120))`.

    `timeout`: seconds a process waits in a collective (all-reduce, start-up check) for the
    others before the run is aborted with an error (None: wait for ever); by default
    MLPX_DISTRIBUTED_TIMEOUT or 60 s. `comm`: the communicator to use (default: MPI's world,
    NCCL over it on the cuda backend).
    """

    def __init__(self, timeout: Any = _UNSET, comm: Communicator | None = None) -> None:
        self.timeout = timeout if timeout is _UNSET else check_timeout(timeout)
        if comm is not None and not isinstance(comm, Communicator):
            raise TypeError(f"comm must be an mlpx.distributed Communicator, got {comm!r}")
        self.comm = comm

    def __repr__(self) -> str:
        t = "default" if self.timeout is _UNSET else self.timeout
        return f"DataParallel(timeout={t})"


def start(distributed: Any, model: Any, stacklevel: int = 2) -> ParallelRun | None:
    """The run's hooks, or None (after a warning) when this process is alone."""
    if distributed is True:
        options = DataParallel()
    elif isinstance(distributed, DataParallel):
        options = distributed
    else:
        raise TypeError(
            "distributed must be True, False or an mlpx.distributed.DataParallel(...), got "
            f"{distributed!r}")
    comm = options.comm
    if comm is None:
        mpi = world()
        if mpi is None or mpi.size == 1:
            warnings.warn(_alone_message(mpi), UserWarning, stacklevel=stacklevel + 1)
            return None
        comm = communicator_for(model.ops, mpi)
    if options.timeout is not _UNSET:
        comm.watchdog.timeout = options.timeout
    return ParallelRun(comm, model)


def _alone_message(mpi: Any) -> str:
    if mpi is not None:
        why = "MPI runs this script as a single process (mpirun -n 1)"
    elif launched_by_mpi():
        why = f"an MPI launcher started it but mpi4py is missing: {_install_hint()}"
    else:
        why = ("no MPI launcher started it; run it as mpirun -n N python script.py "
               f"({_install_hint()})")
    return f"fit(distributed=True): this process trains alone, as an ordinary fit: {why}"


def _install_hint() -> str:
    from .comm import INSTALL_HINT

    return INSTALL_HINT


class _Shard:
    """What layers see of the step in progress (Layer.batch_shard)."""

    __slots__ = ("start", "rows", "comm")

    def __init__(self, comm: Communicator) -> None:
        self.start, self.rows, self.comm = 0, 0, comm

    def allreduce_(self, array: Any) -> Any:
        return self.comm.allreduce_(array)


class ParallelRun:
    """The trainer's hooks (mlpx.training.SingleProcess) for one data-parallel fit."""

    def __init__(self, comm: Communicator, model: Any) -> None:
        self.comm, self.model = comm, model
        self.rank, self.size = comm.rank, comm.size
        self.lead = self.rank == 0
        self.shard = _Shard(comm)
        self._scale = 1.0
        self._flat: Any = None
        self._layers: list = []
        self._started = False  # past the start check: an error here is this rank's alone

    # ------------------------------------------------------------------------------ start
    def agree(self, setup: Any) -> Any:
        """Run `setup` here and compare every process's plan with rank 0's; raise on every
        process when one failed or differs."""
        error: BaseException | None = None
        try:
            plan = setup()
            check_plan(plan)
            mine: tuple = ("ok", fingerprint(self.model, plan))
        except Exception as e:
            plan, error = None, e
            mine = ("error", f"{type(e).__name__}: {e}")
        everyone = self.comm.allgather(mine)
        failed = [(r, msg) for r, (kind, msg) in enumerate(everyone) if kind == "error"]
        if failed:
            if error is not None:
                raise error
            who = "; ".join(f"rank {r}: {msg}" for r, msg in failed[:3])
            raise DistributedError(f"distributed fit: could not start on every rank ({who})")
        differences = compare([fp for _, fp in everyone])
        if differences:
            raise DistributedError(
                f"distributed fit: {'; '.join(differences)}. Every rank must call fit with the "
                "same X and y, the same model (architecture, dtype, seed=) and the same "
                "arguments")
        if not self.lead:
            plan.verbose = 0  # rank 0 alone shows progress
        self._started = True
        return plan

    def begin(self, trainer: Any, plan: Any) -> None:
        """Rank 0's state everywhere; layers learn about shards; the flat buffer."""
        model = self.model
        state = model.state_dict()
        for value in state.values():
            self.comm.broadcast_(value)
        opt_state = model.optimizer_.state_dict()
        for slot in opt_state["state"]:
            for value in slot.values():
                self.comm.broadcast_(value)
        scalars = self.comm.broadcast_object(
            {k: v for k, v in opt_state.items() if k != "state"})
        if not self.lead:
            model.load_state_dict(state)
            model.optimizer_.load_state_dict({**opt_state, **scalars})
            # a resumed epoch's partial loss and metric sums count once (rank 0's)
            trainer.loss_sum = 0.0
            trainer.metric_sums = [None] * len(plan.metrics)
        self._layers = [layer for _, layer in model.walk()]
        for layer in self._layers:
            layer.batch_shard = self.shard
        size = sum(int(np.prod(p.shape)) for p in model.parameters())
        self._flat = model.ops.zeros((size + 1,), model.dtype)  # + the stop flag

    # ------------------------------------------------------------------------------ steps
    def rows(self, lo: int, hi: int) -> tuple[int, int]:
        """This rank's contiguous share of the rows lo:hi (sizes differ by at most one)."""
        m = hi - lo
        return lo + self.rank * m // self.size, lo + (self.rank + 1) * m // self.size

    def begin_step(self, lo: int, hi: int, weights: np.ndarray | None = None) -> None:
        a, b = self.rows(lo, hi)
        self.shard.start, self.shard.rows = a - lo, hi - lo
        if weights is None:
            self._scale = (b - a) / (hi - lo)
        else:  # a weighted mean: the shard's share of the global batch's total weight
            whole = float(weights[lo:hi].sum())
            self._scale = float(weights[a:b].sum()) / whole if whole > 0 else 0.0
        self.comm.watchdog.context = f"the step on rows {lo}:{hi} of the epoch's order"

    def scale_output_grad(self, ops: Any, g: Any) -> None:
        if self._scale != 1.0 and g.shape[0]:
            ops.scale_(g, self._scale)

    def reduce_gradients(self, params: list, stop: bool) -> bool:
        ops, flat = self.model.ops, self._flat
        at = 0
        for p in params:
            n = int(np.prod(p.shape))
            ops.copy_into(flat[at : at + n], p.grad.reshape(-1))
            at += n
        flat[at] = 1.0 if stop else 0.0
        self.comm.allreduce_(flat)
        at = 0
        for p in params:
            n = int(np.prod(p.shape))
            ops.copy_into(p.grad, flat[at : at + n].reshape(p.shape))
            at += n
        self.comm.wait()
        return ops.to_float(flat[at]) > 0

    # ----------------------------------------------------------------------------- epochs
    def total(self, value: float) -> float:
        buf = np.array([value], np.float64)
        _host_comm(self.comm).allreduce_(buf)
        return float(buf[0])

    def any(self, flag: bool) -> bool:
        return self.total(1.0 if flag else 0.0) > 0

    def merge_metric_sums(self, ops: Any, metrics: list, sums: list) -> list:
        """Every process's metric sums (host copies, gathered) merged in rank order, so that
        every process holds the same sums, those of all the rows the processes took."""
        if not metrics:
            return sums
        mine = [state_to_host(ops, s) for s in sums]
        everyone = _host_comm(self.comm).allgather(mine)
        merged = []
        for i, metric in enumerate(metrics):
            state = None
            for theirs in everyone:
                state = metric.merge(ops, state, state_to_device(ops, theirs[i]))
            merged.append(state)
        return merged

    # ------------------------------------------------------------------------------- end
    def failed(self, error: BaseException, collective: bool) -> None:
        if collective or not self._started:
            return  # every rank raises an error at the same point: nobody is left waiting
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        report(f"{text}mlpx.distributed: rank {self.rank} of {self.size} raised "
               f"{type(error).__name__} during fit; the other ranks cannot go on without it: "
               "aborting every rank")
        self.comm.abort(1)

    def end(self) -> None:
        for layer in self._layers:
            layer.batch_shard = None
        self._layers = []
        self.comm.watchdog.context = ""


def _host_comm(comm: Communicator) -> Communicator:
    """The communicator that reduces host arrays (NCCL's MPI underneath)."""
    return getattr(comm, "mpi", comm)


# ------------------------------------------------------------------------- the start check
def check_plan(plan: Any) -> None:
    """What a single-process fit allows but a data-parallel one cannot do."""
    odd = [m.name for m in plan.metrics if not mergeable(m)]
    if odd:
        raise ValueError(
            f"fit(distributed=True) combines the processes' metric sums at the end of each "
            f"epoch; metric(s) {odd} define no merge(ops, a, b): define it (see "
            "mlpx.metrics.Metric.merge) or leave them out of metrics="
        )


def _summary(a: Any) -> tuple:
    """Shape, dtype and a checksum of CHECKSUM_ROWS evenly spaced rows of an array."""
    n = int(a.shape[0]) if a.ndim else 0
    rows = np.unique(np.linspace(0, max(n - 1, 0), min(n, CHECKSUM_ROWS)).astype(np.int64))
    sample = a[rows] if n else a
    sample = np.ascontiguousarray(sample.get() if hasattr(sample, "get") else sample)
    digest = hashlib.sha1(sample.tobytes()).hexdigest()[:12]
    return tuple(int(d) for d in a.shape), str(np.dtype(a.dtype)), digest


def fingerprint(model: Any, plan: Any) -> dict[str, Any]:
    """What must be the same on every rank, as plain comparable values."""
    fp: dict[str, Any] = {
        "backend": model.ops.name,
        "model": model.get_config(),
        "X": _summary(plan.data[0]),
        "y": _summary(plan.data[1]),
        "validation data": None if plan.val is None else (_summary(plan.val[0]),
                                                          _summary(plan.val[1])),
        "loss": plan.loss.name,
        "optimizer": plan.optimizer.get_config(),
        "epochs": plan.epochs, "batch_size": plan.batch_size, "shuffle": plan.shuffle,
        "clipping": (plan.clipper.clip_norm, plan.clipper.clip_value),
        "run position": (plan.fit_index, plan.epoch, plan.step, plan.resumed),
        "metrics": [m.name for m in plan.metrics],
        "sample weights": None if plan.weights is None else _summary(plan.weights),
        "validation sample weights": None if plan.val_weights is None else
        _summary(plan.val_weights),
        "validation_freq": sorted(plan.validation_freq) if isinstance(
            plan.validation_freq, frozenset) else plan.validation_freq,
    }
    return fp


_WHAT = {"X": "X (shape, dtype, checksum of sampled rows)",
         "y": "y (shape, dtype, checksum of sampled rows)"}


def compare(prints: list[dict[str, Any]]) -> list[str]:
    """A sentence for each rank whose fingerprint differs from rank 0's (at most three)."""
    out = []
    base = prints[0]
    for r, fp in enumerate(prints[1:], start=1):
        for key, value in fp.items():
            if value != base.get(key):
                out.append(_difference(r, key, value, base.get(key)))
                break
        if len(out) == 3:
            break
    return out


def _difference(rank: int, key: str, mine: Any, zero: Any) -> str:
    if key == "model" and isinstance(mine, dict) and isinstance(zero, dict):
        for k in ("seed", "dtype", "input_dim", "layers"):
            if mine.get(k) != zero.get(k):
                if k == "layers":
                    return f"rank {rank}'s model has other layers than rank 0's"
                return f"rank {rank}'s model {k} is {mine.get(k)!r}, rank 0's {zero.get(k)!r}"
    what = _WHAT.get(key, key)
    return f"rank {rank}'s {what} is {mine!r}, rank 0's {zero!r}"
