"""One mlpx measurement in its own process; prints one JSON object on stdout.

`mlpx bench` starts this module once per (batch size, round), and each peer framework's
script (`mlpx/peers/`) in processes of its own, so that two libraries' thread pools never
share a process.

    python -m mlpx.commands.bench_worker --backend cpu --dtype float32 --sizes 784,1024,1024,10 \
        --batch 1024

The rules are those of the peer scripts: standard-normal inputs and uniform labels from
`numpy.random.default_rng(0)`; one epoch = ceil(epoch_samples / batch) shuffled steps; one
warm-up epoch (kernels loaded or compiled, buffers allocated), then at least `--epochs`
timed epochs and `--min-time` seconds of `Sequential.fit` (gather, forward, fused loss,
backward, SGD update; the loss read once per epoch); samples/s = samples / time. Then
`predict` latency at batch 1 and throughput at `--infer-batch`, and the step's GEMMs alone
with the backend's own `matmul` on preallocated outputs (the framework-free bound).
`--profile` adds the time of every backend op of the step (see mlpx.commands.bench_profile).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

#: the small model whose batch-1 latency every run also reports
SMALL_SIZES = [784, 256, 128, 10]


def step_flops(sizes: list[int], batch: int) -> dict[str, int]:
    """GEMM FLOPs of one training step and of one inference pass.

    Forward: 2*B*in*out per layer. Backward: dW = x^T delta (2*B*in*out) for every layer and
    dX = delta W^T (2*B*in*out) for every layer but the first (its input needs no gradient).
    Elementwise work (bias, activation, loss, update) is not counted.
    """
    pairs = list(zip(sizes[:-1], sizes[1:], strict=True))
    fwd = sum(2 * batch * i * o for i, o in pairs)
    dw = fwd
    dx = fwd - 2 * batch * pairs[0][0] * pairs[0][1]
    return {"train": fwd + dw + dx, "infer": fwd}


def step_gemms(sizes: list[int], batch: int) -> list[tuple[str, tuple, bool, bool]]:
    """The GEMMs of one step as (label, (a_shape, b_shape, out_shape), trans_a, trans_b)."""
    out = []
    for li, (i, o) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        out.append((f"L{li} fwd", ((batch, i), (i, o), (batch, o)), False, False))
        out.append((f"L{li} dW", ((batch, i), (batch, o), (i, o)), True, False))
        if li > 0:
            out.append((f"L{li} dX", ((batch, o), (i, o), (batch, i)), False, True))
    return out


def _median_time(fn: Callable[[], Any], sync: Callable[[], None], min_time: float,
                 min_reps: int = 5, max_reps: int = 10000) -> float:
    """Median wall time of fn() (after one warm-up call) over repetitions lasting at least
    `min_time` in all."""
    fn()
    sync()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps and (
        len(times) < min_reps or time.perf_counter() - start < min_time
    ):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_rss() -> int:
    """Peak resident set size of this process in bytes (Linux reports KiB)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


