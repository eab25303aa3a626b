"""Communicators: the collective operations a data-parallel fit needs, on MPI or NCCL.

`Communicator` names the operations; `MPICommunicator` runs them with mpi4py between CPU
processes (on one host or many), `NCCLCommunicator` runs the array reductions with NCCL
(through CuPy) between GPUs and everything else over MPI, which also starts it (NCCL needs
its unique id sent to every rank). `communicator_for(ops)` picks the engine from the backend:
one code path for both.

Every blocking operation runs under the watchdog (mlpx.distributed.watchdog), so a rank that
died or stopped calling collectives makes the others stop with an error instead of waiting
for ever.
"""

from __future__ import annotations

import os
import sys
import time
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from .watchdog import Watchdog

#: environment variables set by MPI launchers (MPICH/Hydra, Intel MPI, Open MPI, PMIx, Slurm
#: with PMI): when one is present the process was started by mpirun/mpiexec/srun
LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK",
                      "MPI_LOCALNRANKS")

INSTALL_HINT = "pip install 'mlpx[mpi]' (mpi4py and the MPICH wheel)"


class DistributedError(RuntimeError):
    """A data-parallel run cannot start or go on (another rank failed, differs, or hangs)."""


class Communicator(ABC):
    """Collective operations among `size` processes; this one is `rank`."""

    engine = "none"

    def __init__(self, rank: int, size: int, watchdog: Watchdog | None = None) -> None:
        self.rank, self.size = int(rank), int(size)
        self.watchdog = watchdog or Watchdog(None, lambda message: None)

    @abstractmethod
    def allreduce_(self, array: Any) -> Any:
        """Sum `array` (a backend array) over all ranks, in place."""

    @abstractmethod
    def broadcast_(self, array: np.ndarray, root: int = 0) -> np.ndarray:
        """Overwrite the host array `array` with root's, in place."""

    @abstractmethod
    def allgather(self, obj: Any) -> list[Any]:
        """Every rank's `obj` (small picklable values), in rank order."""

    @abstractmethod
    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        """Root's `obj` (a small picklable value) on every rank."""

    def wait(self) -> None:  # noqa: B027 (host engines have nothing queued)
        """Block until the reductions queued so far are complete (device engines)."""

    @abstractmethod
    def abort(self, code: int = 1) -> None:
        """End every rank of the run now (MPI_Abort): for failures the others cannot see."""


class MPICommunicator(Communicator):
    """MPI collectives through mpi4py on host (NumPy) arrays."""

    engine = "mpi"

    def __init__(self, comm: Any, watchdog: Watchdog | None = None) -> None:
        from mpi4py import MPI

        self._MPI = MPI
        self.comm = comm
        self.local_rank: int | None = None  # found on first use (mlpx.distributed.local_rank)
        super().__init__(comm.Get_rank(), comm.Get_size(), watchdog)

    def allreduce_(self, array):
        with self.watchdog.waiting("the gradient all-reduce"):
            self.comm.Allreduce(self._MPI.IN_PLACE, array, op=self._MPI.SUM)
        return array

    def broadcast_(self, array, root=0):
        with self.watchdog.waiting("the broadcast of the model state"):
            self.comm.Bcast(array, root=root)
        return array

    def allgather(self, obj):
        with self.watchdog.waiting("the start-up check of the ranks' data and model"):
            return self.comm.allgather(obj)

    def broadcast_object(self, obj, root=0):
        with self.watchdog.waiting("a broadcast from rank 0"):
            return self.comm.bcast(obj, root=root)

    def abort(self, code=1):
        self.comm.Abort(code)
        os._exit(code)  # MPI_Abort may return before the launcher ends this process


#: NCCL's data type codes (ncclDataType_t) for the dtypes mlpx reduces
NCCL_DTYPES = {"float32": 7, "float64": 8, "float16": 6, "int32": 2, "int64": 4, "uint8": 1}
NCCL_SUM = 0


class NCCLCommunicator(Communicator):
    """Array reductions with NCCL on CuPy arrays (one GPU per rank, on the current device);
    broadcasts, checks and abort over the MPI communicator that started it. `nccl` and
    `stream` default to CuPy's (`cupy.cuda.nccl`, the current stream); tests pass fakes."""

    engine = "nccl"

    def __init__(self, mpi: MPICommunicator, nccl: Any = None, stream: Any = None) -> None:
        if nccl is None:
            from cupy.cuda import nccl
        self.mpi = mpi
        self._nccl = nccl
        self._stream = stream
        super().__init__(mpi.rank, mpi.size, mpi.watchdog)
        uid = nccl.get_unique_id() if mpi.rank == 0 else None
        uid = mpi.broadcast_object(uid)
        with self.watchdog.waiting("the NCCL start-up"):
            self.comm = nccl.NcclCommunicator(mpi.size, uid, mpi.rank)

    def _stream_ptr(self) -> int:
        if self._stream is not None:
            return int(self._stream.ptr)
        import cupy

        return int(cupy.cuda.get_current_stream().ptr)

    def allreduce_(self, array):
        code = NCCL_DTYPES.get(np.dtype(array.dtype).name)
        if code is None or not array.flags.c_contiguous:
            raise TypeError(
                f"NCCL all-reduce takes C-contiguous {', '.join(NCCL_DTYPES)} arrays, got "
                f"{array.dtype} (contiguous: {array.flags.c_contiguous})")
        ptr = int(array.data.ptr)
        # queued on the compute stream: the optimiser step after it waits on the device,
        # not on the host
        self.comm.allReduce(ptr, ptr, int(array.size), code, NCCL_SUM, self._stream_ptr())
        return array

    def broadcast_(self, array, root=0):
        return self.mpi.broadcast_(array, root)

    def allgather(self, obj):
        return self.mpi.allgather(obj)

    def broadcast_object(self, obj, root=0):
        return self.mpi.broadcast_object(obj, root)

    def wait(self):
        import cupy

        with self.watchdog.waiting("the NCCL all-reduce"):
            (self._stream or cupy.cuda.get_current_stream()).synchronize()

    def abort(self, code=1):
        try:
            self.comm.abort()
        finally:
            self.mpi.abort(code)


