"""Find, compile and cache the CUDA C kernels of the `cuda` backend (kernels/*.cu).

The sources live in `kernels/` at the repository root and ship inside the wheel as
`mlpx/kernels/` (hatch force-include) and inside the sdist as `kernels/`. `kernel_dir()` finds
them in either layout.

Compilation: NVRTC (the library CuPy loads) with `NVRTC_OPTIONS`, called directly rather than
through `cupy.RawModule(code=...)`, because CuPy appends `-ftz=true` after the caller's options
and NVRTC keeps the last occurrence: float32 subnormals would be flushed to zero on every load,
store and comparison, and the kernels would no longer agree with their Numba twins. The binary
(a cubin for the GPU's architecture, or PTX where this NVRTC does not know it) is cached on
disk under `cache_root()/cuda` (MLPX_CACHE_DIR, or ~/.cache/mlpx), keyed by the source, the
options, the target and the NVRTC version, and loaded with `cupy.RawModule(path=...)`.
Each file is compiled once per process, on first use, or ahead of time by
`CUDABackend.warmup()`.

This module imports CuPy only when compiling or loading, so it can be imported (and its paths,
options and `nvrtc_compile` used by the tests) on machines without a GPU.
"""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

#: Kernel source files, one module each.
KERNEL_FILES: tuple[str, ...] = (
    "activations.cu", "losses.cu", "optim.cu", "random.cu", "bfloat16.cu",
)
#: Helpers every kernel file includes; joined into each source before NVRTC compiles it.
COMMON_HEADER = "common.cuh"
_INCLUDE = re.compile(r'^#include "common\.cuh"[ \t]*$', re.M)

#: Options NVRTC gets at run time; the nvcc test compiles with the same ones. No FMA
#: contraction and no flush-to-zero: the kernels must round exactly like their Numba twins,
#: float32 subnormals included.
NVRTC_OPTIONS: tuple[str, ...] = ("--std=c++14", "-fmad=false", "-ftz=false")

#: PTX instructions that only exist with `.ftz` and come from libdevice's float64 routines
#: (reciprocal and exp2 seeds that the routine refines); they never touch a stored float32.
FTZ_ONLY_INSTRUCTIONS: tuple[str, ...] = ("rcp.approx.ftz.f64", "ex2.approx.ftz.f32")

#: Block size of every launch (the reduction kernels assume it: MLPX_BLOCK in the sources).
BLOCK = 256
#: Most blocks per launch; grid-stride loops cover larger arrays. Also the number of partial
#: sums a reduction kernel writes at most.
MAX_BLOCKS = 1024
#: Classes above which softmax cross-entropy takes one 32-thread group per row instead of
#: one thread per row (SOFTMAX_WIDE in losses.cu).
SOFTMAX_WIDE = 32

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
        if all((d / name).is_file() for name in (*KERNEL_FILES, COMMON_HEADER)):
            return d
    searched = ", ".join(str(d) for d in _candidate_dirs())
    raise FileNotFoundError(
        f"the CUDA kernel sources ({', '.join(KERNEL_FILES)}, {COMMON_HEADER}) were not found "
        f"in {searched}; "
        "the installation is incomplete: reinstall mlpx (pip install --force-reinstall mlpx)"
    )


def kernel_sources() -> dict[str, Path]:
    """{file name: path} of every kernel source file."""
    d = kernel_dir()
    return {name: d / name for name in KERNEL_FILES}


def kernel_source(filename: str) -> str:
    """The source NVRTC compiles for `filename`: the file with common.cuh joined in place of
    its #include (nvcc reads the same text through the #include). The activation ids of
    activations.cu are checked against the Python declarations first."""
    d = kernel_dir()
    text = (d / filename).read_text(encoding="utf-8")
    if filename == "activations.cu":
        check_activation_ids(text)
    common = (d / COMMON_HEADER).read_text(encoding="utf-8")
    return _INCLUDE.sub(lambda _: common, text, count=1)


def activation_ids(text: str) -> dict[str, int]:
    """{name: id} of the `#define ACT_<NAME> <id>` lines of an activations.cu source."""
    return {k.lower(): int(v) for k, v in re.findall(r"^#define ACT_(\w+) (\d+)", text, re.M)}


def check_activation_ids(text: str) -> None:
    """Raise RuntimeError unless activations.cu defines exactly the scalar-kernel ids of the
    built-in declarations (mlpx.activations) and has a case for each in act_scalar and
    dact_scalar (and PReLU's chunk size): a kernel must never run another activation's
    formula."""
    from .. import activations

    decls = [c for c in activations.builtins() if activations.scalar_kernel(c()) is not None]
    want = {c.name: c.code for c in decls}
    trainable = {c.name for c in decls if c.differentiable}
    got = activation_ids(text)
    problems = [f"{n}: Python id {want[n]}, CUDA id {got.get(n)}"
                for n in sorted(want) if got.get(n) != want[n]]
    problems += [f"{n}: defined in CUDA only" for n in sorted(set(got) - set(want))]
    chunk = re.search(r"^#define PRELU_CHUNK (\d+)", text, re.M)
    if chunk is None or int(chunk.group(1)) != activations.PRELU_CHUNK:
        problems.append(f"PRELU_CHUNK: Python {activations.PRELU_CHUNK}, CUDA "
                        f"{chunk.group(1) if chunk else None}")
    for fn in ("act_scalar", "dact_scalar"):
        m = re.search(rf"__device__ double {fn}\(.*?\n}}\n", text, re.S)
        body = m.group(0) if m else ""
        needed = want if fn == "act_scalar" else trainable
        problems += [f"{n}: no case in {fn}" for n in sorted(needed)
                     if f"case ACT_{n.upper()}:" not in body]
    if problems:
        raise RuntimeError(
            "kernels/activations.cu does not match the activations declared in "
            "mlpx/activations.py: " + "; ".join(problems)
        )


