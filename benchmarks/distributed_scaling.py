"""Scaling efficiency of data-parallel fits on the CPU: samples/s with N ranks / (N x 1 rank).

    python benchmarks/distributed_scaling.py --ranks 1,2,4 --per-rank-batch 256

launches `mpiexec -n N` for each N (weak scaling: every rank keeps `--per-rank-batch` rows per
step, so the global batch is N times that), times `--steps` training steps after one warm-up
epoch, and prints a Markdown table. Each rank is held to `--threads` BLAS/Numba threads, so N
ranks use N x threads cores: on a machine with fewer cores the ranks share them and the
efficiency measures that sharing, not the communication alone; the table says how many cores
there are. Run as `mpiexec -n N python benchmarks/distributed_scaling.py --worker ...` it is
one rank of such a measurement and rank 0 prints a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=_ints, default=[1, 2, 4])
    p.add_argument("--sizes", type=_ints, default=[784, 1024, 1024, 10],
                   help="layer widths, input first (default: mlpx bench's model)")
    p.add_argument("--per-rank-batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--threads", type=int, default=1, help="BLAS/Numba threads per rank")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def worker(args: argparse.Namespace) -> None:
    import numpy as np

    import mlpx
    from mlpx import distributed as dist

    n_ranks = dist.size()
    batch = args.per_rank_batch * n_ranks
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch * args.steps, args.sizes[0]), dtype=np.float32)
    y = rng.integers(0, args.sizes[-1], len(X))
    model = mlpx.MLP(args.sizes, seed=0, dtype=args.dtype)
    fit = dict(loss="cross_entropy", optimizer="sgd", lr=0.01, batch_size=batch, verbose=0,
               distributed=n_ranks > 1)
    model.fit(X[:batch], y[:batch], epochs=1, **fit)  # warm-up: kernels, buffers
    t0 = time.perf_counter()
    model.fit(X, y, epochs=1, **fit)
    elapsed = time.perf_counter() - t0
    reduce_ms = float("nan")
    if n_ranks > 1:  # the step's all-reduce alone: the flat gradient buffer (+ the stop flag)
        buf = np.zeros(model.count_params() + 1, dtype=args.dtype)
        comm = dist.world()
        comm.allreduce_(buf)
        t1 = time.perf_counter()
        for _ in range(10):
            comm.allreduce_(buf)
        reduce_ms = (time.perf_counter() - t1) / 10 * 1e3
    if dist.rank() == 0:
        print(json.dumps({"ranks": n_ranks, "global_batch": batch, "steps": args.steps,
                          "seconds": elapsed, "samples_per_s": len(X) / elapsed,
                          "step_ms": elapsed / args.steps * 1e3, "allreduce_ms": reduce_ms}))


def _mpiexec() -> str:
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        raise SystemExit("no mpiexec: pip install 'mlpx[mpi]'")
    return found


def measure(args: argparse.Namespace, n: int) -> dict:
    t = str(args.threads)
    env = dict(os.environ, OMP_NUM_THREADS=t, OPENBLAS_NUM_THREADS=t, MKL_NUM_THREADS=t,
               NUMBA_NUM_THREADS=t, OMPI_ALLOW_RUN_AS_ROOT="1",
               OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [_mpiexec(), "-n", str(n), sys.executable, str(Path(__file__).resolve()),
           "--worker", "--sizes", ",".join(map(str, args.sizes)),
           "--per-rank-batch", str(args.per_rank_batch), "--steps", str(args.steps),
           "--dtype", args.dtype]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict], args: argparse.Namespace) -> str:
    one = next((r for r in rows if r["ranks"] == 1), None)
    lines = [f"{os.cpu_count()} cores; model {'-'.join(map(str, args.sizes))} {args.dtype}, "
             f"{args.per_rank_batch} rows per rank per step, {args.threads} thread(s) per rank",
             "", "| ranks | global batch | samples/s | efficiency | step ms | all-reduce ms |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        eff = "" if one is None else r["samples_per_s"] / (r["ranks"] * one["samples_per_s"])
        red = "-" if r["allreduce_ms"] != r["allreduce_ms"] else f"{r['allreduce_ms']:.2f}"
        lines.append(f"| {r['ranks']} | {r['global_batch']} | {r['samples_per_s']:.0f} | "
                     f"{'' if one is None else f'{eff:.2f}'} | {r['step_ms']:.1f} | {red} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.worker:
        worker(args)
        return
    rows = [measure(args, n) for n in args.ranks]
    print(table(rows, args))


if __name__ == "__main__":
    main()
