"""`mlpx bench`: training and inference throughput per backend, dtype and batch size,
against peer frameworks (`--peers torch,jax`).

Every measurement runs in its own process: mlpx (`python -m mlpx.commands.bench_worker`), then each
peer's standalone script (`mlpx/peers/*.py`, run as a file: no mlpx in its process) on the
same device, model, data and batch, then mlpx again, and so on for `--rounds` rounds, so that
drift of the machine (clock, neighbours) hits all alike. A peer's ratio is the median of the
per-round ratios of its step time to mlpx's (above 1: mlpx is faster).

Same rules on every side: one epoch = ceil(16384 / batch) steps on shuffled batches gathered
per step; one warm-up epoch (it includes JIT compilation), then at least 3 timed epochs and
`--min-time` seconds; samples/s = samples / time. Inference: batch-1 latency and throughput
at batch 1024, medians of repeated calls.

Roofline figures, from the worker that times mlpx:
- `roof`: achieved GFLOP/s of the step / the best GEMM rate measured on this machine (the
  best of the step's own GEMM shapes over all batch sizes of the sweep, same backend and dtype);
- `gemm x`: step time / time of the step's GEMMs run alone on preallocated arrays (1.00 means
  no framework overhead at all; the rest is elementwise kernels, the gather and Python).

`--profile` times every backend op of mlpx's step instead (GEMMs by layer and pass,
elementwise kernels, gather, loss, update; the rest is Python) at batches 256 and 1024, and
sets the total against the GEMMs alone and the peers' steps.
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

from .._compat import cpu_model

CPU_BATCHES = (256, 1024, 4096, 16384)
GPU_BATCHES = (256, 1024, 4096, 16384, 65536)
QUICK_BATCHES = (256, 1024)
EPOCH_SAMPLES = 16384


# ---------------------------------------------------------------------------------- helpers
def _version(dist: str) -> str | None:
    try:
        return _md.version(dist)
    except _md.PackageNotFoundError:
        return None


def machine_info(threads: int) -> dict[str, Any]:
    """Host, CPU, library versions and BLAS of the process that runs mlpx's CPU backend."""
    import numpy as np

    info: dict[str, Any] = {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "versions": {
            d: _version(d) for d in ("mlpx", "numpy", "numba", "llvmlite", "torch", "cupy-cuda12x",
                                     "cupy-cuda13x", "threadpoolctl", "mkl",
                                     "onednn-cpu-gomp")
        },
        "numpy_config": _numpy_blas(np),
        # MLPX_BLAS=auto's measured answer for this processor and thread count, if any
        "blas_auto": _blas_auto(),
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


def _cpu_flags() -> list[str]:
    from ..backends.cpu_choices import isa_flags

    return isa_flags()


def _blas_auto() -> dict[str, Any] | None:
    from ..backends import _mkl

    if _mkl.find_library() is None:
        return None
    try:
        entry = _mkl.cached_choice()
    except OSError:  # a library that cannot be opened: nothing was measured
        return None
    return {"key": _mkl.choice_key(), **entry} if entry else None


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


def _run_json(cmd: list[str], threads: int) -> dict[str, Any]:
    """Run one measuring process; its last stdout line is its JSON result. Failures come
    back as {"error": ..., "oom": bool} (and "unavailable": True for a peer that cannot
    reach the device); the load average seen around the run is recorded."""
    load_before = _loadavg()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_worker_env(threads))
    load = max(load_before, _loadavg())
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        msg = " | ".join(tail) or f"exit status {proc.returncode}"
        oom = any(s in msg for s in ("OutOfMemory", "out of memory", "MemoryError",
                                     "RESOURCE_EXHAUSTED"))
        from ..peers import EXIT_UNAVAILABLE

        return {"error": msg, "oom": oom, "unavailable": proc.returncode == EXIT_UNAVAILABLE,
                "loadavg_1min": load}
    try:
        result = json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": f"no JSON result on stdout: {proc.stdout[-200:]!r}", "oom": False}
    # Other processes competing for the cores distort the timings: record the load seen.
    result["loadavg_1min"] = load
    return result


def _common_args(dtype: str, sizes: list[int], activation: str, batch: int, min_time: float,
                 threads: int, epoch_samples: int) -> list[str]:
    return ["--dtype", dtype, "--sizes", ",".join(map(str, sizes)), "--activation", activation,
            "--batch", str(batch), "--min-time", str(min_time), "--threads", str(threads),
            "--epoch-samples", str(epoch_samples)]


