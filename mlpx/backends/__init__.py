"""Backend registry: `get_backend("cpu" | "cuda" | "cuda:N" | "auto" | "reference")`.

Backends are singletons per name (per device for CUDA). The CUDA backend module is imported
only when asked for, so `import mlpx` never imports CuPy.
"""

from __future__ import annotations

import re

from .._compat import gpu_count, gpu_probe, has_cupy
from ..errors import BackendUnavailableError
from .base import Backend
from .cpu import CPUBackend

VALID_NAMES = ("cpu", "cuda", "cuda:N", "auto", "reference")
_INSTANCES: dict[str, Backend] = {}
_CUDA_RE = re.compile(r"^cuda(?::(\d+))?$")

CUDA_INSTALL_HINT = (
    'install CuPy with the extra matching your CUDA toolkit: pip install "mlpx[cuda12]" '
    '(CUDA 12.x) or pip install "mlpx[cuda13]" (CUDA 13.x)'
)


def available_backends() -> list[str]:
    """["cpu"], or ["cpu", "cuda"] when CuPy sees a GPU."""
    return ["cpu", "cuda"] if gpu_count() > 0 else ["cpu"]


def cuda_unavailable_reason(device: int = 0) -> str | None:
    """Why backend 'cuda:<device>' cannot run here (what is missing, and the fix), or None."""
    if not has_cupy():
        return f"backend 'cuda' needs CuPy, which is not installed; {CUDA_INSTALL_HINT}"
    count, error = gpu_probe()
    if count == 0:
        if error is None:
            return ("backend 'cuda' needs a CUDA GPU, but CuPy is installed and found none; "
                    "use backend='cpu' on this machine")
        if error.startswith("CuPy is installed"):
            return (f"backend 'cuda' needs CuPy to reach a GPU, but {error}; reinstall it: "
                    f"{CUDA_INSTALL_HINT}; or use backend='cpu' on this machine")
        return (f"backend 'cuda' needs a CUDA GPU, but CuPy could not reach one: {error} (no "
                "device, no NVIDIA driver, or a driver older than the CUDA of CuPy's build: "
                "see nvidia-smi); use backend='cpu' on this machine")
    if device >= count:
        return f"backend 'cuda:{device}' asked for GPU {device}, but only {count} GPU(s) exist"
    return None


def check_backend_name(name: str) -> str:
    """`name` normalised if it names a backend (cpu, cuda, cuda:N, auto, reference), else
    ValueError listing the valid names. Whether the backend is usable here is not checked."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a name or a Backend, got {type(name).__name__}")
    key = name.strip().lower()
    if key in ("cpu", "auto", "reference", "numpy") or _CUDA_RE.match(key):
        return key
    raise ValueError(
        f"unknown backend {name!r}; valid names are {', '.join(VALID_NAMES)} "
        "(cuda:N picks GPU number N)"
    )


def get_backend(name: str | Backend = "cpu") -> Backend:
    """Return the backend object for `name` (an existing Backend is returned as is)."""
    if isinstance(name, Backend):
        return name
    key = check_backend_name(name)
    if key == "auto":
        key = "cuda" if gpu_count() > 0 else "cpu"
    if key in _INSTANCES:
        return _INSTANCES[key]
    if key == "cpu":
        backend: Backend = CPUBackend()
    elif key in ("reference", "numpy"):
        backend = Backend()
    else:
        m = _CUDA_RE.match(key)
        device = int(m.group(1) or 0)
        key = f"cuda:{device}"
        if key in _INSTANCES:
            return _INSTANCES[key]
        reason = cuda_unavailable_reason(device)
        if reason:
            raise BackendUnavailableError(reason)
        from .cuda import CUDABackend

        backend = CUDABackend(device)
    _INSTANCES[key] = backend
    return backend


__all__ = [
    "Backend", "CPUBackend", "available_backends", "get_backend", "BackendUnavailableError",
    "VALID_NAMES", "check_backend_name", "cuda_unavailable_reason",
]
