"""One benchmark measurement in its own process; prints one JSON object on stdout.

`mlpx bench` starts this module once per (implementation, batch size, round) so that mlpx
and PyTorch never share a process: their thread pools fight when they do (PyTorch's MKL and
OpenMP pools beside OpenBLAS and Numba), which would distort both sides.

    python -m mlpx.bench_worker --impl mlpx --backend cpu --dtype float32 \
        --sizes 784,1024,1024,10 --batch 1024 --min-time 2

`--impl mlpx` times `Sequential.fit` (shuffled mini-batches: gather, forward, fused loss,
backward, SGD update) per epoch, inference (`forward` of one batch), and the step's GEMMs
alone with the backend's own `matmul` on preallocated outputs (the framework-free bound).
`--impl torch` times the same model in PyTorch eager (nn.Linear stack, CrossEntropyLoss,
torch.optim.SGD) with the same batch gathering.
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
                 min_reps: int = 3, max_reps: int = 200) -> float:
    """Median wall time of fn() over repetitions lasting at least `min_time` in all."""
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


def _data(n: int, sizes: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    # Standard-normal inputs and uniform labels: magnitudes of real standardised data.
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sizes[0]), dtype=np.float32)
    y = rng.integers(0, sizes[-1], size=n)
    return X, y


def _steps_per_epoch(batch: int, target_samples: int) -> int:
    return int(max(2, min(32, -(-target_samples // batch))))


# ------------------------------------------------------------------------------------ mlpx
def measure_mlpx(args: argparse.Namespace) -> dict[str, Any]:
    import mlpx
    from mlpx.training import Callback

    sizes, B = args.sizes, args.batch
    ops = mlpx.get_backend(args.backend)
    sync = ops.synchronize
    dtype = np.dtype(args.dtype)
    k = _steps_per_epoch(B, args.epoch_samples)
    X, y = _data(B * k, sizes)
    X = X.astype(dtype)
    if ops.name != "cpu":  # keep the data on the device, as a GPU user would
        X, y = ops.asarray(X), ops.asarray(y)

    traced_peak = None
    if ops.name == "cpu":
        import tracemalloc

        tracemalloc.start()
    model = mlpx.MLP(sizes, activation=args.activation, backend=ops, dtype=dtype, seed=0)
    # The first fit compiles/loads kernels and allocates every buffer.
    model.fit(X, y, loss="cross_entropy", optimizer="sgd", lr=args.lr, epochs=1,
              batch_size=B, verbose=0)
    if ops.name == "cpu":
        traced_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()

    class EpochTimer(Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.t0 = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            sync()
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            # fit reads the epoch loss before this hook: the device work is finished
            self.times.append(time.perf_counter() - self.t0)
            if sum(self.times) >= args.min_time and len(self.times) >= 2:
                self.model.stop_training = True

    timer = EpochTimer()
    model.fit(X, y, epochs=1000, batch_size=B, verbose=0, callbacks=[timer])
    step_s = statistics.median(timer.times) / k
    final_loss = float(model.history_.loss[-1])

    # Inference: one forward pass over one batch already on the device.
    xb = X[:B]
    infer_s = _median_time(lambda: model.forward(xb, training=False), sync, args.min_time / 3)

    # Peak RSS of training and inference, before the GEMM-only arrays below add theirs.
    peak_rss = _peak_rss()

    # The step's GEMMs alone, with the backend's matmul on preallocated arrays.
    rng = np.random.default_rng(1)
    gemms = []
    for label, (sa, sb, so), ta, tb in step_gemms(sizes, B):
        a = ops.asarray(rng.standard_normal(sa).astype(dtype))
        b = ops.asarray(rng.standard_normal(sb).astype(dtype) * 0.05)
        o = ops.empty(so, dtype)
        flops = 2 * int(np.prod(so)) * (sa[0] if ta else sa[1])
        gemms.append((label, a, b, o, ta, tb, flops))

    def all_gemms() -> None:
        for _, a, b, o, ta, tb, _f in gemms:
            ops.matmul(a, b, out=o, trans_a=ta, trans_b=tb)

    gemm_step_s = _median_time(all_gemms, sync, args.min_time / 3)
    rates = {}
    for label, a, b, o, ta, tb, flops in gemms:
        t = _median_time(lambda a=a, b=b, o=o, ta=ta, tb=tb: ops.matmul(
            a, b, out=o, trans_a=ta, trans_b=tb), sync, args.min_time / (3 * len(gemms)))
        rates[label] = flops / t / 1e9
    fl = step_flops(sizes, B)
    result = {
        "impl": "mlpx",
        "backend": ops.name,
        "step_s": step_s,
        "train_samples_per_s": B / step_s,
        "infer_s": infer_s,
        "infer_samples_per_s": B / infer_s,
        "gemm_step_s": gemm_step_s,
        "gemm_gflops": rates,
        "best_gemm_gflops": max(rates.values()),
        "step_gflops": fl["train"] / step_s / 1e9,
        "steps_per_epoch": k,
        "epochs_timed": len(timer.times),
        "final_loss": final_loss,
        "peak_rss_bytes": peak_rss,
        "traced_peak_bytes": traced_peak,
        "blas": getattr(ops, "blas", None),  # the cpu backend's GEMM path: mkl or numpy
    }
    if result["blas"] == "mkl":
        from mlpx.backends import _mkl

        result["mkl_threads"] = _mkl.get_num_threads()
        result["mkl_version"] = _mkl.version()
    if ops.name != "cpu":
        import cupy

        result["gpu_pool_bytes"] = int(cupy.get_default_memory_pool().total_bytes())
    return result


# ----------------------------------------------------------------------------------- torch
_TORCH_ACTS = {
    "relu": "ReLU", "tanh": "Tanh", "sigmoid": "Sigmoid", "gelu": "GELU", "silu": "SiLU",
    "elu": "ELU", "softplus": "Softplus", "leaky_relu": "LeakyReLU",
}


def measure_torch(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    dev = torch.device("cuda" if args.backend.startswith("cuda") else "cpu")
    tdtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    sizes, B = args.sizes, args.batch
    if args.activation not in _TORCH_ACTS:
        raise SystemExit(f"no PyTorch equivalent for activation {args.activation!r}")
    layers: list[Any] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(getattr(torch.nn, _TORCH_ACTS[args.activation])())
    torch.manual_seed(0)
    model = torch.nn.Sequential(*layers).to(device=dev, dtype=tdtype)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr)
    crit = torch.nn.CrossEntropyLoss()
    k = _steps_per_epoch(B, args.epoch_samples)
    Xn, yn = _data(B * k, sizes)
    X = torch.from_numpy(Xn).to(device=dev, dtype=tdtype)
    y = torch.from_numpy(yn).to(dev)
    n = X.shape[0]
    gen = torch.Generator(device="cpu").manual_seed(0)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def epoch() -> float:
        perm = torch.randperm(n, generator=gen).to(dev)
        total = torch.zeros((), device=dev, dtype=tdtype)
        for s in range(k):
            idx = perm[s * B : (s + 1) * B]
            xb, yb = X[idx], y[idx]
            opt.zero_grad(set_to_none=True)
            loss = crit(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.detach() * B
        return float(total) / n  # one host read per epoch, as mlpx does

    epoch()  # warm-up: allocator, kernels, thread pool
    sync()
    times: list[float] = []
    start = time.perf_counter()
    final_loss = 0.0
    while len(times) < 2 or time.perf_counter() - start < args.min_time:
        t0 = time.perf_counter()
        final_loss = epoch()
        sync()
        times.append(time.perf_counter() - t0)
    step_s = statistics.median(times) / k
    xb = X[:B]

    def infer() -> None:
        with torch.inference_mode():
            model(xb)

    infer_s = _median_time(infer, sync, args.min_time / 3)
    result = {
        "impl": "torch",
        "backend": dev.type,
        "step_s": step_s,
        "train_samples_per_s": B / step_s,
        "infer_s": infer_s,
        "infer_samples_per_s": B / infer_s,
        "step_gflops": step_flops(sizes, B)["train"] / step_s / 1e9,
        "steps_per_epoch": k,
        "epochs_timed": len(times),
        "final_loss": final_loss,
        "peak_rss_bytes": _peak_rss(),
        "torch_threads": torch.get_num_threads(),
    }
    if dev.type == "cuda":
        result["gpu_peak_bytes"] = int(torch.cuda.max_memory_allocated())
        result["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mlpx.bench_worker", description=__doc__)
    p.add_argument("--impl", choices=["mlpx", "torch"], required=True)
    p.add_argument("--backend", default="cpu")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--sizes", default="784,1024,1024,10")
    p.add_argument("--activation", default="relu")
    p.add_argument("--batch", type=int, required=True)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--min-time", type=float, default=1.0, help="seconds of timed training")
    p.add_argument("--epoch-samples", type=int, default=16384,
                   help="samples per timed epoch (2 to 32 steps)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in str(args.sizes).split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.impl == "mlpx" and args.backend == "cpu":
        try:  # the environment variables set by `mlpx bench` already do this when it is absent
            from threadpoolctl import threadpool_limits
        except ImportError:
            pass
        else:
            threadpool_limits(args.threads)
    fn = measure_mlpx if args.impl == "mlpx" else measure_torch
    result = fn(args)
    result.update(batch=args.batch, dtype=args.dtype, sizes=args.sizes,
                  activation=args.activation, threads=args.threads)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
