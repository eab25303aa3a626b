"""The CUDA kernel sources compile with nvcc for sm_80 and sm_90, with NVRTC's run-time options.

Runs wherever nvcc is installed (CI, these machines); no GPU is needed. The options come from
`mlpx.backends._cuda_kernels.NVRTC_OPTIONS`, the same tuple the backend hands to NVRTC.
Also checks that the sources agree with the Python side: activation codes, block size, the
kernel names the backend launches, and the twin references between CUDA and Numba kernels.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mlpx import activations as A
from mlpx.backends import _cuda_kernels as K

ARCHS = ["sm_80", "sm_90"]
REPO = Path(__file__).resolve().parent.parent
NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc not found: install the CUDA toolkit to run")
def test_every_kernel_file_compiles_with_nvcc(tmp_path):
    sources = K.kernel_sources()
    assert set(sources) == {p.name for p in (REPO / "kernels").glob("*.cu")}
    jobs = [(name, path, arch) for name, path in sources.items() for arch in ARCHS]

    def compile_one(job):
        name, path, arch = job
        # -Werror all-warnings: a warning in a kernel is a bug waiting for a GPU to show it
        cmd = K.nvcc_command(path, arch, tmp_path / f"{name}.{arch}.cubin")
        cmd.insert(1, "-Werror")
        cmd.insert(2, "all-warnings")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        return job, proc

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(compile_one, jobs))
    failed = [
        f"{name} for {arch}:\n{proc.stderr}" for (name, _, arch), proc in results
        if proc.returncode != 0
    ]
    assert not failed, "nvcc failed:\n" + "\n".join(failed)
    for (name, _, arch), _ in results:
        assert (tmp_path / f"{name}.{arch}.cubin").stat().st_size > 0


def test_nvcc_command_uses_the_nvrtc_options():
    cmd = K.nvcc_command("x.cu", "sm_90", "x.cubin")
    assert cmd[0] == "nvcc" and "-arch=sm_90" in cmd and "-cubin" in cmd
    for opt in K.NVRTC_OPTIONS:
        assert opt in cmd
    assert "-fmad=false" in K.NVRTC_OPTIONS  # parity with the Numba kernels needs it


def _source(name: str) -> str:
    return (REPO / "kernels" / name).read_text()


def test_activation_codes_match_python():
    defined = dict(re.findall(r"#define (ACT_\w+) (\d+)", _source("activations.cu")))
    assert defined, "no ACT_* codes in activations.cu"
    for name, value in defined.items():
        assert getattr(A, name) == int(value), f"{name} differs from mlpx.activations"
    elementwise = {n for n in dir(A) if n.startswith("ACT_") and getattr(A, n) < 100}
    assert elementwise == set(defined)


def test_block_size_matches_loader():
    for name in ("losses.cu", "optim.cu"):
        m = re.search(r"#define MLPX_BLOCK (\d+)", _source(name))
        assert m and int(m.group(1)) == K.BLOCK, name


def test_launched_kernels_exist_in_sources():
    """Every kernel name cuda.py launches is instantiated (f32 and f64) in its file."""
    code = (REPO / "mlpx" / "backends" / "cuda.py").read_text()
    launches = re.findall(r'"(\w+\.cu)", f"(\w+)_\{sfx\}"', code)
    assert len(launches) >= 15
    for filename, kernel in launches:
        src = _source(filename)
        assert f'extern "C" __global__ void {kernel}_##S' in src, f"{kernel} not in {filename}"
        assert "MLPX_INSTANTIATE(float, f32)" in src and "MLPX_INSTANTIATE(double, f64)" in src


def test_twin_references_in_both_directions():
    """Each CUDA kernel names its Numba twin, which exists; the Numba side names the twin."""
    numba_src = "\n".join(
        p.read_text() for p in sorted((REPO / "mlpx" / "backends").glob("numba_*.py"))
    )
    numba_funcs = set(re.findall(r"^def (\w+)\(", numba_src, re.M))
    for name in K.KERNEL_FILES:
        twins = re.findall(r"// Numba twin: (\w+)", _source(name))
        assert twins, f"{name} names no Numba twins"
        for twin in twins:
            assert twin in numba_funcs, f"{name} names {twin}, which no Numba kernel defines"
    assert "CUDA twin" in numba_src
    for file_ref in re.findall(r"kernels/(\w+\.cu)", numba_src):
        assert file_ref in K.KERNEL_FILES
