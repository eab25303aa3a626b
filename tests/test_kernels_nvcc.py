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

from mlpx import activations
from mlpx.backends import _cuda_kernels as cuda_kernels

ARCHS = ["sm_80", "sm_90"]
REPO = Path(__file__).resolve().parent.parent
NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc not found: install the CUDA toolkit to run")
def test_every_kernel_file_compiles_with_nvcc(tmp_path):
    sources = cuda_kernels.kernel_sources()
    assert set(sources) == {p.name for p in (REPO / "kernels").glob("*.cu")}
    jobs = [(name, path, arch) for name, path in sources.items() for arch in ARCHS]

    def compile_one(job):
        name, path, arch = job
        # -Werror all-warnings: a warning in a kernel is a bug waiting for a GPU to show it
        cmd = cuda_kernels.nvcc_command(path, arch, tmp_path / f"{name}.{arch}.cubin")
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
    cmd = cuda_kernels.nvcc_command("x.cu", "sm_90", "x.cubin")
    assert cmd[0] == "nvcc" and "-arch=sm_90" in cmd and "-cubin" in cmd
    for opt in cuda_kernels.NVRTC_OPTIONS:
        assert opt in cmd
    assert "-fmad=false" in cuda_kernels.NVRTC_OPTIONS  # parity with the Numba kernels needs it


def _source(name: str) -> str:
    return (REPO / "kernels" / name).read_text()


def test_activation_codes_match_the_declarations():
    """The ids (and cases) of activations.cu are those of the Python declarations; the same
    check runs whenever the backend loads the file."""
    defined = cuda_kernels.activation_ids(_source("activations.cu"))
    declared = {c.name: c.code for c in activations.builtins()
                if activations.scalar_kernel(c()) is not None}
    assert defined == declared
    cuda_kernels.check_activation_ids(_source("activations.cu"))


@pytest.mark.parametrize("edit", [
    ("#define ACT_TANH 3", "#define ACT_TANH 33"),  # an id retyped wrong
    ("        case ACT_GELU: return", "        case 99: return"),  # a forward case missing
    ("#define ACT_SOFTPLUS 9", "#define ACT_SOFTPLUS 9\n#define ACT_CUBE 10"),  # CUDA only
])
def test_mismatched_activation_ids_are_refused(edit):
    src = _source("activations.cu")
    assert edit[0] in src
    with pytest.raises(RuntimeError, match="does not match the activations declared"):
        cuda_kernels.check_activation_ids(src.replace(edit[0], edit[1], 1))


def test_shared_helpers_exist_once():
    """common.cuh holds the grid loop, block size, sigmoid and block sums; no kernel file
    redefines them, every kernel file includes it, and NVRTC gets it joined in."""
    common = _source(cuda_kernels.COMMON_HEADER)
    m = re.search(r"#define MLPX_BLOCK (\d+)", common)
    assert m and int(m.group(1)) == cuda_kernels.BLOCK
    for helper in ("#define MLPX_GRID_LOOP", "double mlpx_sigmoid(", "double mlpx_block_total(",
                   "void mlpx_block_sum(", "#define MLPX_BLOCK ", "short mlpx_bfloat16_bits(",
                   "float mlpx_bfloat16_float("):
        assert helper in common
        for name in cuda_kernels.KERNEL_FILES:
            assert helper not in _source(name), f"{name} redefines {helper}"
    for name in cuda_kernels.KERNEL_FILES:
        assert '#include "common.cuh"' in _source(name)
        joined = cuda_kernels.kernel_source(name)
        assert not re.search(r"^#include", joined, re.M) and "#define MLPX_GRID_LOOP" in joined


def test_numba_and_cuda_files_pair_one_to_one():
    """kernels/<x>.cu and mlpx/backends/numba_<x>.py name each other in their headers."""
    backends = REPO / "mlpx" / "backends"
    numba_files = {p.name for p in backends.glob("numba_*.py")}
    cuda_files = {*cuda_kernels.KERNEL_FILES, cuda_kernels.COMMON_HEADER}
    assert numba_files == {f"numba_{f.split('.')[0]}.py" for f in cuda_files}
    for cu in cuda_files:
        py = f"numba_{cu.split('.')[0]}.py"
        assert f"mlpx/backends/{py}" in _source(cu), cu
        assert f"CUDA twin: kernels/{cu}" in (backends / py).read_text(), py


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
    for name in (*cuda_kernels.KERNEL_FILES, cuda_kernels.COMMON_HEADER):
        twin_file = REPO / "mlpx" / "backends" / f"numba_{name.split('.')[0]}.py"
        numba_funcs = set(re.findall(r"^def (\w+)\(", twin_file.read_text(), re.M))
        twins = re.findall(r"// Numba twin: (\w+(?:\.\w+)?)", _source(name))
        assert twins, f"{name} names no Numba twins"
        for twin in twins:
            # a twin in another module is named with it: numba_bfloat16.bias_act_bits
            module, _, func = twin.rpartition(".")
            path = twin_file.with_name(f"{module}.py") if module else twin_file
            assert path.is_file(), f"{name} names {twin}: no {path.name}"
            funcs = numba_funcs if not module else set(
                re.findall(r"^def (\w+)\(", path.read_text(), re.M))
            assert func in funcs, f"{name} names {twin}, not defined in {path.name}"
    assert "CUDA twin" in numba_src
    for file_ref in re.findall(r"kernels/(\w+\.cuh?)\b", numba_src):
        assert file_ref in (*cuda_kernels.KERNEL_FILES, cuda_kernels.COMMON_HEADER)


