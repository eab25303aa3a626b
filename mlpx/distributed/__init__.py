"""Data-parallel training across processes (MPI) and GPUs (NCCL).

A script that calls `model.fit(X, y, ..., distributed=True)` with the same X and y in every
process, started as `mpirun -n 4 python script.py`, trains one model: each process takes its
shard of every global batch, gradients are summed with one all-reduce per step, and every
process ends with the weights a single process would reach with the same batch size and seed.
See docs/distributed.md.

    import mlpx
    from mlpx import distributed as dist

    model = mlpx.MLP([784, 256, 10], seed=0)
    model.fit(X, y, loss="cross_entropy", batch_size=1024, epochs=5, distributed=True)
    if dist.rank() == 0:
        model.save("model.safetensors")

`rank()`, `size()` and `local_rank()` answer without starting MPI when no launcher started
the process (then 0, 1 and 0).
"""

from __future__ import annotations

import os

from .comm import (
    Communicator,
    DistributedError,
    MPICommunicator,
    NCCLCommunicator,
    communicator_for,
    world,
)
from .data_parallel import DataParallel

#: launcher variables holding the process's rank among those on its host
_LOCAL_RANK_VARIABLES = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "PMIX_LOCAL_RANK",
                         "SLURM_LOCALID", "LOCAL_RANK")


def rank() -> int:
    """This process's rank in the MPI world (0 when it runs alone)."""
    comm = world()
    return 0 if comm is None else comm.rank


def size() -> int:
    """The number of processes in the MPI world (1 when this one runs alone)."""
    comm = world()
    return 1 if comm is None else comm.size


def local_rank() -> int:
    """This process's rank among the processes on its host (to pick its GPU:
    `backend=f"cuda:{local_rank()}"`); 0 when it runs alone."""
    for name in _LOCAL_RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.strip().isdigit():
            return int(value)
    comm = world()
    if comm is None:
        return 0
    if comm.local_rank is None:
        from mpi4py import MPI

        host = comm.comm.Split_type(MPI.COMM_TYPE_SHARED)
        comm.local_rank = host.Get_rank()
        host.Free()
    return comm.local_rank


__all__ = ["rank", "size", "local_rank", "DataParallel", "DistributedError", "Communicator",
           "MPICommunicator", "NCCLCommunicator", "communicator_for", "world"]
