"""`mlpx bench`: training and inference throughput per backend, dtype and batch size.

Every measurement runs in its own process (`python -m mlpx.bench_worker`): mlpx, then
PyTorch eager on the same device, model and batch, then mlpx again, and so on for `--rounds`
rounds, so that drift of the machine (clock, neighbours) hits both alike. The ratio column
is the median of the per-round ratios mlpx/PyTorch.

Roofline figures, from the same worker that times mlpx:
- `roof`: achieved GFLOP/s of the step / the best GEMM rate measured on this machine (the
  best of the step's own GEMM shapes over all batch sizes of the sweep, same backend and dtype);
- `gemm x`: step time / time of the step's GEMMs run alone on preallocated arrays (1.00 means
  no framework overhead at all; the rest is elementwise kernels, the gather and Python).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata as _md
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

CPU_BATCHES = (256, 1024, 4096, 16384)
GPU_BATCHES = (256, 1024, 4096, 16384, 65536)
QUICK_BATCHES = (256, 1024)
DEFAULT_SIZES = (784, 1024, 1024, 10)


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{what} must be comma-separated integers such as 256,1024; got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{what} must be positive integers; got {text!r}")
    return values


def _sizes(text: str) -> list[int]:
    v = _int_list(text, "--sizes")
    if len(v) < 2:
        raise argparse.ArgumentTypeError(
            f"--sizes needs at least an input and an output width, e.g. 784,1024,10; got {text!r}"
        )
    return v


def _batches(text: str) -> list[int]:
    return _int_list(text, "--batches")


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "bench",
        help="throughput sweep over backends and batch sizes, against PyTorch when installed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--backend", action="append", default=None,
                   help="backend to measure (repeatable); default: every available backend")
    p.add_argument("--dtype", default="float32", help="float32, float64 or both: float32,float64")
    p.add_argument("--sizes", type=_sizes, default=list(DEFAULT_SIZES),
                   help="layer widths, input first (default 784,1024,1024,10)")
    p.add_argument("--activation", default="relu", help="hidden activation (default relu)")
    p.add_argument("--batches", type=_batches, default=None,
                   help=f"batch sizes (default CPU {','.join(map(str, CPU_BATCHES))}; GPU up "
                        f"to {GPU_BATCHES[-1]} or the largest that fits)")
    p.add_argument("--rounds", type=int, default=5,
                   help="alternated mlpx/PyTorch rounds per batch size (default 5)")
    p.add_argument("--min-time", type=float, default=1.5,
                   help="seconds of timed training per measurement (default 1.5)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="CPU threads for BLAS and PyTorch (default: all cores)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--out", default=None,
                   help="results directory (default benchmarks/results/<date>-<host>)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: batches 256,1024, 1 round, short timings")
    p.add_argument("--no-plot", action="store_true", help="do not write the PNG plot")
    p.set_defaults(func=_cmd_bench)
    return p


# ---------------------------------------------------------------------------------- helpers
def _version(dist: str) -> str | None:
    try:
        return _md.version(dist)
    except _md.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int) -> dict[str, Any]:
    """Host, CPU, library versions and BLAS of the process that runs mlpx's CPU backend."""
    import numpy as np

    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "versions": {
            d: _version(d) for d in ("mlpx", "numpy", "numba", "llvmlite", "torch", "cupy-cuda12x",
                                     "cupy-cuda13x", "threadpoolctl", "mkl")
        },
        "numpy_config": _numpy_blas(np),
    }
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            {k: d.get(k) for k in ("internal_api", "version", "num_threads", "architecture",
                                   "threading_layer", "filepath")}
            for d in threadpool_info()
        ]
    except ImportError:
        info["blas"] = "threadpoolctl not installed"
    return info


def _numpy_blas(np: Any) -> Any:
    try:
        cfg = np.show_config(mode="dicts")
        return cfg.get("Build Dependencies", {}).get("blas")
    except Exception:  # older NumPy: no dict mode; the threadpoolctl entry says it anyway
        return None


