"""Small-batch prediction latency: mlpx `predict` against PyTorch `net(x)` under
`torch.inference_mode()`, each side in its own process:

    python benchmarks/predict_latency.py --rounds 5 --sizes 784,1024,1024,10 --rows 1
    python benchmarks/predict_latency.py --rounds 5 --sizes 784,256,128,10 --rows 1,4,16 \\
        --method predict,predict_proba,sklearn
    python benchmarks/predict_latency.py --sizes 20,64,64,3 --activation tanh --extra layernorm
    python benchmarks/predict_latency.py --sizes 64,32,1 --method predict,sklearn

`--activation` sets the hidden layers' activation (relu, tanh, sigmoid, gelu, prelu: one
learned slope per unit, PyTorch's `PReLU(num_parameters=units)`), `--extra` puts
a Dropout, BatchNorm or LayerNorm layer (inference mode) after each hidden Dense layer. A model
with one output is a regression: `sklearn` then times `MLPRegressor.predict` (the estimators
take no extra layers).

Each round starts one process per side and method (the order alternates between rounds), with
the thread count pinned (2 by default); a process warms up, then times `--repeats` means of
`--calls` calls each and reports the best mean. Printed: each round, then per case the median
of the paired ratios PyTorch / mlpx (above 1: mlpx is faster) with their min and max, the
spread a shared machine gives. float32, random weights (the time does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS", "MLPX_NUM_THREADS")


def _best_mean(fn, calls: int, repeats: int) -> float:
    for _ in range(max(calls // 4, 50)):  # warm-up: kernels compiled, buffers cached
        fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best


_SKLEARN_ACTIVATION = {"sigmoid": "logistic"}
_EXTRAS = ("none", "dropout", "batchnorm", "layernorm")


def _mlpx_fn(method: str, sizes: list[int], x, activation: str, extra: str):
    import warnings

    import numpy as np

    import mlpx
    from mlpx.layers import BatchNorm, Dense, Dropout, LayerNorm

    regression = sizes[-1] == 1
    if method == "sklearn":
        from mlpx.sklearn import MLPClassifier, MLPRegressor

        rng = np.random.default_rng(0)
        X = rng.standard_normal((64, sizes[0]), dtype=np.float32)
        kind = MLPRegressor if regression else MLPClassifier
        est = kind(hidden_layer_sizes=tuple(sizes[1:-1]), max_iter=1, random_state=0,
                   activation=_SKLEARN_ACTIVATION.get(activation, activation), verbose=0)
        with warnings.catch_warnings():  # one iteration: not converged
            warnings.simplefilter("ignore")
            est.fit(X, X[:, 0] if regression else np.arange(64) % sizes[-1])
        return (lambda: est.predict(x)) if regression else (lambda: est.predict_proba(x))
    layers: list = []
    for units in sizes[1:-1]:
        layers.append(Dense(units, activation=activation))
        if extra != "none":
            layers.append({"dropout": lambda: Dropout(0.1), "batchnorm": BatchNorm,
                           "layernorm": LayerNorm}[extra]())
    model = mlpx.Sequential([*layers, Dense(sizes[-1])], input_dim=sizes[0], seed=0)
    model.compile(loss="mse" if regression else "cross_entropy")
    return (lambda: model.predict(x)) if method == "predict" else (
        lambda: model.predict_proba(x))


def _torch_fn(method: str, sizes: list[int], x, activation: str, extra: str):
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid,
           "gelu": torch.nn.GELU, "prelu": torch.nn.PReLU}[activation]
    layers: list = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act(b, 0.25) if activation == "prelu" else act())
            if extra != "none":
                layers.append({"dropout": lambda b=b: torch.nn.Dropout(0.1),
                               "batchnorm": torch.nn.BatchNorm1d,
                               "layernorm": torch.nn.LayerNorm}[extra](b))
    net = torch.nn.Sequential(*layers).eval()
    xt = torch.from_numpy(x)
    proba = method != "predict" and sizes[-1] > 1

    def call():
        with torch.inference_mode():
            out = net(xt)
            if proba:
                out = torch.softmax(out, dim=1)
            return out.numpy()

    return call


def worker(args: argparse.Namespace) -> None:
    import numpy as np

    sizes = [int(s) for s in args.sizes.split(",")]
    x = np.random.default_rng(1).standard_normal((args.worker_rows, sizes[0]),
                                                 dtype=np.float32)
    make = _torch_fn if args.worker == "torch" else _mlpx_fn
    fn = make(args.method_one, sizes, x, args.activation, args.extra)
    print(json.dumps({"s": _best_mean(fn, args.calls, args.repeats)}))


def _run(side: str, method: str, rows: int, args: argparse.Namespace) -> float:
    env = dict(os.environ)
    for var in _THREAD_VARS:
        env[var] = str(args.threads)
    cmd = [sys.executable, __file__, "--worker", side, "--method-one", method,
           "--worker-rows", str(rows), "--sizes", args.sizes, "--calls", str(args.calls),
           "--repeats", str(args.repeats), "--activation", args.activation,
           "--extra", args.extra]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return float(json.loads(out.strip().splitlines()[-1])["s"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--sizes", default="784,1024,1024,10")
    p.add_argument("--rows", default="1", help="batch sizes, comma-separated")
    p.add_argument("--method", default="predict",
                   help="predict, predict_proba, sklearn (its predict_proba); comma-separated")
    p.add_argument("--activation", default="relu",
                   choices=("relu", "tanh", "sigmoid", "gelu", "prelu"),
                   help="the hidden layers' activation")
    p.add_argument("--extra", default="none", choices=_EXTRAS,
                   help="a layer after each hidden Dense layer (not for sklearn)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--worker", choices=("mlpx", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--method-one", default="predict", help=argparse.SUPPRESS)
    p.add_argument("--worker-rows", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    cases = [(m, int(r)) for m in args.method.split(",") for r in args.rows.split(",")]
    times: dict[tuple, dict[str, list[float]]] = {c: {"mlpx": [], "torch": []} for c in cases}
    for r in range(args.rounds):
        for method, rows in cases:
            sides = ("mlpx", "torch") if r % 2 == 0 else ("torch", "mlpx")
            t = times[(method, rows)]
            for side in sides:
                t[side].append(_run(side, method, rows, args))
            print(f"round {r + 1} {method} rows {rows}: mlpx {t['mlpx'][-1] * 1e6:.1f} us, "
                  f"torch {t['torch'][-1] * 1e6:.1f} us", flush=True)
    print(f"sizes {args.sizes}, {args.activation}, extra {args.extra}, {args.threads} threads, "
          f"float32, best mean of {args.calls} calls, {args.rounds} rounds")
    for (method, rows), t in times.items():
        ratios = [b / a for a, b in zip(t["mlpx"], t["torch"], strict=True)]
        print(f"{method:>13} rows {rows:>3}: mlpx {statistics.median(t['mlpx']) * 1e6:7.1f} us"
              f"  torch {statistics.median(t['torch']) * 1e6:7.1f} us  torch/mlpx median "
              f"{statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
