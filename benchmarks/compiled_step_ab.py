"""Paired A/B in one process: the layer-by-layer training step against the compiled step
(mlpx.backends.compiled_step), on one model, alternated block by block:

    MLPX_NUM_THREADS=2 python benchmarks/compiled_step_ab.py --sizes 784,256,128,10 \\
        --batch 32 --blocks 30

Both steps update the same model (the same GEMMs, kernels and buffers), so the only
difference is the Python between the ops. Prints the best block's time per step of each
(the minimum: on a shared machine the slow blocks are other processes' time), their ratio,
and each as a multiple of the step's GEMMs alone ("gemm x", as in `mlpx bench`), timed as a
third variant in the same alternation.

`--one-thread all` (or a comma-separated list of shape classes, e.g. "nt 2^23 narrow") runs
those GEMMs' measured routes on one thread, as where the routes chose one thread (before,
such a batch left the compiled step for the layer path):

    MLPX_NUM_THREADS=2 python benchmarks/compiled_step_ab.py --sizes 784,1024,1024,10 \
        --batch 1024 --one-thread "nt 2^23 narrow"
Across processes, `python benchmarks/blas_ab.py --batch B MLPX_COMPILED_STEP=0
MLPX_COMPILED_STEP=1` compares whole `fit` runs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import mlpx
from mlpx.backends import compiled_step
from mlpx.commands.bench_worker import step_gemms


def _force_one_thread(classes: list[str]) -> None:
    """The GEMMs of these shape classes ("all": every GEMM) take their route on one thread."""
    from mlpx.backends import gemm_routes

    measured_route = gemm_routes.route_for

    def route_for(libraries, a, b, out, trans_a, trans_b):  # type: ignore[no-untyped-def]
        route = measured_route(libraries, a, b, out, trans_a, trans_b)
        m, n = out.shape
        k = a.shape[0] if trans_a else a.shape[1]
        cls = gemm_routes.shape_class(m, n, k, trans_a, trans_b,
                                      gemm_routes.page_strided(b, trans_b))
        if "all" in classes or cls in classes:
            route = gemm_routes.Route(route.path, one_thread=True, pad=route.pad)
        return route

    gemm_routes.route_for = route_for
    gemm_routes.forget()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="784,256,128,10")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--blocks", type=int, default=30, help="alternated blocks of each step")
    p.add_argument("--block-time", type=float, default=0.05, help="seconds per block, about")
    p.add_argument("--one-thread", default="",
                   help='"all", or shape classes (comma-separated) whose routes run on one '
                        "thread")
    args = p.parse_args(argv)
    if args.one_thread:
        _force_one_thread([c.strip() for c in args.one_thread.split(",")])
    sizes = [int(s) for s in args.sizes.split(",")]
    B = args.batch
    rng = np.random.default_rng(0)
    X = rng.standard_normal((B, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], B)
    model = mlpx.MLP(sizes, activation="relu", backend="cpu", seed=0)
    model.fit(X, y, loss="cross_entropy", optimizer="sgd", lr=0.01, epochs=1, verbose=0,
              batch_size=B)
    step = compiled_step.plan(model, model.loss_, model.optimizer_)
    if step is None:
        p.error("the compiled step does not cover this model here (MLPX_COMPILED_STEP=0?)")
    g = np.empty((B, sizes[-1]), np.float32)

    def layer_path() -> None:
        out = model.forward(X, training=True)
        model.loss_(model.ops, out, y, g)
        model.backward(g)
        model.optimizer_.step()

    def compiled() -> None:
        step.run(X, y, g, model.optimizer_.lr)

    gemms = []  # the step's GEMMs alone, through the backend's matmul, as `mlpx bench`
    for _label, (sa, sb, so), ta, tb in step_gemms(sizes, B):
        gemms.append((rng.standard_normal(sa).astype(np.float32),
                      rng.standard_normal(sb).astype(np.float32), model.ops.empty(so, np.float32),
                      ta, tb))

    def gemms_alone() -> None:
        for a, b, o, ta, tb in gemms:
            model.ops.matmul(a, b, out=o, trans_a=ta, trans_b=tb)

    steps = {"layer path": layer_path, "compiled": compiled, "gemms": gemms_alone}
    for f in steps.values():
        f()
    t = time.perf_counter()
    layer_path()
    reps = max(3, int(args.block_time / max(time.perf_counter() - t, 1e-6)))
    best = dict.fromkeys(steps, float("inf"))
    names = list(steps)
    for k in range(args.blocks):
        for name in names[k % 3:] + names[:k % 3]:  # each first in turn
            f = steps[name]
            t = time.perf_counter()
            for _ in range(reps):
                f()
            best[name] = min(best[name], (time.perf_counter() - t) / reps)
    old, new, gemm = best["layer path"], best["compiled"], best["gemms"]
    if args.one_thread:
        from mlpx.backends import gemm_routes

        print("routes:", "; ".join(f"{c}: {r}" for c, r in gemm_routes.chosen().items()),
              f"(one thread: {args.one_thread})")
    print(f"sizes {args.sizes}, batch {B}, GEMMs on {model.ops.blas}: layer path "
          f"{old * 1e3:.3f} ms ({old / gemm:.2f}x GEMMs), compiled {new * 1e3:.3f} ms "
          f"({new / gemm:.2f}x GEMMs), {old / new:.2f}x faster; GEMMs alone {gemm * 1e3:.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