def nvcc_command(source: Path | str, arch: str, output: Path | str) -> list[str]:
    """An nvcc command that compiles `source` to a cubin for `arch` (e.g. "sm_90") with the
    options NVRTC receives at run time (device code only, as NVRTC compiles it)."""
    return ["nvcc", "-cubin", f"-arch={arch}", *NVRTC_OPTIONS, "-o", str(output), str(source)]


def suffix(dtype: Any) -> str | None:
    """"f32"/"f64" for the dtypes the kernels are instantiated for, else None (fallback)."""
    return _SUFFIX.get(np.dtype(dtype))


def kernel_names(filename: str) -> list[str]:
    """Every kernel (extern "C" __global__ function) `filename` defines, f32 and f64 names
    expanded from its MLPX_INSTANTIATE macro."""
    text = (kernel_dir() / filename).read_text(encoding="utf-8").replace("\\\n", " ")
    templated = re.findall(r'extern "C" __global__ void (\w+)##S\s*\(', text)
    plain = re.findall(r'extern "C" __global__ void (\w+)\s*\(', text)
    suffixes = re.findall(r"^MLPX_INSTANTIATE\(\w+, (\w+)\)", text, re.M)
    return [f"{k}{s}" for k in templated for s in suffixes] + plain


def nvrtc_compile(source: str, name: str, target: str,
                  options: tuple[str, ...] = NVRTC_OPTIONS) -> bytes:
    """Compile CUDA C `source` with NVRTC for `target`: "sm_90" gives a cubin, "compute_90"
    PTX. Needs CuPy and the NVRTC library only (no GPU, no driver)."""
    from cupy_backends.cuda.libs import nvrtc

    prog = nvrtc.createProgram(source, name, [], [])
    try:
        try:
            nvrtc.compileProgram(prog, [*options, f"-arch={target}"])
        except nvrtc.NVRTCError as e:
            log = nvrtc.getProgramLog(prog)
            raise RuntimeError(f"NVRTC failed to compile {name} for {target}: {e}\n{log}") from e
        out = nvrtc.getCUBIN(prog) if target.startswith("sm_") else nvrtc.getPTX(prog)
    finally:
        nvrtc.destroyProgram(prog)
    return out if isinstance(out, bytes) else out.encode()


def nvrtc_target(compute_capability: str) -> str:
    """A cubin target for the GPU when this NVRTC knows its architecture, else PTX for the
    newest one it knows that is not newer than the GPU (the driver compiles that PTX)."""
    from cupy_backends.cuda.libs import nvrtc

    cc = int(compute_capability)
    known = sorted(int(a) for a in nvrtc.getSupportedArchs())
    if cc in known:
        return f"sm_{cc}"
    older = [a for a in known if a <= cc]
    return f"compute_{older[-1] if older else known[0]}"


def nvrtc_version() -> tuple[int, int]:
    from cupy_backends.cuda.libs import nvrtc

    return tuple(nvrtc.getVersion())


def cache_dir() -> Path:
    from .._numba_cache import cache_root

    return cache_root() / "cuda"


def compiled_path(filename: str, target: str) -> Path:
    """The cached binary of `filename` for `target`, compiled now unless it exists."""
    source = kernel_source(filename)
    key = "\0".join([source, *NVRTC_OPTIONS, target, repr(nvrtc_version())])
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    ext = "cubin" if target.startswith("sm_") else "ptx"
    path = cache_dir() / f"{Path(filename).stem}-{target}-{digest}.{ext}"
    if not path.is_file():
        binary = nvrtc_compile(source, filename, target)
        from ..saving.container import write_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        # write then rename (a concurrent process never loads a half-written file), with the
        # umask's permissions as every file mlpx writes
        write_atomic(path, binary)
    return path


def _module(device_id: int, filename: str) -> Any:
    key = (device_id, filename)
    mod = _modules.get(key)
    if mod is None:
        import cupy

        with _lock:
            mod = _modules.get(key)
            if mod is None:
                cc = cupy.cuda.Device(device_id).compute_capability
                path = compiled_path(filename, nvrtc_target(cc))
                mod = cupy.RawModule(path=str(path))
                _modules[key] = mod
    return mod


def get_kernel(device_id: int, filename: str, name: str) -> Any:
    """The compiled kernel `name` (e.g. "bias_act_f32") of `filename` on GPU `device_id`.

    Compiles the file on its first use in this process (NVRTC, or the disk cache). The
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
