"""The CUDA kernel sources ship in the sdist and the wheel and load from an installed copy.

Builds the sdist and, from it, the wheel (`python -m build --no-isolation`, a few seconds),
installs the wheel into a fresh `--target` directory and imports mlpx from there in a
subprocess whose sys.path holds that directory and the dependencies, but not the source tree
(and not the editable install's path hook).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
KERNELS = sorted(p.name for p in (REPO / "kernels").glob("*.cu*"))  # .cu and common.cuh


def _have(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    if not (_have("build") and _have("hatchling")):
        pytest.skip("the 'build' and 'hatchling' packages are needed: pip install -e '.[dev]'")
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheels = list(out.glob("mlpx-*.whl"))
    sdists = list(out.glob("mlpx-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1
    return wheels[0], sdists[0]


def test_wheel_contains_the_kernel_sources(dist):
    wheel, _ = dist
    assert KERNELS, "no kernels/*.cu in the source tree"
    with zipfile.ZipFile(wheel) as zf:
        for name in KERNELS:
            data = zf.read(f"mlpx/kernels/{name}")  # KeyError if missing
            assert data == (REPO / "kernels" / name).read_bytes()
        assert "mlpx/backends/_cuda_kernels.py" in zf.namelist()


def test_sdist_contains_the_kernel_sources(dist):
    _, sdist = dist
    with tarfile.open(sdist) as tf:
        names = {Path(n).relative_to(Path(n).parts[0]).as_posix() for n in tf.getnames()}
    for name in KERNELS:
        assert f"kernels/{name}" in names


def test_installed_wheel_finds_its_kernels(dist, tmp_path):
    wheel, _ = dist
    target = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
         "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    deps = str(Path(np.__file__).resolve().parent.parent)  # numpy's site-packages
    script = f"""
import json, sys
sys.path.insert(0, {str(target)!r})
sys.path.append({deps!r})  # dependencies only: -S means its .pth files are not processed
import mlpx
from mlpx.backends import _cuda_kernels as cuda_kernels
import mlpx.backends.cuda
print(json.dumps({{
    "mlpx": mlpx.__file__,
    "kernel_dir": str(cuda_kernels.kernel_dir()),
    "sources": {{k: str(v) for k, v in cuda_kernels.kernel_sources().items()}},
    "cupy_imported": "cupy" in sys.modules,
}}))
"""
    run = subprocess.run(
        [sys.executable, "-S", "-c", script], capture_output=True, text=True, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"}, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(info["mlpx"]).resolve().is_relative_to(target.resolve()), info["mlpx"]
    assert Path(info["kernel_dir"]) == (target / "mlpx" / "kernels").resolve()
    assert sorted(info["sources"]) == [k for k in KERNELS if k.endswith(".cu")]
    for name, path in info["sources"].items():
        assert Path(path).read_bytes() == (REPO / "kernels" / name).read_bytes()
        assert not Path(path).resolve().is_relative_to(REPO)
    assert info["cupy_imported"] is False


def test_wheel_ships_the_bench_peer_programs(dist):
    """`mlpx bench --peers` runs these files from the installed package."""
    wheel, _ = dist
    from mlpx import peers

    with zipfile.ZipFile(wheel) as zf:
        for name in peers.PEERS:
            script = peers.script_path(name)
            assert zf.read(f"mlpx/peers/{script.name}") == script.read_bytes()
