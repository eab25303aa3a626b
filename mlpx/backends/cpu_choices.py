"""What the cpu backend chose on this machine, and why: the lines `mlpx info` prints."""

from __future__ import annotations

#: instruction-set extensions that change which GEMM kernels a library runs
_ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni",
              "avx512_bf16", "amx_tile", "amx_bf16", "asimd", "sve")


def isa_flags() -> list[str]:
    """The processor's vector instruction-set flags that matter here (Linux; else [])."""
    from .._compat import cpu_flags

    return cpu_flags(_ISA_FLAGS)


def describe() -> str:
    """The processor, the thread count and where it came from, the GEMM path and the
    small-batch inference path in force (measuring them if this machine has not yet)."""
    from .._compat import cpu_model
    from . import get_backend, threads

    ops = get_backend("cpu")
    blas = ops.blas  # loads the GEMM library, whose pool is then listed
    n, source = threads.num_threads_source()
    lines = [f"cpu: {cpu_model()} ({' '.join(isa_flags()) or 'flags unknown'})",
             f"threads: {n} ({source}); pools: "
             + (", ".join(f"{k} {v}" for k, v in threads.pool_threads().items()) or "none")]
    lines.append(f"cpu GEMM path: {blas} (MLPX_BLAS=auto|onednn|mkl|numpy)")
    lines += _gemm_route_lines(ops)
    lines.append(_small_batch_line())
    return "\n".join(lines)


def _gemm_route_lines(ops) -> list[str]:  # type: ignore[no-untyped-def]
    """Which library and thread count each float32 GEMM shape class takes here, and whether
    that was measured or is the default."""
    from . import gemm_routes

    libraries = ops.gemm_libraries
    head = f"float32 GEMM routes among {' and '.join(libraries)}"
    if not gemm_routes.measuring_enabled():
        return [f"{head}: the default routes ({libraries[0]} on all threads; NumPy's "
                "OpenBLAS for products it runs in the calling thread), not measured: "
                "MLPX_GEMM_MEASURE=0"]
    routes = gemm_routes.measured_routes(libraries)
    if not routes:
        return [f"{head}: measured per shape class on first use; none measured here yet "
                "(`mlpx info --measure` measures the benchmark models' training steps); "
                f"until then the default routes ({libraries[0]} on all threads; NumPy's "
                "OpenBLAS for products it runs in the calling thread)"]
    lines = [f"{head}, measured here per shape class (m*n*k, transposes; default "
             f"{libraries[0]}, kept unless another is {100 - round(gemm_routes.MARGIN * 100)} % "
             "faster):"]
    for cls, entry in sorted(routes.items(), key=lambda kv: _class_order(kv[0])):
        if "time_ratio" in entry:  # the thread-pool choice: whole benchmark steps, as ratios
            cls, what = "thread pool", f"step time / {libraries[0]}'s: " + ", ".join(
                f"{lb} {' / '.join(f'{x:.3g}' for x in r)}"
                for lb, r in entry["time_ratio"].items() if lb != libraries[0])
        else:
            what = "ms: " + ", ".join(
                f"{lb} {ms:.3g}" for lb, ms in entry.get("median_ms", {}).items())
        lines.append(f"  {cls:<20} {entry.get('route')!s:<16} ({what}; "
                     f"{entry.get('measured', '?')})")
    return lines


def _class_order(cls: str) -> tuple[int, str]:
    words = cls.split()
    return (int(words[1][2:]) if len(words) > 1 and words[1].startswith("2^") else 0, cls)


def measure_training_shapes(models: dict[tuple[int, ...], tuple[int, ...]]) -> None:
    """Measure (or read back) the routes of every GEMM of a training step: forward x @ W,
    dX = delta @ W^T and dW = x^T @ delta, for each model's layer sizes at each batch."""
    import numpy as np

    from . import get_backend

    ops = get_backend("cpu")
    for sizes, batches in models.items():
        for batch in batches:
            for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True):
                x = ops.zeros((batch, fan_in), np.float32)
                w = ops.zeros((fan_in, fan_out), np.float32)
                d = ops.zeros((batch, fan_out), np.float32)
                ops.matmul(x, w, ops.empty((batch, fan_out), np.float32))
                ops.matmul(d, w, ops.empty((batch, fan_in), np.float32), trans_b=True)
                ops.matmul(x, d, ops.empty((fan_in, fan_out), np.float32), trans_a=True)


def _small_batch_line() -> str:
    """The small-batch inference cut-offs measured on this machine so far, per model."""
    import os

    from . import measured, small_batch

    forced = os.environ.get("MLPX_SMALL_BATCH", "").strip()
    head = "small-batch predict: compiled Dense chain "
    if forced:
        return head + f"up to {forced} rows (MLPX_SMALL_BATCH)"
    here = measured.machine_key()
    cut = []
    for key, entry in measured.read_all(small_batch.QUESTION).items():
        reach = small_batch.Reach.from_json(entry.get("served")) \
            if key.startswith(here) and isinstance(entry, dict) else None
        if reach is not None:  # entries of an older measurement method have none
            cut.append(f"{key.rsplit('sizes ', 1)[-1]}: {reach}")
    shown = "; ".join(cut[-5:]) + (f" (and {len(cut) - 5} more)" if len(cut) > 5 else "")
    return head + ("at the batch sizes measured per model on first use; measured here "
                   "(sizes: rows served): " + (shown if cut else "none yet"))