# ------------------------------------------------------------------------------ the world
_WORLD: dict[str, Any] = {}


def launched_by_mpi() -> bool:
    """True when an MPI launcher started this process, or the script imported mpi4py.MPI."""
    return "mpi4py.MPI" in sys.modules or any(v in os.environ for v in LAUNCHER_VARIABLES)


def world() -> MPICommunicator | None:
    """MPI_COMM_WORLD as a communicator, or None when this process runs alone (not started
    by an MPI launcher, or mpi4py missing). Importing mpi4py initialises MPI, so that is only
    done under a launcher (or when the script already did)."""
    if "world" in _WORLD:
        return _WORLD["world"]
    comm = None
    if launched_by_mpi():
        try:
            from mpi4py import MPI
        except ImportError:
            comm = None
        else:
            from .watchdog import default_timeout

            holder: dict[str, Any] = {}
            dog = Watchdog(default_timeout(), lambda message: _die(holder, message))
            comm = MPICommunicator(MPI.COMM_WORLD, dog)
            holder["comm"] = comm
            if comm.size > 1:
                _abort_on_uncaught_exceptions(comm)
    _WORLD["world"] = comm
    return comm


#: seconds to let the launcher forward a failing rank's last words before MPI_Abort ends it
REPORT_GRACE_S = 0.5


def report(message: str) -> None:
    """Write `message` to stderr in one piece and give the launcher time to forward it."""
    sys.stderr.write(message.rstrip("\n") + "\n")
    sys.stderr.flush()
    time.sleep(REPORT_GRACE_S)


def _die(holder: dict[str, Any], message: str) -> None:
    comm = holder.get("comm")
    rank = comm.rank if comm is not None else "?"
    report(f"mlpx.distributed: rank {rank}: {message}")
    if comm is not None:
        comm.abort(1)
    os._exit(1)


def _abort_on_uncaught_exceptions(comm: MPICommunicator) -> None:
    """An exception that ends one rank's script would leave the others waiting in a
    collective: print it, then abort every rank (what `python -m mpi4py` does)."""
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        report(f"mlpx.distributed: rank {comm.rank} of {comm.size} ended with "
               f"{kind.__name__}; aborting every rank")
        comm.abort(1)

    sys.excepthook = hook


def nccl_install_hint(cuda_major: int | None) -> str:
    """How to install NCCL for CuPy built against CUDA `cuda_major` (the NCCL wheels are
    per CUDA major version)."""
    wheel = f"nvidia-nccl-cu{cuda_major}" if cuda_major else "nvidia-nccl-cu<CUDA major>"
    return f"pip install {wheel}, or python -m cupyx.tools.install_library --library nccl"


def _cuda_major() -> int | None:
    """The CUDA major version of CuPy's runtime, None where it cannot be read."""
    try:
        import cupy

        return int(cupy.cuda.runtime.runtimeGetVersion()) // 1000
    except Exception:  # noqa: BLE001 - only a hint depends on it
        return None


def communicator_for(ops: Any, mpi: MPICommunicator) -> Communicator:
    """The engine for a backend: NCCL for the CUDA backend (one communicator per device,
    kept for later fits), MPI for host backends."""
    if getattr(ops, "name", None) != "cuda":
        return mpi
    key = ("nccl", getattr(ops, "device_id", 0))
    if key not in _WORLD:
        try:
            from cupy.cuda import nccl

            # CuPy imports its NCCL module without the library and only flags it
            missing = None if getattr(nccl, "available", True) else "libnccl was not found"
        except ImportError as e:
            missing = str(e)
        if missing:
            raise DistributedError(
                "distributed training on the cuda backend reduces gradients with NCCL, which "
                f"CuPy could not load here ({missing}); install NCCL for CuPy "
                f"({nccl_install_hint(_cuda_major())}) or train on backend='cpu'")
        import cupy

        with cupy.cuda.Device(key[1]):  # NCCL binds the communicator to the current device
            _WORLD[key] = NCCLCommunicator(mpi)
    return _WORLD[key]