def _worker_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        env[var] = str(threads)
    return env


def run_worker(impl: str, backend: str, dtype: str, sizes: list[int], activation: str,
               batch: int, min_time: float, threads: int,
               epoch_samples: int = 16384) -> dict[str, Any]:
    """Run one measurement in a fresh process; returns its JSON, or {"error": ...}."""
    cmd = [
        sys.executable, "-m", "mlpx.bench_worker", "--impl", impl, "--backend", backend,
        "--dtype", dtype, "--sizes", ",".join(map(str, sizes)), "--activation", activation,
        "--batch", str(batch), "--min-time", str(min_time), "--threads", str(threads),
        "--epoch-samples", str(epoch_samples),
    ]
    load_before = _loadavg()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_worker_env(threads))
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        msg = " | ".join(tail) or f"exit status {proc.returncode}"
        oom = any(s in msg for s in ("OutOfMemory", "out of memory", "MemoryError"))
        return {"error": msg, "oom": oom}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    # Other processes competing for the cores distort the timings: record the load seen.
    result["loadavg_1min"] = max(load_before, _loadavg())
    return result


def _loadavg() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not available on this platform
        return 0.0


_STARTUP_SCRIPT = """
import json, time
t0 = time.perf_counter()
import mlpx
t1 = time.perf_counter()
import numpy as np
sizes, batch, backend = {sizes!r}, {batch}, {backend!r}
rng = np.random.default_rng(0)
X = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
y = rng.integers(0, sizes[-1], size=batch)
t2 = time.perf_counter()
model = mlpx.MLP(sizes, backend=backend, seed=0)
model.fit(X, y, loss="cross_entropy", lr=0.01, epochs=1, batch_size=batch, verbose=0)
t3 = time.perf_counter()
model.fit(X, y, epochs=1, batch_size=batch, verbose=0)
t4 = time.perf_counter()
print(json.dumps({{"import_s": t1 - t0, "first_step_s": t3 - t2, "second_step_s": t4 - t3}}))
"""


def measure_startup(backend: str, sizes: list[int], threads: int, repeats: int = 3,
                    batch: int = 256) -> dict[str, Any]:
    """`import mlpx` and the first training step (model build + one fit step, kernels
    loaded from the disk cache) in fresh processes: medians of `repeats` runs."""
    code = _STARTUP_SCRIPT.format(sizes=list(sizes), batch=batch, backend=backend)
    env = _worker_env(threads)
    runs = []
    for i in range(repeats + 1):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env)
        if proc.returncode != 0:
            return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
        if i > 0:  # the first run may compile and fill the kernel cache
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]} | {
        "batch": batch, "repeats": repeats}


def _torch_device(backend: str) -> str | None:
    if backend == "cpu":
        return "cpu"
    if backend.startswith("cuda"):
        return "cuda"
    return None


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarise(mlpx_runs: list[dict], torch_runs: list[dict]) -> dict[str, Any]:
    """Medians over rounds; the PyTorch ratio is the median of the paired per-round ratios."""
    row: dict[str, Any] = {}
    for key in ("train_samples_per_s", "infer_samples_per_s", "step_s", "infer_s",
                "step_gflops", "gemm_step_s", "best_gemm_gflops", "peak_rss_bytes",
                "traced_peak_bytes", "gpu_pool_bytes"):
        row[key] = _median([r.get(key) for r in mlpx_runs])
    row["gemm_overhead"] = _median([r["step_s"] / r["gemm_step_s"] for r in mlpx_runs])
    row["blas"] = mlpx_runs[0].get("blas") if mlpx_runs else None
    row["max_loadavg"] = max((r.get("loadavg_1min", 0.0) for r in mlpx_runs + torch_runs),
                             default=0.0)
    if torch_runs:
        row["torch_train_samples_per_s"] = _median([r["train_samples_per_s"] for r in torch_runs])
        row["torch_infer_samples_per_s"] = _median([r["infer_samples_per_s"] for r in torch_runs])
        row["torch_peak_rss_bytes"] = _median([r.get("peak_rss_bytes") for r in torch_runs])
        pairs = list(zip(mlpx_runs, torch_runs, strict=False))
        ratios = [a["train_samples_per_s"] / b["train_samples_per_s"] for a, b in pairs]
        row["torch_ratio"] = _median(ratios)
        row["torch_ratios"] = ratios
        row["torch_infer_ratio"] = _median(
            [a["infer_samples_per_s"] / b["infer_samples_per_s"] for a, b in pairs]
        )
    return row


