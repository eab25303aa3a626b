"""JAX peer of `mlpx bench`: the whole training step under `jax.jit`, as JAX users write it.

A standalone script (it imports NumPy and JAX, never mlpx), run by `mlpx bench` as a file in
its own process. Same rules as mlpx's own measurement:

- data: `numpy.random.default_rng(seed)`: standard-normal inputs, uniform integer labels,
  placed on the device once;
- model: dense layers with the hidden activation between them, softmax cross-entropy on
  integer labels (mean), plain SGD; parameters are a list of (W, b) pairs;
- one epoch = ceil(epoch_samples / batch) steps; each step is one jitted call that slices the
  epoch's permutation, gathers the batch `X[idx]` inside, and returns the updated parameters
  (donated, so XLA updates them in place) and the loss, summed on the device and read once
  per epoch;
- one warm-up epoch (it includes the JIT compilation), then at least `--epochs` timed epochs
  and `--min-time` seconds; samples/s = samples trained in the timed epochs / their time;
- inference: the jitted forward pass at batch 1 (latency) and at `--infer-batch`.

    python -m mlpx.peers.jax_mlp --batch 1024 --device cpu --threads 2

prints one JSON line. `--dtype float64` turns on `jax_enable_x64`. `--dtype mixed_bfloat16`
is JAX's usual mixed precision (the jmp pattern): float32 parameters, updated in float32;
inside the loss the parameters and the batch are cast to bfloat16, so the products, biases
and activations run in bfloat16 (XLA accumulates the products in float32), and the logits
are cast back to float32 for the log-softmax and the loss; the gradients flow back through
the casts to the float32 parameters. `--threads N` below the
CPU count pins the process to N CPUs before JAX starts (XLA sizes its pool by the CPUs it
may use).
"""

from __future__ import annotations

import argparse
import json
import math
import os
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
    p = argparse.ArgumentParser(prog="python -m mlpx.peers.jax_mlp", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="784,1024,1024,10", help="layer widths, input first")
    p.add_argument("--activation", default="relu", help="the activation's name (for the report)")
    p.add_argument("--jax-function", default='["relu", {}]',
                   help="the hidden activation as JSON [jax.nn function name, keyword "
                        "arguments]; mlpx bench passes the one its activation declares")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--dtype", default="float32",
                   choices=["float32", "float64", "mixed_bfloat16"],
                   help="mixed_bfloat16: float32 parameters, bfloat16 compute (see above)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    p.add_argument("--threads", type=int, default=None, help="CPUs the process may use")
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
        name, kwargs = json.loads(args.jax_function)
        args.jax_function = (str(name), dict(kwargs))
    except (ValueError, TypeError):
        p.error(f'--jax-function must be JSON such as ["leaky_relu", {{"negative_slope": 0.1}}],'
                f" got {args.jax_function!r}")
    if len(args.sizes) < 2 or min(args.sizes) < 1 or args.batch < 1 or args.epochs < 1:
        p.error("--sizes needs two or more positive widths; --batch and --epochs must be >= 1")
    return args


