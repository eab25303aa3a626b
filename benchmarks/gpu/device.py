"""Every GPU call the kit's stages make, behind one object.

The stages (stages.py, sync_trace.py) reach the GPU only through a `Device`: its properties,
the backend built on it, the kernel modules loaded on it and the backend name handed to the
`mlpx` subcommands. The tests give the stages a fake that records these calls, so every stage
runs in CI without a GPU and a stage that cannot even start fails there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def cuda_version(v: int) -> str:
    """CUDA's integer version (12040) as "12.4"."""
    return f"{v // 1000}.{(v % 1000) // 10}"


class Device:
    """GPU `index` through CuPy and mlpx's cuda backend."""

    #: the backend name the `mlpx check` and `mlpx bench` subprocesses get
    backend_name = "cuda"

    def __init__(self, index: int = 0) -> None:
        self.index = index

    def unavailable_reason(self) -> str | None:
        """Why the cuda backend cannot run here (no CuPy, no GPU), or None."""
        import mlpx

        if "cuda" in mlpx.available_backends():
            return None
        return "CuPy is missing or found no device"

    def properties(self) -> dict[str, Any]:
        """Name, count, memory, compute capability, driver and runtime versions."""
        import cupy

        rt = cupy.cuda.runtime
        props = rt.getDeviceProperties(self.index)
        name = props["name"]
        return {
            "gpu": name.decode() if isinstance(name, bytes) else str(name),
            "gpu_count": int(rt.getDeviceCount()),
            "gpu_memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
            "compute_capability": f"{props['major']}.{props['minor']}",
            "cuda_driver": cuda_version(rt.driverGetVersion()),
            "cuda_runtime": cuda_version(rt.runtimeGetVersion()),
        }

    def compute_capability(self) -> str:
        """"90" for an H100: the form NVRTC's -arch and the loader's cache keys take."""
        import cupy

        return str(cupy.cuda.Device(self.index).compute_capability)

    def backend(self) -> Any:
        import mlpx

        return mlpx.get_backend(f"cuda:{self.index}")

    def load_module(self, path: Path) -> Any:
        """The compiled kernel file at `path` loaded on the GPU, as the loader loads it."""
        import cupy

        with cupy.cuda.Device(self.index):
            return cupy.RawModule(path=str(path))
