"""PyTorch eager peer of `mlpx bench`: a plain training loop, as PyTorch users write one.

A standalone script (it imports NumPy and PyTorch, never mlpx), so that `mlpx bench` can run
it as a file in its own process and nothing of mlpx's (imports, thread pools) sits beside
PyTorch. Same rules as mlpx's own measurement:

- data: `numpy.random.default_rng(seed)`: standard-normal inputs, uniform integer labels;
- model: nn.Linear layers with the hidden activation between them, CrossEntropyLoss, SGD;
- one epoch = ceil(epoch_samples / batch) steps, each gathering a shuffled batch `X[idx]`;
- one warm-up epoch, then at least `--epochs` timed epochs and `--min-time` seconds;
  samples/s = samples trained in the timed epochs / their time; the loss is summed on the
  device and read once per epoch;
- inference: `model(x)` under `torch.inference_mode()` at batch 1 (latency) and at
  `--infer-batch` (throughput), medians of repeated calls.

    python -m mlpx.peers.torch_mlp --batch 1024 --device cpu --threads 2

prints one JSON line. `--dtype mixed_bfloat16` keeps float32 parameters and runs the
forward pass, training and inference alike, under `torch.autocast(device, torch.bfloat16)`:
PyTorch's one-line mixed precision.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import sys
import time

import numpy as np


def make_data(n: int, sizes: list[int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal float32 inputs and uniform integer labels, as mlpx's worker draws."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sizes[0]), dtype=np.float32)
    return X, rng.integers(0, sizes[-1], size=n)


def epoch_plan(batch: int, epoch_samples: int) -> tuple[int, int]:
    """(steps, samples) of one epoch: ceil(epoch_samples / batch) whole batches."""
    steps = max(1, math.ceil(epoch_samples / batch))
    return steps, steps * batch


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m mlpx.peers.torch_mlp", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="784,1024,1024,10", help="layer widths, input first")
    p.add_argument("--activation", default="relu", help="the activation's name (for the report)")
    p.add_argument("--torch-module", default='["ReLU", {}]',
                   help="the hidden activation as JSON [torch.nn class name, keyword arguments]; "
                        "mlpx bench passes the one its activation declares")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--dtype", default="float32",
                   choices=["float32", "float64", "mixed_bfloat16"],
                   help="mixed_bfloat16: float32 parameters, torch.autocast to bfloat16")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs, at least")
    p.add_argument("--epoch-samples", type=int, default=16384)
    p.add_argument("--min-time", type=float, default=0.0, help="timed seconds, at least")
    p.add_argument("--infer-batch", type=int, default=1024)
    p.add_argument("--no-infer", action="store_true", help="skip the inference timings")
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    try:
        name, kwargs = json.loads(args.torch_module)
        args.torch_module = (str(name), dict(kwargs))
    except (ValueError, TypeError):
        p.error(f'--torch-module must be JSON such as ["LeakyReLU", {{"negative_slope": 0.1}}], '
                f"got {args.torch_module!r}")
    if len(args.sizes) < 2 or min(args.sizes) < 1 or args.batch < 1 or args.epochs < 1:
        p.error("--sizes needs two or more positive widths; --batch and --epochs must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"torch_mlp: this PyTorch ({torch.__version__}) sees no CUDA device; a CUDA "
              "build of torch and a GPU are needed for --device cuda", file=sys.stderr)
        return 3
    mixed = args.dtype == "mixed_bfloat16"
    dtype = torch.float32 if mixed else getattr(torch, args.dtype)
    sizes, B = args.sizes, args.batch

    def build(sizes):
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(torch.nn.Linear(fan_in, fan_out))
            if i < len(sizes) - 2:
                name, kwargs = args.torch_module
                layers.append(getattr(torch.nn, name)(**kwargs))
        return layers

    layers = build(sizes)
    torch.manual_seed(args.seed)
    model = torch.nn.Sequential(*layers).to(device=device, dtype=dtype)
    loss_fn = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)

    steps, n = epoch_plan(B, args.epoch_samples)
    Xn, yn = make_data(n, sizes, args.seed)
    X = torch.from_numpy(Xn).to(device=device, dtype=dtype)
    y = torch.from_numpy(yn).to(device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def train_epoch() -> float:
        perm = torch.randperm(n, device=device)
        total = torch.zeros((), device=device, dtype=dtype)
        for s in range(steps):
            idx = perm[s * B:(s + 1) * B]
            xb, yb = X[idx], y[idx]
            optimizer.zero_grad()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed):
                loss = loss_fn(model(xb), yb)
            loss.backward()
            optimizer.step()
            total += loss.detach()
        return total.item() / steps

    t0 = time.perf_counter()
    train_epoch()  # warm-up: allocator, kernels, thread pools
    sync()
    warmup_s = time.perf_counter() - t0
    times, loss = [], float("nan")
    start = time.perf_counter()
    while len(times) < args.epochs or time.perf_counter() - start < args.min_time:
        t0 = time.perf_counter()
        loss = train_epoch()  # .item() waits for the device
        times.append(time.perf_counter() - t0)
    peak_rss = _peak_rss()  # training's peak, before inference adds its own buffers
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed):
        compute_dtype = str(model[0](X[:1]).dtype).replace("torch.", "")

    result = {
        "impl": "torch", "peer": "PyTorch eager", "version": torch.__version__,
        "device": device.type, "dtype": args.dtype, "sizes": sizes,
        "param_dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "compute_dtype": compute_dtype,
        "activation": args.activation, "batch": B, "threads": torch.get_num_threads(),
        "steps_per_epoch": steps, "epoch_s": times, "warmup_s": warmup_s,
        "step_s": sum(times) / (steps * len(times)),
        "train_samples_per_s": n * len(times) / sum(times),
        "final_loss": loss, "peak_rss_bytes": peak_rss,
    }
    if not args.no_infer:
        def predict(x):
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                        enabled=mixed):
                return model(x)

        for key, m in (("latency", 1), ("batch", args.infer_batch)):
            x = X[:m] if m <= n else torch.randn(m, sizes[0], device=device, dtype=dtype)
            t = _median_time(lambda x=x: predict(x), sync)
            result[f"infer_{key}_s"] = t
        result["infer_batch"] = args.infer_batch
        result["infer_samples_per_s"] = args.infer_batch / result["infer_batch_s"]
        small_sizes = [784, 256, 128, 10]  # mlpx's worker: SMALL_SIZES
        small = torch.nn.Sequential(*build(small_sizes)).to(device=device, dtype=dtype).eval()
        x1 = torch.from_numpy(make_data(1, small_sizes, 2)[0]).to(device=device, dtype=dtype)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                    enabled=mixed):
            result["infer_small_latency_s"] = _median_time(lambda: small(x1), sync)
    if device.type == "cuda":
        result["gpu_peak_bytes"] = int(torch.cuda.max_memory_allocated(device))
        result["tf32_matmul"] = bool(torch.backends.cuda.matmul.allow_tf32)
    print(json.dumps(result))
    return 0


def _median_time(fn, sync, min_time: float = 0.3, min_reps: int = 5) -> float:
    fn()  # warm-up
    sync()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < min_time
                                    and len(times) < 10000):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_rss() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


if __name__ == "__main__":
    sys.exit(main())