def _limit_cpus(threads: int | None) -> None:
    if not threads or not hasattr(os, "sched_getaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if threads < len(cpus):
        os.sched_setaffinity(0, cpus[:threads])


def main(argv=None) -> int:
    args = parse_args(argv)
    _limit_cpus(args.threads)  # before JAX creates its thread pool
    import jax
    import jax.numpy as jnp

    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
    kind, _, index = args.device.partition(":")
    platform = {"cpu": "cpu", "cuda": "gpu", "gpu": "gpu"}.get(kind)
    try:
        device = jax.devices(platform)[int(index or 0)]
    except (RuntimeError, IndexError, TypeError):
        print(f"jax_mlp: JAX has no {args.device} device here (devices: {jax.devices()}); "
              "a CUDA build of jax is needed for --device cuda", file=sys.stderr)
        return 3
    mixed = args.dtype == "mixed_bfloat16"
    dtype = jnp.dtype("float32" if mixed else args.dtype)
    compute = jnp.bfloat16 if mixed else dtype
    sizes, B, lr = args.sizes, args.batch, args.lr
    name, kwargs = args.jax_function
    fn = getattr(jax.nn, name, None)
    if fn is None:
        print(f"jax_mlp: this JAX ({jax.__version__}) has no jax.nn.{name}", file=sys.stderr)
        return 2

    def act(x):
        return fn(x, **kwargs)

    def init_params(key):
        params = []
        for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
            key, kw, kb = jax.random.split(key, 3)
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation
            W = jax.random.uniform(kw, (fan_in, fan_out), dtype, -bound, bound)
            b = jax.random.uniform(kb, (fan_out,), dtype, -bound, bound)
            params.append((W, b))
        return params

    def forward(params, x):
        if mixed:  # the compute copies: bfloat16 parameters and inputs
            params = jax.tree_util.tree_map(lambda p: p.astype(compute), params)
            x = x.astype(compute)
        for W, b in params[:-1]:
            x = act(x @ W + b)
        W, b = params[-1]
        return (x @ W + b).astype(dtype)  # float32 logits under mixed_bfloat16

    def loss_fn(params, x, y):
        logp = jax.nn.log_softmax(forward(params, x))
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    def train_step(params, X, y, perm, s):
        idx = jax.lax.dynamic_slice_in_dim(perm, s * B, B)
        loss, grads = jax.value_and_grad(loss_fn)(params, X[idx], y[idx])
        params = jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads)
        return params, loss

    train_step = jax.jit(train_step, donate_argnums=0)
    predict = jax.jit(forward)

    steps, n = epoch_plan(B, args.epoch_samples)
    Xn, yn = make_data(n, sizes, args.seed)
    X = jax.device_put(Xn.astype(dtype), device)
    y = jax.device_put(yn.astype(np.int32), device)
    key = jax.random.PRNGKey(args.seed)
    params = jax.device_put(init_params(key), device)

    def train_epoch(params, key):
        perm = jax.random.permutation(key, n)
        losses = []
        for s in range(steps):
            params, loss = train_step(params, X, y, perm, s)
            losses.append(loss)
        return params, float(jnp.sum(jnp.stack(losses))) / steps  # waits for the device

    t0 = time.perf_counter()
    params, _ = train_epoch(params, jax.random.fold_in(key, 0))  # warm-up, JIT compilation
    warmup_s = time.perf_counter() - t0
    times, loss = [], float("nan")
    start = time.perf_counter()
    while len(times) < args.epochs or time.perf_counter() - start < args.min_time:
        t0 = time.perf_counter()
        params, loss = train_epoch(params, jax.random.fold_in(key, len(times) + 1))
        times.append(time.perf_counter() - t0)
    peak_rss = _peak_rss()

    result = {
        "impl": "jax", "peer": "JAX jit", "version": jax.__version__,
        "device": "cuda" if device.platform == "gpu" else device.platform,
        "dtype": args.dtype, "param_dtype": str(params[0][0].dtype),
        "compute_dtype": jnp.dtype(compute).name, "sizes": sizes,
        "activation": args.activation, "batch": B,
        "threads": args.threads or os.cpu_count(), "steps_per_epoch": steps,
        "epoch_s": times, "warmup_s": warmup_s,
        "step_s": sum(times) / (steps * len(times)),
        "train_samples_per_s": n * len(times) / sum(times),
        "final_loss": loss, "peak_rss_bytes": peak_rss,
    }
    if not args.no_infer:
        for key_name, m in (("latency", 1), ("batch", args.infer_batch)):
            x = X[:m] if m <= n else jnp.ones((m, sizes[0]), dtype, device=device)
            result[f"infer_{key_name}_s"] = _median_time(
                lambda x=x: predict(params, x).block_until_ready())
        result["infer_batch"] = args.infer_batch
        result["infer_samples_per_s"] = args.infer_batch / result["infer_batch_s"]
    print(json.dumps(result))
    return 0


def _median_time(fn, min_time: float = 0.3, min_reps: int = 5) -> float:
    fn()  # warm-up (compiles this shape)
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < min_time
                                    and len(times) < 10000):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _peak_rss() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


if __name__ == "__main__":
    sys.exit(main())
