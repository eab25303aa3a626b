"""One thread count for every pool mlpx uses: set_num_threads, MLPX_NUM_THREADS, the CPUs
the process may use."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import mlpx
from mlpx.backends import threads

_CODE = """
import mlpx, numpy as np
m = mlpx.MLP([300, 300, 4], seed=0)
m.predict(np.zeros((512, 300), np.float32))  # first GEMM and kernels: libraries loaded
{extra}
from mlpx.backends.threads import get_num_threads, pool_threads
print(get_num_threads(), sorted(set(pool_threads().values())))
"""


def _run(extra="", **env):
    full = {k: v for k, v in os.environ.items()
            if k not in ("OMP_NUM_THREADS", "MLPX_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                         "MKL_NUM_THREADS")}
    full.update(env)
    out = subprocess.run([sys.executable, "-c", _CODE.format(extra=extra)], env=full,
                         capture_output=True, text=True, check=True).stdout.split(None, 1)
    return int(out[0]), out[1].strip()


def test_set_num_threads_sizes_every_loaded_pool_and_numba():
    n, pools = _run("mlpx.set_num_threads(1)")
    assert n == 1 and pools == "[1]"  # OpenBLAS, oneDNN's OpenMP, MKL if loaded, Numba


def test_environment_variable_sizes_the_pools_at_first_use():
    n, pools = _run(MLPX_NUM_THREADS="1", OMP_NUM_THREADS="2")  # MLPX_NUM_THREADS wins
    assert n == 1 and pools == "[1]"


def test_default_is_the_cpus_the_process_may_use():
    cpus = threads.usable_cpus()
    assert 1 <= cpus <= (os.cpu_count() or 1)
    if hasattr(os, "sched_getaffinity"):
        assert cpus <= len(os.sched_getaffinity(0))
    n, pools = _run()
    assert n == cpus and pools == f"[{cpus}]"


def test_cgroup_quota_caps_the_default(monkeypatch):
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 1)
    assert threads.usable_cpus() == 1
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: None)
    assert threads.usable_cpus() >= 1


def test_cgroup_v2_quota_is_read_rounded_up(tmp_path, monkeypatch):
    import builtins

    real_open = builtins.open
    files = {"/sys/fs/cgroup/cpu.max": "150000 100000\n"}

    def fake_open(path, *a, **k):
        if path in files:
            return real_open(_write(tmp_path, files[path]), *a, **k)
        if str(path).startswith("/sys/fs/cgroup"):
            raise OSError("no such file")
        return real_open(path, *a, **k)

    monkeypatch.setattr(builtins, "open", fake_open)
    assert threads._cgroup_quota() == 2
    files["/sys/fs/cgroup/cpu.max"] = "max 100000\n"
    assert threads._cgroup_quota() is None


def _write(tmp_path, text):
    p = tmp_path / "cgroup"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_bad_thread_counts_say_what_is_expected(bad):
    with pytest.raises(ValueError, match="positive integer"):
        mlpx.set_num_threads(bad)


def test_bad_environment_value_says_how_to_fix_it(monkeypatch):
    monkeypatch.setenv("MLPX_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="MLPX_NUM_THREADS='two'.*positive integer"):
        threads.get_num_threads()


def test_in_process_setting_is_reported_and_results_do_not_change():
    m = mlpx.MLP([20, 30, 3], seed=0)
    x = np.random.default_rng(0).standard_normal((64, 20)).astype(np.float32)
    before = m.predict(x)
    try:
        mlpx.set_num_threads(1)
        assert mlpx.get_num_threads() == 1
        assert threads.num_threads_source() == (1, "mlpx.set_num_threads")
        assert set(threads.pool_threads().values()) <= {1}
        np.testing.assert_allclose(m.predict(x), before, rtol=1e-6)
    finally:
        threads._requested = None
        threads.apply(force=True)


def test_mlpx_info_shows_the_cpu_and_thread_choice():
    env = dict(os.environ, MLPX_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-m", "mlpx", "info"], env=env,
                         capture_output=True, text=True, check=True).stdout
    assert "threads: 1 (MLPX_NUM_THREADS)" in out
    assert "cpu: " in out and "cpu GEMM path: " in out