def run_worker(backend: str, dtype: str, sizes: list[int], activation: str, batch: int,
               min_time: float, threads: int, epoch_samples: int = EPOCH_SAMPLES,
               profile: bool = False) -> dict[str, Any]:
    """Measure mlpx in a fresh process; returns its JSON, or {"error": ...}."""
    cmd = [sys.executable, "-m", "mlpx.commands.bench_worker", "--backend", backend,
           *_common_args(dtype, sizes, activation, batch, min_time, threads, epoch_samples)]
    return _run_json(cmd + (["--profile"] if profile else []), threads)


def run_peer(peer: str, backend: str, dtype: str, sizes: list[int], activation: str,
             batch: int, min_time: float, threads: int,
             epoch_samples: int = EPOCH_SAMPLES) -> dict[str, Any]:
    """Measure a peer framework with its standalone script, run as a file in a fresh
    process (no mlpx imported beside it); returns its JSON, or {"error": ...}."""
    from ..peers import script_path

    device = "cuda" + backend[4:] if backend.startswith("cuda") else "cpu"
    cmd = [sys.executable, str(script_path(peer)), "--device", device,
           *_common_args(dtype, sizes, activation, batch, min_time, threads, epoch_samples)]
    # the function the activation's declaration names for the peer: one source of truth
    from .. import activations

    method, option = {"torch": ("torch_module", "--torch-module"),
                      "jax": ("jax_function", "--jax-function")}[peer]
    declared = activations.twin(activations.get(activation), method)
    twin = declared() if declared is not None else None
    if twin is None:
        return {"error": f"activation {activation!r} has no {peer} counterpart",
                "oom": False, "unavailable": True}
    cmd += [option, json.dumps(list(twin))]
    return _run_json(cmd, threads)


def _loadavgs() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # not available on this platform
        return None


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


