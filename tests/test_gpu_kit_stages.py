"""Every stage of the GPU kit (benchmarks/gpu/stages.py) run without a GPU: the stages get a
fake device that records the GPU calls they make, so a stage that cannot even start fails here.

The compile stage runs NVRTC for real (it needs CuPy and the NVRTC library, not a GPU) and
loads each binary through the fake, which looks every kernel up in the binary itself. The GPU
checks run on the host-emulated cuda backend where g++ is found; the trace, check and bench
stages on the cpu backend, at small sizes.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlpx
from mlpx.backends import _cuda_kernels as cuda_kernels

KIT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu"


def _load(name: str):
    if str(KIT) not in sys.path:
        sys.path.insert(0, str(KIT))  # stages.py imports device.py and sync_trace.py
    spec = importlib.util.spec_from_file_location(f"gpu_kit_{name}", KIT / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


stages = _load("stages")
sync_trace = _load("sync_trace")


class FakeModule:
    """A loaded kernel file: get_function finds a kernel only if the binary defines it."""

    def __init__(self, path: Path, calls: list) -> None:
        self.path, self.calls = Path(path), calls
        self.binary = self.path.read_bytes()

    def get_function(self, name: str) -> str:
        self.calls.append(("get_function", self.path.name, name))
        if name.encode() + b"\0" not in self.binary:
            raise LookupError(f"named symbol not found: {name} in {self.path.name}")
        return name


class FakeDevice:
    """The kit's `device.Device` without a GPU: records every call; `backend()` gives the
    backend it was built with, the mlpx subcommands get `backend_name`."""

    def __init__(self, backend: Any = None, backend_name: str = "cpu", cc: str = "90",
                 available: bool = True) -> None:
        self._backend = backend if backend is not None else mlpx.get_backend("cpu")
        self.backend_name, self.cc, self.available = backend_name, cc, available
        self.calls: list[tuple] = []

    def unavailable_reason(self) -> str | None:
        self.calls.append(("unavailable_reason",))
        return None if self.available else "fake device: no GPU"

    def properties(self) -> dict[str, Any]:
        self.calls.append(("properties",))
        return {"gpu": "Fake H100", "gpu_count": 1, "gpu_memory_gib": 79.2,
                "compute_capability": f"{self.cc[0]}.{self.cc[1:]}", "cuda_driver": "13.0",
                "cuda_runtime": "13.0"}

    def compute_capability(self) -> str:
        self.calls.append(("compute_capability",))
        return self.cc

    def backend(self) -> Any:
        self.calls.append(("backend",))
        return self._backend

    def load_module(self, path: Path) -> FakeModule:
        self.calls.append(("load_module", Path(path)))
        return FakeModule(path, self.calls)


def _nvrtc_reason() -> str | None:
    try:
        cuda_kernels.nvrtc_version()
    except Exception as e:  # noqa: BLE001 - any failure to load NVRTC means: cannot compile
        return f"NVRTC unavailable ({type(e).__name__}: {e}); pip install 'mlpx[cuda13]'"
    return None


needs_nvrtc = pytest.mark.skipif(_nvrtc_reason() is not None, reason=_nvrtc_reason() or "")


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    cuda_host = pytest.importorskip("cuda_host")
    if not cuda_host.have_compiler():
        pytest.skip("g++ not found: cannot build the kernels for the host")
    return cuda_host.HostEmulatedCUDABackend(cuda_host.build(tmp_path_factory.mktemp("k")))


#: every stage of stages.py and the test below that runs it (a new stage needs one here)
COVERED = {"env": "test_env_stage", "compile": "test_compile_stage_loads_every_kernel",
           "reductions": "test_gpu_checks", "ftz": "test_gpu_checks",
           "kernels": "test_gpu_checks", "trace": "test_trace_stage",
           "check": "test_check_stage", "bench": "test_bench_stage",
           "bf16": "test_bf16_stage"}


def test_every_stage_runs_here():
    assert set(stages.STAGES) == set(COVERED)
    assert all(f"stage_{name}" in vars(stages) for name in stages.STAGES)


def test_env_stage(tmp_path):
    dev = FakeDevice()
    assert stages.main(["env", "--json", str(tmp_path / "env.json")], dev=dev) == 0
    found = json.loads((tmp_path / "env.json").read_text())
    assert found["gpu"] is True and found["key"]["gpu"] == "Fake H100"
    env = found["environment"]
    assert env["cuda_runtime"] == "13.0" and env["numpy"] == np.__version__
    for dist in ("jax", "jaxlib"):  # recorded without importing JAX
        assert env[dist] and "jax" in found["key"]
    if importlib.util.find_spec("jax") is not None:
        assert not env["jax"].startswith("unavailable")
    assert ("properties",) in dev.calls


@needs_nvrtc
def test_compile_stage_loads_every_kernel(tmp_path, monkeypatch):
    """What the loader compiles (common.cuh joined in, its options, its cache path), loaded
    and every kernel looked up; a second run reads the cache."""
    monkeypatch.setenv("MLPX_CACHE_DIR", str(tmp_path / "cache"))
    dev = FakeDevice(cc="90")
    res = stages.stage_compile(dev)
    assert res["ok"], res
    wanted = sum(len(cuda_kernels.kernel_names(f)) for f in cuda_kernels.KERNEL_FILES)
    assert wanted >= 55 and res["key"]["kernels loaded"] == f"{wanted} of {wanted}"
    assert res["key"]["target"] == "sm_90" and res["key"]["ptx ftz"] == "none"
    loaded = [c[1] for c in dev.calls if c[0] == "load_module"]
    assert loaded == [cuda_kernels.compiled_path(f, "sm_90") for f in cuda_kernels.KERNEL_FILES]
    looked_up = {c[2] for c in dev.calls if c[0] == "get_function"}
    assert looked_up == {k for f in cuda_kernels.KERNEL_FILES for k in cuda_kernels.kernel_names(f)}
    assert res["key"]["from cache"] == f"0 of {len(cuda_kernels.KERNEL_FILES)} files"
    again = stages.stage_compile(FakeDevice(cc="90"))
    n_files = len(cuda_kernels.KERNEL_FILES)
    assert again["key"]["from cache"] == f"{n_files} of {n_files} files"


@needs_nvrtc
def test_compile_stage_reports_a_kernel_the_binary_lacks(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPX_CACHE_DIR", str(tmp_path / "cache"))
    names = cuda_kernels.kernel_names
    monkeypatch.setattr(cuda_kernels, "kernel_names", lambda f: [*names(f), "no_such_kernel_f32"])
    monkeypatch.setattr(cuda_kernels, "KERNEL_FILES", ("random.cu",))
    res = stages.stage_compile(FakeDevice())
    assert not res["ok"]
    assert res["files"]["random.cu"]["missing"][0].startswith("no_such_kernel_f32: LookupError")


def test_a_stage_without_a_gpu_exits_3(tmp_path):
    for name in ("compile", "reductions", "trace", "check", "bench"):
        dev = FakeDevice(available=False)
        assert stages.main([name, "--json", str(tmp_path / "s.json")], dev=dev) == 3, name
        assert ("backend",) not in dev.calls


def test_gpu_checks(emulated, tmp_path):
    """Reductions, FTZ and kernel timings on the emulated cuda backend, small sizes: every
    check passes, so on a GPU a failure points at the GPU, not the kit."""
    dev = FakeDevice(emulated)
    red = stages.stage_reductions(dev, sizes=(1, 255, 256, 257), wide=((9, 10), (5, 40)),
                                  prelu=(130, 3))
    assert red["ok"], red
    assert red["key"]["prelu dslopes vs cpu"] == "bitwise" and red["key"]["failed"] == 0
    assert {c["op"] for c in red["checks"]} >= {"sum_squares", "mse", "softmax_xent 40 classes"}
    ftz = stages.stage_ftz(dev)
    assert ftz["ok"] and ftz["key"]["float32 subnormals"] == "kept", ftz
    kern = stages.stage_kernels(dev, prelu=(64, 8), softmax=((16, 10), (4, 64)))
    assert kern["ok"] and len(kern["timings"]) == 3
    assert all(t["fused_ms"] > 0 for t in kern["timings"].values())
    json.dumps([red, ftz, kern])
    assert dev.calls.count(("backend",)) == 3


def test_bf16_stage(emulated):
    """The mixed_bfloat16 stage on the emulated cuda backend, small sizes: the conversion is
    bitwise, every product meets the contract, both training steps are timed."""
    res = stages.stage_bf16(FakeDevice(emulated), rows=64, check_rows=16, sizes=(6, 8, 3),
                            bits=4096, steps=2)
    assert res["ok"], res
    assert res["key"]["to_bfloat16 vs reference"] == "bitwise"
    assert res["key"]["products vs contract"] == "6 of 6"
    assert set(res["step_ms"]) == {"float32", "mixed_bfloat16"}
    assert all({"bf16_ms", "fp32_ms", "gemm_only_ms"} <= set(t)
               for t in res["product_timings"].values())
    assert res["key"]["rounding share of the products"].endswith("%")
    json.dumps(res)


def test_trace_stage(tmp_path):
    dev = FakeDevice()
    res = stages.stage_trace(dev, tmp_path / "trace.json", batch=32, batches_per_epoch=2,
                             epochs=1, sizes=(5, 8, 3))
    assert res["ok"], res
    data = json.loads((tmp_path / "trace.json").read_text())
    assert set(data["runs"]) == {"resident", "streamed"}
    assert data["environment"]["gpu"] == "Fake H100"
    for label in ("resident", "streamed"):
        assert res["key"][label]["syncs_inside_steps"] == 0
        assert res["key"][label]["pageable_copies_inside_steps"] == 0


def test_check_stage():
    dev = FakeDevice()
    res = stages.stage_check(dev, extra=("--sizes", "6,5,3", "--batch", "8", "--no-torch"))
    assert res["ok"], res
    assert res["command"][-7:-5] == ["--backend", "cpu"] and "passed" in res["key"]["result"]


def test_bench_stage(tmp_path):
    dev = FakeDevice()
    out = tmp_path / "bench.json"
    # no peers: their programs start a process each; tests/test_peers.py covers them
    res = stages.stage_bench(dev, out, batches="32", peers="none", extra=(
        "--sizes", "8,6,3", "--epoch-samples", "64", "--min-time", "0.01", "--dtype",
        "float32"))
    assert res["ok"], res
    assert json.loads(out.read_text()) and "--peers" in res["command"]


class _FakeCuPy(types.SimpleNamespace):
    """Enough of CuPy for the trace's wrappers: asarray copies into a tagged host array."""