def run_bench(
    backends: list[str],
    dtypes: list[str],
    sizes: list[int],
    activation: str = "relu",
    batches: list[int] | None = None,
    rounds: int = 5,
    min_time: float = 1.5,
    threads: int | None = None,
    torch: bool = True,
    epoch_samples: int = 16384,
    log: Any = print,
) -> dict[str, Any]:
    """Run the sweep and return the results document (what `mlpx bench` writes as JSON)."""
    threads = threads or os.cpu_count() or 1
    use_torch = torch and _version("torch") is not None
    rows: list[dict[str, Any]] = []
    for backend in backends:
        blist = batches or list(CPU_BATCHES if backend == "cpu" else GPU_BATCHES)
        tdev = _torch_device(backend) if use_torch else None
        for dtype in dtypes:
            for batch in blist:
                mlpx_runs: list[dict] = []
                torch_runs: list[dict] = []
                error = None
                for r in range(rounds):
                    m = run_worker("mlpx", backend, dtype, sizes, activation, batch, min_time,
                                   threads, epoch_samples)
                    if "error" in m:
                        error = m
                        break
                    mlpx_runs.append(m)
                    msg = f"  {backend} {dtype} B={batch} round {r + 1}/{rounds}: mlpx " \
                          f"{m['train_samples_per_s']:,.0f}/s"
                    if tdev is not None:
                        t = run_worker("torch", backend, dtype, sizes, activation, batch,
                                       min_time, threads, epoch_samples)
                        if "error" in t:
                            log(f"  PyTorch failed at B={batch}: {t['error']}")
                            tdev = None if not t.get("oom") else tdev
                        else:
                            torch_runs.append(t)
                            msg += f", torch {t['train_samples_per_s']:,.0f}/s"
                    log(msg)
                if error is not None:
                    what = "does not fit in memory" if error.get("oom") else "failed"
                    log(f"  {backend} {dtype} batch {batch} {what}: {error['error']}")
                    rows.append({"backend": backend, "dtype": dtype, "batch": batch,
                                 "error": error["error"], "oom": error.get("oom", False)})
                    if error.get("oom"):
                        break  # larger batches will not fit either
                    continue
                row = {"backend": backend, "dtype": dtype, "batch": batch,
                       "rounds": len(mlpx_runs), **summarise(mlpx_runs, torch_runs),
                       "runs": {"mlpx": mlpx_runs, "torch": torch_runs}}
                rows.append(row)
            # The roofline's bound: the best GEMM rate seen on this backend and dtype.
            done = [r for r in rows if r["backend"] == backend and r["dtype"] == dtype
                    and "error" not in r]
            best = max((g["best_gemm_gflops"] for r in done for g in r["runs"]["mlpx"]),
                       default=None)
            for r in done:
                r["machine_best_gemm_gflops"] = best
                r["roofline_fraction"] = r["step_gflops"] / best if best else None
                r["bound_samples_per_s"] = (
                    best * 1e9 / (r["step_gflops"] * 1e9 / r["train_samples_per_s"])
                    if best else None
                )
    from .bench_worker import step_flops

    startup = {b: measure_startup(b, sizes, threads, repeats=1 if rounds == 1 else 3)
               for b in backends}
    return {
        "startup": startup,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": None,
        "machine": machine_info(threads),
        "model": {"sizes": sizes, "activation": activation, "loss": "cross_entropy",
                  "optimizer": "sgd", "flops_per_sample_train": step_flops(sizes, 1)["train"],
                  "flops_per_sample_infer": step_flops(sizes, 1)["infer"]},
        "settings": {"rounds": rounds, "min_time_s": min_time, "threads": threads,
                     "torch": use_torch, "epoch_samples": epoch_samples},
        "flags": _flags(rows),
        "results": rows,
    }