def _median(values: list[Any]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


_MLPX_KEYS = ("train_samples_per_s", "step_s", "step_gflops", "gemm_step_s", "best_gemm_gflops",
              "peak_rss_bytes", "traced_peak_bytes", "gpu_pool_bytes", "infer_latency_s",
              "infer_samples_per_s", "infer_batch", "infer_small_latency_s")
_PEER_KEYS = ("train_samples_per_s", "step_s", "peak_rss_bytes", "gpu_peak_bytes",
              "infer_latency_s", "infer_samples_per_s", "version", "infer_small_latency_s")


def summarise(mlpx_runs: list[dict], peer_runs: dict[str, list[dict]] | list[dict] | None = None
              ) -> dict[str, Any]:
    """Medians over rounds. A peer's ratio is the median of the paired per-round ratios of
    its step time to mlpx's (mlpx samples/s / peer samples/s; above 1: mlpx is faster);
    runs pair by position, so a failed peer run leaves out only its own round.

    `peer_runs` maps a peer name to its runs (a bare list means PyTorch's). The PyTorch
    figures are also kept under their earlier `torch_*` keys."""
    if isinstance(peer_runs, list):
        peer_runs = {"torch": peer_runs}
    peer_runs = peer_runs or {}
    row: dict[str, Any] = {k: _median([r.get(k) for r in mlpx_runs]) for k in _MLPX_KEYS}
    row["gemm_overhead"] = _median(
        [r["step_s"] / r["gemm_step_s"] for r in mlpx_runs if r.get("gemm_step_s")])
    row["blas"] = mlpx_runs[0].get("blas") if mlpx_runs else None
    if mlpx_runs and mlpx_runs[-1].get("gemm_routes"):  # the last round read the cache
        row["gemm_routes"] = mlpx_runs[-1]["gemm_routes"]
    if mlpx_runs and mlpx_runs[0].get("bf16_gemm"):
        row["bf16_gemm"] = mlpx_runs[0]["bf16_gemm"]
    every = mlpx_runs + [r for runs in peer_runs.values() for r in runs if r]
    row["max_loadavg"] = max((r.get("loadavg_1min", 0.0) for r in every), default=0.0)
    peers: dict[str, Any] = {}
    for name, runs in peer_runs.items():
        pairs = [(a, b) for a, b in zip(mlpx_runs, runs, strict=False)
                 if b and "error" not in b]
        if not pairs:
            continue
        ok = [b for _, b in pairs]
        p = {k: _median([r.get(k) for r in ok]) if k != "version" else ok[0].get(k)
             for k in _PEER_KEYS}
        ratios = [a["train_samples_per_s"] / b["train_samples_per_s"] for a, b in pairs]
        p["ratio"] = _median(ratios)
        p["ratios"] = ratios
        p["spread"] = [min(ratios), max(ratios)]
        lat = [b["infer_latency_s"] / a["infer_latency_s"] for a, b in pairs
               if a.get("infer_latency_s") and b.get("infer_latency_s")]
        thr = [a["infer_samples_per_s"] / b["infer_samples_per_s"] for a, b in pairs
               if a.get("infer_samples_per_s") and b.get("infer_samples_per_s")]
        p["infer_latency_ratio"] = _median(lat)
        p["infer_small_latency_ratio"] = _median(
            [b["infer_small_latency_s"] / a["infer_small_latency_s"] for a, b in pairs
             if a.get("infer_small_latency_s") and b.get("infer_small_latency_s")])
        p["infer_ratio"] = _median(thr)
        peers[name] = p
    row["peers"] = peers
    if "torch" in peers:
        t = peers["torch"]
        row["torch_train_samples_per_s"] = t["train_samples_per_s"]
        row["torch_infer_samples_per_s"] = t["infer_samples_per_s"]
        row["torch_peak_rss_bytes"] = t["peak_rss_bytes"]
        row["torch_ratio"] = t["ratio"]
        row["torch_ratios"] = t["ratios"]
        row["torch_infer_ratio"] = t["infer_ratio"]
    return row


def resolve_peers(requested: list[str] | None) -> tuple[list[str], dict[str, str]]:
    """(peers to run, {peer: why skipped}). None means the default: torch when installed."""
    from ..peers import installed

    if requested is None:
        return (["torch"], {}) if installed("torch") else ([], {})
    run, skipped = [], {}
    for name in requested:
        if installed(name):
            run.append(name)
        else:
            extra = "pip install 'mlpx[bench]'" if name == "jax" else "pip install torch"
            skipped[name] = f"{name} is not installed ({extra})"
    return run, skipped


def run_bench(
    backends: list[str],
    dtypes: list[str],
    sizes: list[int],
    activation: str = "relu",
    batches: list[int] | None = None,
    rounds: int = 5,
    min_time: float = 1.0,
    threads: int | None = None,
    torch: bool = True,
    epoch_samples: int = EPOCH_SAMPLES,
    log: Any = print,
    peers: list[str] | None = None,
    profile: bool = False,
) -> dict[str, Any]:
    """Run the sweep and return the results document (what `mlpx bench` writes as JSON).

    `peers`: frameworks to compare with (None: torch when installed, unless `torch` is
    False); a peer that is not installed, or cannot use a backend's device, is recorded under
    "skipped_peers" with the reason. `profile`: mlpx's worker also times every backend op."""
    threads = threads or os.cpu_count() or 1
    run_peers, skipped = resolve_peers(peers if torch or peers is not None else [])
    for name, why in skipped.items():
        log(f"  peer {name} skipped: {why}")
    rows: list[dict[str, Any]] = []
    load_start = _loadavgs()
    for backend in backends:
        blist = batches or list(CPU_BATCHES if backend == "cpu" else GPU_BATCHES)
        active = list(run_peers)
        for dtype in dtypes:
            for batch in blist:
                mlpx_runs: list[dict] = []
                peer_runs: dict[str, list[dict]] = {p: [] for p in active}
                error = None
                for r in range(rounds):
                    m = run_worker(backend, dtype, sizes, activation, batch, min_time, threads,
                                   epoch_samples, profile=profile)
                    if "error" in m:
                        error = m
                        break
                    mlpx_runs.append(m)
                    msg = f"  {backend} {dtype} B={batch} round {r + 1}/{rounds}: mlpx " \
                          f"{m['train_samples_per_s']:,.0f}/s"
                    for peer in list(peer_runs):
                        if peer not in active:
                            continue
                        t = run_peer(peer, backend, dtype, sizes, activation, batch,
                                     min_time, threads, epoch_samples)
                        peer_runs[peer].append(t)
                        if "error" not in t:
                            msg += f", {peer} {t['train_samples_per_s']:,.0f}/s"
                        elif t.get("unavailable"):
                            skipped[f"{peer} ({backend})"] = t["error"]
                            log(f"  peer {peer} skipped on {backend}: {t['error']}")
                            active.remove(peer)
                        else:
                            log(f"  {peer} failed at B={batch}: {t['error']}")
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
                       "rounds": len(mlpx_runs), **summarise(mlpx_runs, peer_runs),
                       "runs": {"mlpx": mlpx_runs, **peer_runs}}
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

    startup = {} if profile else {
        b: measure_startup(b, sizes, threads, repeats=1 if rounds == 1 else 3)
        for b in backends}
    return {
        "startup": startup,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "command": None,
        "machine": machine_info(threads),
        "model": {"sizes": sizes, "activation": activation, "loss": "cross_entropy",
                  "optimizer": "sgd", "flops_per_sample_train": step_flops(sizes, 1)["train"],
                  "flops_per_sample_infer": step_flops(sizes, 1)["infer"]},
        "settings": {"rounds": rounds, "min_time_s": min_time, "min_epochs": 3,
                     "threads": threads, "torch": "torch" in run_peers, "peers": run_peers,
                     "epoch_samples": epoch_samples, "profile": profile},
        "skipped_peers": skipped,
        "loadavg": {"start": load_start, "end": _loadavgs()},
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
                "MLPX_BLAS", "MKL_THREADING_LAYER", "XLA_FLAGS"):
        if os.environ.get(var):
            flags[var] = os.environ[var]
    return flags