def test_trace_counts_pageable_host_to_device_copies(rng):
    """cupy.asarray of a NumPy array inside a step is counted per step, apart from syncs."""
    fake = _FakeCuPy(asarray=lambda a, dtype=None: np.array(a, dtype=dtype), asnumpy=np.asarray,
                     cuda=types.SimpleNamespace(runtime=types.SimpleNamespace()))
    X, y = rng.standard_normal((96, 6)), rng.integers(0, 3, 96)
    model = mlpx.MLP([6, 8, 3], backend="cpu", seed=0)
    orig_backward = model.backward

    def uploading_backward(grad):
        fake.asarray(np.zeros(3))  # a host array sent to the GPU inside the step
        fake.asarray(grad)  # grad is a NumPy array on the cpu backend: counted too
        return orig_backward(grad)

    model.backward = uploading_backward
    res = sync_trace.trace_fit(model, X, y, epochs=1, batch_size=32, cupy=fake)
    assert res["ok"] and res["summary"]["syncs_inside_steps"] == 0
    assert res["summary"]["pageable_copies_inside_steps"] == 6
    assert res["steps"][0]["pageable_copies"] == ["cupy.asarray(numpy array)"] * 2
    assert "cupy.asarray(numpy array)" in res["patched"]
    assert fake.asarray.__name__ == "<lambda>"  # restored afterwards
