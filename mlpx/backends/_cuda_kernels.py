"""Find, compile and cache the CUDA C kernels of the `cuda` backend (kernels/*.cu).

The sources live in `kernels/` at the repository root and ship inside the wheel as
`mlpx/kernels/` (hatch force-include) and inside the sdist as `kernels/`. `kernel_dir()` finds
them in either layout. Each file is compiled once per process, on first use, by
`cupy.RawModule` (NVRTC); CuPy caches the compiled binary on disk (`CUPY_CACHE_DIR`, by
default `~/.cupy/kernel_cache`), so a second process loads it without compiling.

This module imports CuPy only inside `get_kernel`, so it can be imported (and its paths and
options used by the nvcc test) on machines without CuPy.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

#: Kernel source files, one `cupy.RawModule` each.
KERNEL_FILES: tuple[str, ...] = ("activations.cu", "losses.cu", "optim.cu", "random.cu")

#: Options NVRTC gets at run time; the nvcc test compiles with the same ones. No FMA
#: contraction: the kernels must round exactly like their Numba twins.
NVRTC_OPTIONS: tuple[str, ...] = ("--std=c++14", "-fmad=false")

#: Block size of every launch (the reduction kernels assume it: MLPX_BLOCK in the sources).
BLOCK = 256
#: Most blocks per launch; grid-stride loops cover larger arrays. Also the number of partial
#: sums a reduction kernel writes at most.
MAX_BLOCKS = 1024

_SUFFIX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_modules: dict[tuple[int, str], Any] = {}
_functions: dict[tuple[int, str], Any] = {}
_lock = threading.Lock()


def _candidate_dirs() -> list[Path]:
    pkg = Path(__file__).resolve().parent.parent  # .../mlpx
    # installed wheel: mlpx/kernels; source or editable checkout: <repo root>/kernels
    return [pkg / "kernels", pkg.parent / "kernels"]


def kernel_dir() -> Path:
    """The directory that holds the kernel sources (installed copy first, then the checkout)."""
    for d in _candidate_dirs():
        if all((d / name).is_file() for name in KERNEL_FILES):
            return d
    searched = ", ".join(str(d) for d in _candidate_dirs())
    raise FileNotFoundError(
        f"the CUDA kernel sources ({', '.join(KERNEL_FILES)}) were not found in {searched}; "
        "the installation is incomplete: reinstall mlpx (pip install --force-reinstall mlpx)"
    )


def kernel_sources() -> dict[str, Path]:
    """{file name: path} of every kernel source file."""
    d = kernel_dir()
    return {name: d / name for name in KERNEL_FILES}


def nvcc_command(source: Path | str, arch: str, output: Path | str) -> list[str]:
    """An nvcc command that compiles `source` to a cubin for `arch` (e.g. "sm_90") with the
    options NVRTC receives at run time (device code only, as NVRTC compiles it)."""
    return ["nvcc", "-cubin", f"-arch={arch}", *NVRTC_OPTIONS, "-o", str(output), str(source)]


def suffix(dtype: Any) -> str | None:
    """"f32"/"f64" for the dtypes the kernels are instantiated for, else None (fallback)."""
    return _SUFFIX.get(np.dtype(dtype))


def _module(device_id: int, filename: str) -> Any:
    key = (device_id, filename)
    mod = _modules.get(key)
    if mod is None:
        import cupy

        with _lock:
            mod = _modules.get(key)
            if mod is None:
                code = (kernel_dir() / filename).read_text(encoding="utf-8")
                mod = cupy.RawModule(code=code, options=NVRTC_OPTIONS)
                _modules[key] = mod
    return mod


def get_kernel(device_id: int, filename: str, name: str) -> Any:
    """The compiled kernel `name` (e.g. "bias_act_f32") of `filename` on GPU `device_id`.

    Compiles the file on its first use in this process (NVRTC, then CuPy's disk cache). The
    caller must have made `device_id` the current device.
    """
    key = (device_id, name)
    fn = _functions.get(key)
    if fn is None:
        fn = _module(device_id, filename).get_function(name)
        _functions[key] = fn
    return fn


def grid(size: int) -> int:
    """Blocks for an elementwise launch over `size` items (grid-stride loops do the rest)."""
    return max(1, min((int(size) + BLOCK - 1) // BLOCK, MAX_BLOCKS))