def _flags(rows: list[dict]) -> dict[str, Any]:
    flags: dict[str, Any] = {}
    for r in rows:
        for t in r.get("runs", {}).get("torch", []):
            if "tf32_matmul" in t:
                flags["torch_tf32_matmul"] = t["tf32_matmul"]
    blas = sorted({r["blas"] for r in rows if r.get("blas")})
    if blas:
        flags["mlpx_blas"] = blas[0] if len(blas) == 1 else blas
    for var in ("MLPX_CACHE_DIR", "NUMBA_CACHE_DIR", "OMP_WAIT_POLICY", "KMP_BLOCKTIME",
                "MLPX_BLAS", "MKL_THREADING_LAYER"):
        if os.environ.get(var):
            flags[var] = os.environ[var]
    return flags


# ---------------------------------------------------------------------------------- output
def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_table(doc: dict[str, Any]) -> str:
    m = doc["model"]
    head = (f"model {'-'.join(map(str, m['sizes']))} {m['activation']}, softmax cross-entropy, "
            f"SGD; {doc['settings']['threads']} thread(s); {doc['machine']['cpu_model']}")
    cols = ["backend", "blas", "dtype", "batch", "train/s", "infer/s", "step ms", "GFLOP/s", "roof",
            "gemm x", "RSS MB", "torch/s", "ratio"]
    lines = []
    for r in doc["results"]:
        if "error" in r:
            lines.append([r["backend"], "-", r["dtype"], str(r["batch"]),
                          "error: " + r["error"][:60]])
            continue
        mem = r.get("gpu_pool_bytes") or r.get("peak_rss_bytes")
        lines.append([
            r["backend"], r.get("blas") or "-", r["dtype"], str(r["batch"]),
            _fmt(r["train_samples_per_s"], ",.0f"), _fmt(r["infer_samples_per_s"], ",.0f"),
            _fmt(r["step_s"] * 1e3, ".2f"), _fmt(r["step_gflops"], ".0f"),
            _fmt(r.get("roofline_fraction"), ".2f"), _fmt(r["gemm_overhead"], ".2f"),
            _fmt(mem / 2**20 if mem else None, ".0f"),
            _fmt(r.get("torch_train_samples_per_s"), ",.0f"), _fmt(r.get("torch_ratio"), ".2f"),
        ])
    full = [row for row in lines if len(row) == len(cols)]
    widths = [max([len(c)] + [len(row[i]) for row in full]) for i, c in enumerate(cols)]
    out = [head, "  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
    for row in lines:
        if len(row) == len(cols):
            out.append("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))
        else:  # an error row: the first columns, then the message
            cells = [v.rjust(w) for v, w in zip(row[:4], widths, strict=False)]
            out.append("  ".join(cells + row[4:]))
    return "\n".join(out)


def write_plot(doc: dict[str, Any], path: Path) -> bool:
    """Training samples/s against batch size per backend (and PyTorch); False without mpl."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in doc["results"]:
        if "error" not in r:
            groups.setdefault((r["backend"], r["dtype"]), []).append(r)
    for (backend, dtype), rs in groups.items():
        b = [r["batch"] for r in rs]
        for ax, key in zip(axes, ("train", "infer"), strict=True):
            ax.plot(b, [r[f"{key}_samples_per_s"] for r in rs], "o-",
                    label=f"mlpx {backend} {dtype}")
            tv = [r.get(f"torch_{key}_samples_per_s") for r in rs]
            if any(v is not None for v in tv):
                ax.plot(b, tv, "s--", label=f"PyTorch eager {backend} {dtype}")
        bound = [r.get("bound_samples_per_s") for r in rs]
        if all(v is not None for v in bound):
            axes[0].plot(b, bound, ":", color="gray", label=f"GEMM roofline {backend} {dtype}")
    m = doc["model"]
    for ax, title in zip(axes, ("training step", "inference"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel("samples / s")
        ax.set_title(f"{title}: {'-'.join(map(str, m['sizes']))} {m['activation']}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{doc['machine']['cpu_model']}, {doc['settings']['threads']} thread(s)",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def default_out_dir() -> Path:
    stamp = _dt.date.today().isoformat()
    return Path("benchmarks") / "results" / f"{stamp}-{socket.gethostname()}"


def _cmd_bench(args: argparse.Namespace) -> int:
    from .backends import VALID_NAMES, available_backends

    backends = args.backend or available_backends()
    for b in backends:
        if b not in available_backends() and not b.startswith("cuda:"):
            raise SystemExit(
                f"mlpx bench: backend {b!r} is not available here (available: "
                f"{', '.join(available_backends())}; valid names: {', '.join(VALID_NAMES)})"
            )
    dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
    bad = [d for d in dtypes if d not in ("float32", "float64")]
    if bad or not dtypes:
        raise SystemExit(f"mlpx bench: --dtype must be float32, float64 or both; got {args.dtype}")
    if args.rounds < 1 or args.min_time <= 0 or args.threads < 1:
        raise SystemExit("mlpx bench: --rounds and --threads must be >= 1, --min-time > 0")
    from .check import activation_error

    problem = activation_error(args.activation)
    if problem:  # else every measurement fails in its worker process
        raise SystemExit(f"mlpx bench: --activation: {problem}")
    batches, rounds, min_time, epoch_samples = args.batches, args.rounds, args.min_time, 16384
    if args.quick:
        batches = batches or list(QUICK_BATCHES)
        rounds, min_time, epoch_samples = 1, min(min_time, 0.2), 2048
    print(f"mlpx bench: backends {', '.join(backends)}, dtype {', '.join(dtypes)}, "
          f"{rounds} round(s), {args.threads} thread(s); each measurement in its own process")
    doc = run_bench(backends, dtypes, args.sizes, args.activation, batches, rounds, min_time,
                    args.threads, torch=not args.no_torch, epoch_samples=epoch_samples)
    doc["command"] = "mlpx " + " ".join(_argv_of(args))
    out = Path(args.out) if args.out else default_out_dir()
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "bench.json"
    json_path.write_text(json.dumps(doc, indent=1))
    print()
    print(format_table(doc))
    print()
    if not doc["settings"]["torch"] and not args.no_torch:
        print("PyTorch is not installed: no comparison (pip install torch to add it)")
    for b, st in doc["startup"].items():
        if "error" in st:
            print(f"startup ({b}): failed: {st['error']}")
        else:
            print(f"startup ({b}, fresh process, kernels cached): import mlpx "
                  f"{st['import_s']:.3f} s; build + first training step (B={st['batch']}) "
                  f"{st['first_step_s']:.2f} s; second step {st['second_step_s']:.3f} s")
    busy = max((r.get("max_loadavg", 0.0) for r in doc["results"]), default=0.0)
    if busy > args.threads + 0.75:
        print(f"warning: the 1-minute load average reached {busy:.1f} on {os.cpu_count()} "
              "cores during the runs: other processes competed for the CPU and the figures "
              "are lower and noisier than on an idle machine (per-run loads are in the JSON)")
    print(f"results: {json_path}")
    if not args.no_plot:
        png = out / "bench.png"
        if write_plot(doc, png):
            print(f"plot:    {png}")
        else:
            print("plot skipped: matplotlib is not installed (pip install 'mlpx[plot]')")
    failed = [r for r in doc["results"] if "error" in r and not r.get("oom")]
    return 1 if failed else 0


def _argv_of(args: argparse.Namespace) -> list[str]:
    argv = sys.argv[1:] if sys.argv and "bench" in sys.argv[1:2] else None
    if argv is not None:
        return argv
    return ["bench"] + (["--quick"] if args.quick else [])
