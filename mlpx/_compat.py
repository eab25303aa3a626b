"""Probe optional dependencies without importing them eagerly.

`import mlpx` must stay cheap: nothing here imports cupy or numba at module load.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache


def has_module(name: str) -> bool:
    """True when `name` can be imported (checked without importing it)."""
    return importlib.util.find_spec(name) is not None


def has_cupy() -> bool:
    return has_module("cupy")


@lru_cache(maxsize=1)
def gpu_probe() -> tuple[int, str | None]:
    """(number of CUDA devices CuPy can see, what went wrong when asking, or None). No
    CuPy, a CuPy that cannot load, no driver or no device all mean no GPU."""
    if not has_cupy():
        return 0, None
    try:
        import cupy
    except Exception as e:  # e.g. CUDA libraries missing: the install, not the machine
        return 0, f"CuPy is installed but cannot be imported ({type(e).__name__}: {e})"
    try:
        return int(cupy.cuda.runtime.getDeviceCount()), None
    except Exception as e:  # no driver, a driver too old for CuPy's CUDA, no device
        return 0, f"{type(e).__name__}: {e}"


def gpu_count() -> int:
    """Number of CUDA devices CuPy can see (0 without CuPy, driver or GPU)."""
    return gpu_probe()[0]


def cpu_model() -> str:
    """The processor's model name (Linux /proc/cpuinfo, else what `platform` knows): what a
    measured choice of GEMM library and the benchmark records depend on."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def cpu_flags(wanted: tuple[str, ...]) -> list[str]:
    """Those of the instruction-set flags `wanted` that the processor has (Linux
    /proc/cpuinfo; [] elsewhere), in `wanted`'s order."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    have = set(line.split(":", 1)[1].split())
                    return [flag for flag in wanted if flag in have]
    except OSError:
        pass
    return []
