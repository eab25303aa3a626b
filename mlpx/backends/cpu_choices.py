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
    lines.append(_small_batch_line())
    return "\n".join(lines)


def _small_batch_line() -> str:
    """The small-batch inference cut-offs measured on this machine so far, per model."""
    import os

    from . import measured, small_batch

    forced = os.environ.get("MLPX_SMALL_BATCH", "").strip()
    head = "small-batch predict: compiled Dense chain up to "
    if forced:
        return head + f"{forced} rows (MLPX_SMALL_BATCH)"
    here = measured.machine_key()
    cut = [f"{key.rsplit('sizes ', 1)[-1]} {entry.get('max_rows')}"
           for key, entry in measured.read_all(small_batch.QUESTION).items()
           if key.startswith(here) and isinstance(entry, dict)]
    shown = ", ".join(cut[-5:]) + (f" (and {len(cut) - 5} more)" if len(cut) > 5 else "")
    return head + ("the cut-off measured per model on first use; measured here (sizes rows): "
                   + (shown if cut else "none yet"))