def epoch_plan(batch: int, epoch_samples: int) -> tuple[int, int]:
    """(steps per epoch, samples per epoch): ceil(epoch_samples / batch) whole batches, the
    rule the peer scripts follow too."""
    steps = max(1, -(-epoch_samples // batch))
    return steps, steps * batch


def _data(n: int, sizes: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    # Standard-normal inputs and uniform labels: magnitudes of real standardised data. The
    # peer scripts draw the same arrays.
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], size=n)
    return X, y


# ------------------------------------------------------------------------------------ mlpx
def measure_mlpx(args: argparse.Namespace) -> dict[str, Any]:
    import mlpx
    from mlpx.precision import get_policy
    from mlpx.training import Callback

    sizes, B = args.sizes, args.batch
    ops = mlpx.get_backend(args.backend)
    sync = ops.synchronize
    policy = get_policy(args.dtype)  # mixed_bfloat16 stores and feeds float32
    dtype = policy.variable_dtype
    steps, n = epoch_plan(B, args.epoch_samples)
    X, y = _data(n, sizes)
    X = X.astype(dtype)
    if ops.name != "cpu":  # keep the data on the device, as a GPU user would
        X, y = ops.asarray(X), ops.asarray(y)

    traced_peak = None
    if ops.name == "cpu" and args.tracemalloc:
        import tracemalloc

        tracemalloc.start()
    model = mlpx.MLP(sizes, activation=args.activation, backend=ops, dtype=policy, seed=0)

    class EpochTimer(Callback):
        """Epoch 0 is the warm-up (kernels loaded or compiled, buffers allocated); the timed
        epochs follow in the same `fit`, as in one training run."""

        def __init__(self) -> None:
            self.times: list[float] = []
            self.warmup_s = 0.0
            self.t0 = self.start = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            sync()
            self.t0 = time.perf_counter()
            if epoch == 1:
                self.start = self.t0

        def on_epoch_end(self, epoch, logs=None):
            # fit reads the epoch loss before this hook: the device work is finished
            dt = time.perf_counter() - self.t0
            if epoch == 0:
                self.warmup_s = dt
                return
            self.times.append(dt)
            if len(self.times) >= args.epochs and \
                    time.perf_counter() - self.start >= args.min_time:
                self.model.stop_training = True

    timer = EpochTimer()
    model.fit(X, y, loss="cross_entropy", optimizer="sgd", lr=args.lr, epochs=10**6,
              batch_size=B, verbose=0, callbacks=[timer])
    warmup_s = timer.warmup_s
    if ops.name == "cpu" and args.tracemalloc:
        traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    times = timer.times
    step_s = sum(times) / (steps * len(times))
    final_loss = float(model.history_.loss[-1])
    # Peak RSS of training, before inference and the GEMM-only arrays below add theirs.
    peak_rss = _peak_rss()

    fl = step_flops(sizes, B)
    result: dict[str, Any] = {
        "impl": "mlpx",
        "backend": ops.name,
        "step_s": step_s,
        "epoch_s": times,
        "warmup_s": warmup_s,
        "train_samples_per_s": n * len(times) / sum(times),
        "step_gflops": fl["train"] / step_s / 1e9,
        "steps_per_epoch": steps,
        "epochs_timed": len(times),
        "final_loss": final_loss,
        "peak_rss_bytes": peak_rss,
        "traced_peak_bytes": traced_peak,
        "blas": _gemm_path(ops, dtype),  # the cpu backend's GEMM library for this dtype
    }
    if policy.mixed and ops.name == "cpu":  # native or emulated bfloat16 on this CPU
        from mlpx.backends._bf16_gemm import describe

        result["bf16_gemm"] = describe()
    elif policy.mixed and ops.name == "cuda":  # cuBLAS bfloat16 GEMMs on this GPU
        from mlpx.backends._cuda_bf16 import describe as describe_cuda

        result["bf16_gemm"] = describe_cuda(ops)

    if not args.no_infer:
        for key, m in (("latency", 1), ("batch", args.infer_batch)):
            x = X[:m] if m <= n else ops.asarray(_data(m, sizes, seed=2)[0].astype(dtype))
            result[f"infer_{key}_s"] = _median_time(
                lambda x=x: model.predict(x, device=True), sync, args.infer_time)
        result["infer_batch"] = args.infer_batch
        result["infer_samples_per_s"] = args.infer_batch / result["infer_batch_s"]
        # serving one row at a time: the small model's latency too, whatever --sizes is
        small = mlpx.MLP(SMALL_SIZES, activation=args.activation, backend=ops, dtype=dtype,
                         seed=0)
        x1 = ops.asarray(_data(1, SMALL_SIZES, seed=2)[0].astype(dtype))
        result["infer_small_latency_s"] = _median_time(
            lambda: small.predict(x1, device=True), sync, args.infer_time)

    # under the mixed policy the bound is that of the bfloat16 products (_bf16_product)
    gemm_times = time_gemms(model.ops, sizes, B, dtype, args.min_time / 3 or 0.2)
    result["gemm_s"] = gemm_times["each"]
    result["gemm_step_s"] = gemm_times["all"]
    result["gemm_gflops"] = gemm_times["gflops"]
    result["best_gemm_gflops"] = max(gemm_times["gflops"].values())

    if args.profile:
        from mlpx.commands.bench_profile import profile_fit

        result["profile"] = profile_fit(model, X, y, sizes, B, steps, args.epochs)
    if ops.name == "cpu":  # each float32 GEMM shape class's route, measured or defaulted
        from mlpx.backends import gemm_routes

        result["gemm_routes"] = gemm_routes.chosen()
        if np.dtype(dtype) == np.float32 and result["gemm_routes"]:
            # the libraries the measured routes ran, not the default the backend names
            result["blas"] = "+".join(sorted({label.split()[0] for label in
                                              result["gemm_routes"].values()}))
    used = (result["blas"] or "").split("+")
    if "mkl" in used:
        from mlpx.backends import _mkl

        result["mkl_threads"] = _mkl.get_num_threads()
        result["mkl_version"] = _mkl.version()
    if "onednn" in used:
        from mlpx.backends import _onednn

        result["onednn_version"] = _onednn.version()
    if ops.name != "cpu":
        import cupy

        result["gpu_pool_bytes"] = int(cupy.get_default_memory_pool().total_bytes())
    return result


def _gemm_path(ops: Any, dtype: Any) -> str | None:
    """The library that ran this dtype's GEMMs: oneDNN has float32 products only, so a
    float64 run on the onednn path used NumPy's BLAS."""
    path = getattr(ops, "blas", None)
    if path == "onednn" and np.dtype(dtype) != np.float32:
        return "numpy"
    return path


def time_gemms(ops: Any, sizes: list[int], batch: int, dtype: Any,
               min_time: float) -> dict[str, Any]:
    """The step's GEMMs alone with the backend's matmul on preallocated arrays: the time of
    all of them in a row, of each, and each one's GFLOP/s."""
    rng = np.random.default_rng(1)
    gemms = []
    for label, (sa, sb, so), ta, tb in step_gemms(sizes, batch):
        a = ops.asarray(rng.standard_normal(sa).astype(dtype))
        b = ops.asarray(rng.standard_normal(sb).astype(dtype) * 0.05)
        o = ops.empty(so, dtype)
        flops = 2 * int(np.prod(so)) * (sa[0] if ta else sa[1])
        gemms.append((label, a, b, o, ta, tb, flops))

    matmul = _bf16_product(ops) or ops.matmul

    def all_gemms() -> None:
        for _, a, b, o, ta, tb, _f in gemms:
            matmul(a, b, out=o, trans_a=ta, trans_b=tb)

    sync = ops.synchronize
    total = _median_time(all_gemms, sync, min_time)
    each, rates = {}, {}
    for label, a, b, o, ta, tb, flops in gemms:
        t = _median_time(lambda a=a, b=b, o=o, ta=ta, tb=tb: matmul(
            a, b, out=o, trans_a=ta, trans_b=tb), sync, min_time / len(gemms))
        each[label] = t
        rates[label] = flops / t / 1e9
    return {"all": total, "each": each, "gflops": rates}


def _bf16_product(ops: Any) -> Any:
    """Under the mixed policy on the cpu backend, the bfloat16 product itself, its operands
    converted once and outside the timing (as training keeps them: bfloat16 bits for a
    native GEMM, rounded float32 for the emulated one); None elsewhere."""
    from mlpx.precision import unwrap

    if getattr(ops, "compute_dtype", None) != "bfloat16" or unwrap(ops).name != "cpu":
        return None
    import numpy as np

    from mlpx.layers.bf16_chain import Operand, product

    def keep(slot: str, shape: tuple[int, int], dtype: Any) -> Any:
        return np.empty(shape, dtype)

    operands: dict[int, Any] = {}  # each array's Operand: its bits or rounded copy made once

    def operand(x: Any) -> Any:
        if id(x) not in operands:
            operands[id(x)] = (x, Operand(keep, "", x, False))
        return operands[id(x)][1]

    def matmul(a: Any, b: Any, out: Any, trans_a: bool = False, trans_b: bool = False) -> Any:
        # the training step's product, on the route measured for the shape
        return product(ops, operand(a), "operand", operand(b), "operand", out, trans_a,
                       trans_b)

    return matmul


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mlpx.commands.bench_worker", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="cpu")
    p.add_argument("--dtype", choices=["float32", "float64", "mixed_bfloat16"],
                   default="float32")
    p.add_argument("--sizes", default="784,1024,1024,10")
    p.add_argument("--activation", default="relu")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs, at least")
    p.add_argument("--min-time", type=float, default=0.0, help="timed seconds, at least")
    p.add_argument("--epoch-samples", type=int, default=16384,
                   help="samples per epoch, rounded up to whole batches")
    p.add_argument("--infer-batch", type=int, default=1024)
    p.add_argument("--infer-time", type=float, default=0.3,
                   help="seconds of repeated calls per inference timing")
    p.add_argument("--no-infer", action="store_true", help="skip the inference timings")
    p.add_argument("--tracemalloc", action="store_true",
                   help="record tracemalloc's peak of the warm-up epoch (slows it down)")
    p.add_argument("--profile", action="store_true",
                   help="time every backend op of the step (mlpx.commands.bench_profile)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in str(args.sizes).split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.backend == "cpu":
        try:  # the environment variables set by `mlpx bench` already do this when it is absent
            from threadpoolctl import threadpool_limits
        except ImportError:
            pass
        else:
            threadpool_limits(args.threads)
    result = measure_mlpx(args)
    result.update(batch=args.batch, dtype=args.dtype, sizes=args.sizes,
                  activation=args.activation, threads=args.threads)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
