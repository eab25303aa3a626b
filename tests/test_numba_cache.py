"""Numba's on-disk cache works when mlpx is installed read-only (site-packages owned by root).

Numba caches next to the source file by default; mlpx points it at MLPX_CACHE_DIR (or the
user's cache directory) instead, unless NUMBA_CACHE_DIR is set.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import mlpx

TRAIN_ONE_STEP = """
import numpy as np, mlpx
X = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
y = np.array([0, 1] * 4)
model = mlpx.MLP([3, 4, 2], activation="relu", seed=0)
model.fit(X, y, loss="cross_entropy", lr=0.1, epochs=1, batch_size=8, verbose=0)
import mlpx.backends.numba_losses as k
assert k.softmax_xent.signatures, "the Numba kernels did not run"
print(mlpx.__file__)
"""


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _make_read_only(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        mode = p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
        p.chmod(mode)


def _make_writable(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        p.chmod(p.stat().st_mode | stat.S_IWUSR)


def test_kernel_cache_goes_to_the_user_cache_on_a_read_only_install(tmp_path):
    site = tmp_path / "site"
    pkg = site / "mlpx"
    shutil.copytree(Path(mlpx.__file__).parent, pkg,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    cache = tmp_path / "cache"
    _make_read_only(site)
    before = _files(site)
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "PYTHONPATH")}
    env.update(PYTHONPATH=str(site), MLPX_CACHE_DIR=str(cache), PYTHONDONTWRITEBYTECODE="1")
    try:
        for run in range(2):
            out = subprocess.run([sys.executable, "-c", TRAIN_ONE_STEP], env=env, cwd=tmp_path,
                                 capture_output=True, text=True, timeout=240)
            assert out.returncode == 0, out.stderr
            assert out.stdout.strip().endswith(str(pkg / "__init__.py"))  # the read-only copy
            cached = _files(cache)
            if run == 0:
                first = cached
                index = [f for f in cached if f.endswith(".nbi")]
                data = [f for f in cached if f.endswith(".nbc")]
                assert any("numba_losses" in f for f in index), sorted(cached)
                assert data, "no compiled code was written"
            else:
                assert cached == first  # the second process loaded the cache, compiled nothing
        assert _files(site) == before  # nothing was written next to the sources
    finally:
        _make_writable(site)