def test_chunk_and_width_constants_agree():
    """PReLU's chunk size and softmax's wide-row threshold: one value in every source."""
    from mlpx import activations
    from mlpx.backends import base, numba_activations

    chunk = re.search(r"#define PRELU_CHUNK (\d+)", _source("activations.cu"))
    wide = re.search(r"#define SOFTMAX_WIDE (\d+)", _source("losses.cu"))
    assert chunk and int(chunk.group(1)) == activations.PRELU_CHUNK == numba_activations.PRELU_CHUNK
    # declared once: the backends read the declaration, and loading the CUDA source checks it
    assert not hasattr(base, "PRELU_CHUNK") and not hasattr(cuda_kernels, "PRELU_CHUNK")
    with pytest.raises(RuntimeError, match="PRELU_CHUNK: Python 64, CUDA 32"):
        cuda_kernels.check_activation_ids(_source("activations.cu").replace(
            "#define PRELU_CHUNK 64", "#define PRELU_CHUNK 32"))
    assert wide and int(wide.group(1)) == cuda_kernels.SOFTMAX_WIDE
    assert cuda_kernels.BLOCK % cuda_kernels.SOFTMAX_WIDE == 0


def test_kernel_names_lists_every_kernel():
    names = {f: cuda_kernels.kernel_names(f) for f in cuda_kernels.KERNEL_FILES}
    assert {"prelu_bwd_f32", "prelu_dslopes_f64", "bias_act_f32"} <= set(names["activations.cu"])
    assert {"softmax_xent_wide_f32", "mse_f64"} <= set(names["losses.cu"])
    assert {"sum_partials", "clip_scale", "adam_update_f32"} <= set(names["optim.cu"])
    assert {"dropout_mask", "dropout_apply_f32", "dropout_apply_f64"} == set(names["random.cu"])
    for f, found in names.items():
        assert len(found) == len(set(found))
        assert len(found) == _source(f).count("__global__ void") + sum(
            1 for n in found if n.endswith("_f64")
        ), f


# --- flush-to-zero: decided "kept" (float32 subnormals survive every load, store and compare)

_FTZ = re.compile(r"[\w.]*\.ftz[\w.]*")


def _ptx(name: str, options: tuple[str, ...]) -> str:
    source = cuda_kernels.kernel_source(name)
    return cuda_kernels.nvrtc_compile(source, name, "compute_90", options).decode()


@pytest.fixture(scope="module")
def nvrtc():
    pytest.importorskip(
        "cupy_backends.cuda.libs.nvrtc",
        reason="CuPy is not installed: pip install cupy-cuda13x nvidia-cuda-nvrtc (dev extra)",
    )
    from cupy_backends.cuda.libs import nvrtc

    try:
        nvrtc.getVersion()
    except Exception as e:  # noqa: BLE001 - the library itself is missing
        pytest.skip(f"CuPy cannot load NVRTC ({e}): pip install nvidia-cuda-nvrtc")
    return nvrtc


@pytest.mark.parametrize("name", cuda_kernels.KERNEL_FILES)
def test_ptx_keeps_float32_subnormals(nvrtc, name):
    """Compiled with the backend's own NVRTC call and options, no instruction flushes
    subnormals except the libdevice float64 seeds that exist only in a .ftz form."""
    ptx = _ptx(name, cuda_kernels.NVRTC_OPTIONS)
    assert ".entry" in ptx
    flushing = sorted(set(_FTZ.findall(ptx)) - set(cuda_kernels.FTZ_ONLY_INSTRUCTIONS))
    assert not flushing, f"{name} flushes float32 subnormals: {flushing}"


def test_cupy_default_options_would_flush(nvrtc):
    """The probe sees FTZ: CuPy's RawModule appends -ftz=true after the caller's options, and
    NVRTC keeps the last one; optim.cu then has hundreds of flushing instructions."""
    cupy_like = (*cuda_kernels.NVRTC_OPTIONS, "-ftz=true")
    flushing = [i for i in _FTZ.findall(_ptx("optim.cu", cupy_like))
                if i not in cuda_kernels.FTZ_ONLY_INSTRUCTIONS]
    assert len(flushing) > 100 and any(i.startswith("cvt.") for i in flushing)
    assert "-ftz=false" in cuda_kernels.NVRTC_OPTIONS


def test_cubin_target_and_disk_cache(nvrtc, tmp_path, monkeypatch):
    """A cubin for a known architecture, PTX for an unknown newer one; compiled once, then
    read from the cache (keyed by the source, options, target and NVRTC version)."""
    monkeypatch.setenv("MLPX_CACHE_DIR", str(tmp_path))
    assert cuda_kernels.nvrtc_target("90") == "sm_90"
    known = max(int(a) for a in nvrtc.getSupportedArchs())
    assert cuda_kernels.nvrtc_target(str(known + 1)) == f"compute_{known}"
    path = cuda_kernels.compiled_path("random.cu", "sm_90")
    assert path.parent == tmp_path / "cuda" and path.suffix == ".cubin"
    assert path.read_bytes()[:4] == b"\x7fELF"
    mtime = path.stat().st_mtime_ns
    assert cuda_kernels.compiled_path("random.cu", "sm_90") == path
    assert path.stat().st_mtime_ns == mtime
    ptx = cuda_kernels.compiled_path("random.cu", "compute_90")
    assert ptx.suffix == ".ptx" and b".entry dropout_mask" in ptx.read_bytes()