# ---------------------------------------------------------------------------------- output
def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def _table(cols: list[str], lines: list[list[str]]) -> list[str]:
    """Right-aligned columns; a shorter line (an error row) keeps its first cells aligned and
    then runs on."""
    full = [row for row in lines if len(row) == len(cols)]
    widths = [max([len(c)] + [len(row[i]) for row in full]) for i, c in enumerate(cols)]
    out = ["  ".join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
    for row in lines:
        if len(row) == len(cols):
            out.append("  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)))
        else:
            cells = [v.rjust(w) for v, w in zip(row[:4], widths, strict=False)]
            out.append("  ".join(cells + row[4:]))
    return out


def _mb(v: Any) -> str:
    return _fmt(v / 2**20 if v else None, ".0f")


def format_table(doc: dict[str, Any]) -> str:
    """The training table (one row per backend, dtype and batch), then the inference one."""
    m = doc["model"]
    head = (f"model {'-'.join(map(str, m['sizes']))} {m['activation']}, softmax cross-entropy, "
            f"SGD; {doc['settings']['threads']} thread(s); {doc['machine']['cpu_model']}")
    peers = doc["settings"].get("peers", ["torch"] if doc["settings"].get("torch") else [])
    cols = ["backend", "blas", "dtype", "batch", "train/s", "step ms", "GFLOP/s", "roof",
            "gemm x", "RSS MB"]
    for p in peers:
        cols += [f"{p}/s", f"{p} x", f"{p} MB"]
    lines = []
    for r in doc["results"]:
        if "error" in r:
            lines.append([r["backend"], "-", r["dtype"], str(r["batch"]),
                          "error: " + r["error"][:60]])
            continue
        mem = r.get("gpu_pool_bytes") or r.get("peak_rss_bytes")
        line = [
            r["backend"], r.get("blas") or "-", r["dtype"], str(r["batch"]),
            _fmt(r["train_samples_per_s"], ",.0f"), _fmt(r["step_s"] * 1e3, ".2f"),
            _fmt(r["step_gflops"], ".0f"), _fmt(r.get("roofline_fraction"), ".2f"),
            _fmt(r.get("gemm_overhead"), ".2f"), _mb(mem),
        ]
        for p in peers:
            pr = r.get("peers", {}).get(p)
            if pr is None and p == "torch" and "torch_ratio" in r:  # an older document
                pr = {"train_samples_per_s": r.get("torch_train_samples_per_s"),
                      "ratio": r.get("torch_ratio"),
                      "peak_rss_bytes": r.get("torch_peak_rss_bytes")}
            pr = pr or {}
            line += [_fmt(pr.get("train_samples_per_s"), ",.0f"), _fmt(pr.get("ratio"), ".2f"),
                     _mb(pr.get("gpu_peak_bytes") or pr.get("peak_rss_bytes"))]
        lines.append(line)
    out = [head] + _table(cols, lines)
    flags = doc["machine"].get("cpu_flags")
    if flags:
        out.append(f"cpu flags: {' '.join(flags)}")
    for r in doc["results"]:
        routes = r.get("gemm_routes")
        if routes:
            out.append(f"GEMM routes at batch {r['batch']}: "
                       + "; ".join(f"{cls} {how}" for cls, how in routes.items()))
    if peers:
        out.append("(<peer> x: the peer's training step time / mlpx's, median of paired "
                   "rounds; above 1 mlpx is faster)")
    infer = format_inference(doc)
    return "\n".join(out + ([""] + infer if infer else []))


def format_inference(doc: dict[str, Any]) -> list[str]:
    """Inference: batch-1 latency and throughput at the inference batch, per backend and
    dtype (medians over every run of the sweep), against the peers."""
    table = _inference_rows(doc)
    return [table[0]] + _table(table[1], table[2]) if table else []


def _inference_rows(doc: dict[str, Any]) -> tuple[str, list[str], list[list[str]]] | None:
    peers = doc["settings"].get("peers", [])
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in doc["results"]:
        if "error" not in r and r.get("infer_latency_s"):
            groups.setdefault((r["backend"], r["dtype"]), []).append(r)
    if not groups:
        return None
    cols = ["backend", "dtype", "batch-1 us", "infer/s", "small batch-1 us"]
    for p in peers:
        cols += [f"{p} us", f"{p} lat x", f"{p}/s", f"{p} x", f"{p} small us", f"{p} small x"]
    lines = []
    batch = None
    for (backend, dtype), rs in groups.items():
        batch = rs[0].get("infer_batch")
        line = [backend, dtype, _fmt(_median([r["infer_latency_s"] for r in rs]) * 1e6, ".0f"),
                _fmt(_median([r["infer_samples_per_s"] for r in rs]), ",.0f"),
                _fmt(_us(_median([r.get("infer_small_latency_s") for r in rs])), ".0f")]
        for p in peers:
            prs = [r["peers"][p] for r in rs if p in r.get("peers", {})]
            lat = _median([q.get("infer_latency_s") for q in prs])
            line += [_fmt(lat * 1e6 if lat else None, ".0f"),
                     _fmt(_median([q.get("infer_latency_ratio") for q in prs]), ".2f"),
                     _fmt(_median([q.get("infer_samples_per_s") for q in prs]), ",.0f"),
                     _fmt(_median([q.get("infer_ratio") for q in prs]), ".2f"),
                     _fmt(_us(_median([q.get("infer_small_latency_s") for q in prs])), ".0f"),
                     _fmt(_median([q.get("infer_small_latency_ratio") for q in prs]), ".2f")]
        lines.append(line)
    return (f"inference (mlpx predict; PyTorch inference_mode; JAX jit): latency at batch 1, "
            f"samples/s at batch {batch}, and the small model's (784-256-128-10) latency at "
            "batch 1; x = the peer's time / mlpx's", cols, lines)


def _us(seconds: float | None) -> float | None:
    return seconds * 1e6 if seconds else None


def format_profile(doc: dict[str, Any]) -> str:
    """Per-op breakdown of mlpx's step (from `--profile` runs), one block per batch size."""
    blocks = []
    for r in doc["results"]:
        runs = [m for m in r.get("runs", {}).get("mlpx", []) if m.get("profile")]
        if not runs:
            continue
        prof = runs[0]["profile"]
        step = _median([m["profile"]["step_s"] for m in runs])
        plain = r["step_s"]
        head = (f"profile: {r['backend']} {r['dtype']} batch {r['batch']}: step "
                f"{step * 1e3:.2f} ms with op timers ({plain * 1e3:.2f} ms without); "
                f"{prof['calls_per_step']:.0f} op calls/step, {prof['timer_per_call_s'] * 1e6:.1f}"
                f" us of timer each (counted under Python)")
        gemm_alone = runs[0].get("gemm_s", {})
        labels = [o["label"] for o in prof["ops"]]
        lines = []
        kinds: dict[str, float] = {}
        for label in labels:
            vals = [next((o for o in m["profile"]["ops"] if o["label"] == label), None)
                    for m in runs]
            vals = [v for v in vals if v]
            t = _median([v["s_per_step"] for v in vals])
            kind = vals[0]["kind"]
            kinds[kind] = kinds.get(kind, 0.0) + t
            alone = gemm_alone.get(label[5:]) if label.startswith("GEMM ") else None
            lines.append([label, _fmt(vals[0]["calls_per_step"], ".2g"), f"{t * 1e3:.3f}",
                          f"{100 * t / step:.1f}", _fmt(alone * 1e3 if alone else None, ".3f")])
        python = step - sum(kinds.values())
        for kind, t in list(kinds.items()) + [("Python (outside every op)", python)]:
            lines.append([f"= {kind}", "", f"{t * 1e3:.3f}", f"{100 * t / step:.1f}",
                          _fmt(r["gemm_step_s"] * 1e3 if kind == "gemm" else None, ".3f")])
        table = _table(["op", "calls", "ms/step", "% step", "alone ms"], lines)
        best = r.get("machine_best_gemm_gflops") or r.get("best_gemm_gflops")
        flops = doc["model"]["flops_per_sample_train"] * r["batch"]
        tail = [f"GEMM-only bound: the step's GEMMs alone {r['gemm_step_s'] * 1e3:.2f} ms "
                f"(step / that = {plain / r['gemm_step_s']:.2f}); at the best GEMM rate "
                f"measured ({best:.0f} GFLOP/s) {flops / best / 1e6:.2f} ms "
                f"(mlpx reaches {flops / best / 1e9 / plain:.2f} of it)"]
        for p, pr in r.get("peers", {}).items():
            tail.append(f"{p}: step {pr['step_s'] * 1e3:.2f} ms ({p} time / mlpx's = "
                        f"{pr['ratio']:.2f})")
        blocks.append("\n".join([head] + table + tail))
    return "\n\n".join(blocks)


def format_markdown(doc: dict[str, Any]) -> str:
    """The results as Markdown tables (what README and docs/benchmarks.md show): training
    per backend, dtype and batch, against every peer, then inference."""
    names = {"torch": "PyTorch eager", "jax": "JAX jit"}
    peers = doc["settings"].get("peers", [])
    m, mach = doc["model"], doc["machine"]
    v = mach.get("versions", {})
    loads = [r.get("max_loadavg", 0.0) for r in doc["results"] if "error" not in r]
    out = [f"Model {'-'.join(map(str, m['sizes']))} {m['activation']}, softmax cross-entropy, "
           f"SGD; {mach['cpu_model']}, {doc['settings']['threads']} thread(s); NumPy "
           f"{v.get('numpy')}, Numba {v.get('numba')}"
           + "".join(f", {names.get(p, p)} {_peer_version(doc, p)}" for p in peers)
           + f"; {doc['settings']['rounds']} alternated rounds; highest 1-minute load average "
           f"during the runs {max(loads, default=0.0):.1f}. Command: `{doc.get('command')}`", ""]
    head = ["backend", "dtype", "batch", "mlpx samples/s"]
    for p in peers:
        head += [f"{names.get(p, p)} samples/s", f"{names.get(p, p)}: its time ÷ mlpx's "
                                                 "(min–max)"]
    head += ["step ÷ GEMMs alone", "share of GEMM bound", "peak RSS MB (mlpx"
             + "".join(f" / {p}" for p in peers) + ")"]
    rows = []
    for r in doc["results"]:
        if "error" in r:
            rows.append([r["backend"], r["dtype"], str(r["batch"]), "error: " + r["error"][:50]]
                        + [""] * (len(head) - 4))
            continue
        line = [r["backend"], r["dtype"], str(r["batch"]), _fmt(r["train_samples_per_s"], ",.0f")]
        mem = [_mb(r.get("gpu_pool_bytes") or r.get("peak_rss_bytes"))]
        for p in peers:
            q = r.get("peers", {}).get(p)
            if not q:
                line += ["-", "-"]
                mem.append("-")
                continue
            lo, hi = q["spread"]
            line += [_fmt(q["train_samples_per_s"], ",.0f"),
                     f"**{q['ratio']:.2f}** ({lo:.2f}–{hi:.2f})"]
            mem.append(_mb(q.get("gpu_peak_bytes") or q.get("peak_rss_bytes")))
        line += [_fmt(r.get("gemm_overhead"), ".2f"), _fmt(r.get("roofline_fraction"), ".2f"),
                 " / ".join(mem)]
        rows.append(line)
    out += _markdown(head, rows)
    infer = _inference_rows(doc)
    if infer:
        out += ["", infer[0].capitalize(), ""] + _markdown(infer[1], infer[2])
    return "\n".join(out) + "\n"


def _peer_version(doc: dict[str, Any], peer: str) -> str:
    for r in doc["results"]:
        q = r.get("peers", {}).get(peer)
        if q and q.get("version"):
            return str(q["version"])
    return "?"


def _markdown(head: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---"] * 2 + ["---:"] * (len(head) - 2)
    return ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"] + [
        "| " + " | ".join(row) + " |" for row in rows]


def write_plot(doc: dict[str, Any], path: Path) -> bool:
    """Training samples/s against batch size per backend and dtype, with each peer and the
    GEMM roofline (left), and each peer's step time / mlpx's (right); False without mpl."""
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
    names = {"torch": "PyTorch eager", "jax": "JAX jit"}
    for (backend, dtype), rs in groups.items():
        b = [r["batch"] for r in rs]
        axes[0].plot(b, [r["train_samples_per_s"] for r in rs], "o-",
                     label=f"mlpx {backend} {dtype}")
        for p in doc["settings"].get("peers", []):
            prs = [(r["batch"], r.get("peers", {}).get(p)) for r in rs]
            prs = [(x, q) for x, q in prs if q]
            if not prs:
                continue
            label = f"{names.get(p, p)} {backend} {dtype}"
            axes[0].plot([x for x, _ in prs], [q["train_samples_per_s"] for _, q in prs],
                         "s--", label=label)
            axes[1].plot([x for x, _ in prs], [q["ratio"] for _, q in prs], "s-", label=label)
        bound = [r.get("bound_samples_per_s") for r in rs]
        if all(v is not None for v in bound):
            axes[0].plot(b, bound, ":", color="gray", label=f"GEMM roofline {backend} {dtype}")
    axes[1].axhline(1.0, color="gray", lw=0.8)
    m = doc["model"]
    titles = (f"training: {'-'.join(map(str, m['sizes']))} {m['activation']}",
              "peer's step time / mlpx's (above 1: mlpx faster)")
    for ax, title, ylabel in zip(axes, titles, ("samples / s", "ratio"), strict=True):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"{doc['machine']['cpu_model']}, {doc['settings']['threads']} thread(s)",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


#: where results go without --out: under the working directory, and git-ignored in mlpx's own
#: checkout, so that a run never adds untracked files to the source tree
DEFAULT_RESULTS_DIR = "bench_results"


def default_out_dir() -> Path:
    stamp = _dt.date.today().isoformat()
    return Path(DEFAULT_RESULTS_DIR) / f"{stamp}-{socket.gethostname()}"


def run_command(args: argparse.Namespace) -> int:
    """`mlpx bench` with arguments the command line has already checked (mlpx.commands.cli)."""
    from ..backends import available_backends

    backends = args.backend or available_backends()
    dtypes = args.dtype
    rounds = args.rounds if args.rounds is not None else (1 if args.profile else 5)
    peers = [] if args.no_torch else args.peers
    batches, min_time, epoch_samples = args.batches, args.min_time, args.epoch_samples
    if args.profile:
        batches = batches or list(QUICK_BATCHES)
    if args.quick:
        batches = batches or list(QUICK_BATCHES)
        rounds, min_time, epoch_samples = 1, min(min_time, 0.2), min(epoch_samples, 2048)
    print(f"mlpx bench: backends {', '.join(backends)}, dtype {', '.join(dtypes)}, "
          f"{rounds} round(s), {args.threads} thread(s); each measurement in its own process")
    doc = run_bench(backends, dtypes, args.sizes, args.activation, batches, rounds, min_time,
                    args.threads, epoch_samples=epoch_samples, peers=peers,
                    profile=args.profile)
    doc["command"] = "mlpx " + " ".join(_argv_of(args))
    out = Path(args.out) if args.out else default_out_dir()
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / ("profile.json" if args.profile else "bench.json")
    json_path.write_text(json.dumps(doc, indent=1))
    (out / ("profile.md" if args.profile else "bench.md")).write_text(format_markdown(doc))
    print()
    print(format_table(doc))
    for line in sorted({f"bfloat16 GEMMs ({r['backend']}): {r['bf16_gemm']}"
                        for r in doc["results"] if r.get("bf16_gemm")}):
        print(line)
    print()
    if args.profile:
        print(format_profile(doc))
        print()
    if peers is None and not doc["settings"]["peers"]:
        print("PyTorch is not installed: no comparison (pip install torch to add it)")
    for name, why in doc["skipped_peers"].items():
        print(f"peer {name} skipped: {why}")
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
    if not args.no_plot and not args.profile:
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
