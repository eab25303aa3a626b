"""Paired A/B in one process: `fit` with one compiled step per call (MLPX_COMPILED_EPOCH=0)
against chunks of compiled steps per call (mlpx.backends.compiled_epoch), alternated block
by block:

    MLPX_NUM_THREADS=2 python benchmarks/compiled_epoch_ab.py --sizes 784,256,128,10 \\
        --batch 32 --blocks 20

Each block is one `fit` of a few epochs under one setting (the order of the two alternates
between blocks); every epoch is timed (from on_epoch_begin to on_epoch_end, as
`mlpx bench` times them) and the first epoch of each fit is left out as its warm-up. Prints
the best epoch's time per step of each setting (the minimum: on a shared machine the slow
epochs are other processes' time) and their ratio. Both settings train the same model from
the same weights on the same data: the results are bit for bit the same, only the time
differs.

With `--direct`, no `fit` around the steps: an epoch's steps but the last as that many
compiled step calls fed by the batch source (`source.epoch(order)`, as `fit` feeds them)
against one chunk call (`CompiledEpoch.run`), alternated, best block of each.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import mlpx
from mlpx.training import Callback


class _EpochTimer(Callback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self.t0 = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if epoch > 0:  # the first epoch of a fit: warm-up (buffers, routes)
            self.times.append(time.perf_counter() - self.t0)


def _fit_once(model, X, y, B: int, epochs: int, chunked: bool) -> float:
    os.environ["MLPX_COMPILED_EPOCH"] = "1" if chunked else "0"
    timer = _EpochTimer()
    model.fit(X, y, loss="cross_entropy", optimizer="sgd", lr=0.01, epochs=epochs,
              batch_size=B, verbose=0, callbacks=[timer])
    return min(timer.times)


def _direct(model, X, y, B: int, steps: int, blocks: int) -> tuple[float, float]:
    """Best time per step of (one compiled call per step, one chunk), without `fit`."""
    from mlpx.backends import compiled_epoch, compiled_step

    model.fit(X, y, loss="cross_entropy", optimizer="sgd", lr=0.01, epochs=1, verbose=0,
              batch_size=B)
    step = compiled_step.plan(model, model.loss_, model.optimizer_)
    source = model.ops.batch_source(X, y, B, np.float32)
    g = np.empty((B, model.output_dim), np.float32)
    chunks = compiled_epoch.plan(step, source, model.loss_, list(model.metrics_), {B: g})
    if chunks is None:
        raise SystemExit("the chunks do not cover this model here (MLPX_COMPILED_EPOCH=0?)")
    order = np.random.default_rng(1).permutation(B * steps)

    def per_step() -> None:
        for s, (xb, yb) in enumerate(source.epoch(order)):
            if s == steps - 1:
                break
            step.run(xb, yb, g, 0.01)

    def chunk() -> None:
        chunks.run(order, 0, steps - 1, 0.0, 0.01, [None])

    per_step()
    chunk()
    best = {per_step: float("inf"), chunk: float("inf")}
    for k in range(blocks):
        for f in ((per_step, chunk) if k % 2 == 0 else (chunk, per_step)):
            t = time.perf_counter()
            f()
            best[f] = min(best[f], (time.perf_counter() - t) / (steps - 1))
    return best[per_step], best[chunk]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="784,256,128,10")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=64, help="steps per epoch")
    p.add_argument("--epochs", type=int, default=4, help="epochs per block (first: warm-up)")
    p.add_argument("--blocks", type=int, default=20, help="alternated blocks of each setting")
    p.add_argument("--direct", action="store_true", help="the steps alone, without fit")
    args = p.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    B, steps = args.batch, args.steps
    rng = np.random.default_rng(0)
    X = rng.standard_normal((B * steps, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], B * steps)
    model = mlpx.MLP(sizes, activation="relu", backend="cpu", seed=0)
    if args.direct:
        old, new = _direct(model, X, y, B, steps, args.blocks)
        print(f"sizes {args.sizes}, batch {B}, {steps - 1} steps, no fit: one step per call "
              f"{old * 1e3:.3f} ms/step, one chunk {new * 1e3:.3f} ms/step, "
              f"{(old - new) * 1e6:.0f} us saved per step")
        return 0
    before = os.environ.get("MLPX_COMPILED_EPOCH")
    best = {False: float("inf"), True: float("inf")}
    try:
        for k in range(args.blocks):
            for chunked in ((False, True) if k % 2 == 0 else (True, False)):
                epoch = _fit_once(model, X, y, B, args.epochs, chunked)
                best[chunked] = min(best[chunked], epoch / steps)
    finally:
        if before is None:
            os.environ.pop("MLPX_COMPILED_EPOCH", None)
        else:
            os.environ["MLPX_COMPILED_EPOCH"] = before
    old, new = best[False], best[True]
    print(f"sizes {args.sizes}, batch {B}, {steps} steps an epoch: one step per call "
          f"{old * 1e3:.3f} ms/step, chunks {new * 1e3:.3f} ms/step, {old / new:.2f}x faster")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
