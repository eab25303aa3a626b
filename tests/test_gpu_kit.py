"""The GPU run kit (benchmarks/gpu): the sync-counting training trace and the stage runner.

The trace runs here on the cpu backend and on the host-emulated cuda backend (host clocks
instead of CUDA events); a step that reads a value back to the host must be caught.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mlpx

REPO = Path(__file__).resolve().parent.parent
KIT = REPO / "benchmarks" / "gpu"


def _load_trace_module():
    spec = importlib.util.spec_from_file_location("sync_trace", KIT / "sync_trace.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


st = _load_trace_module()


def _xy(rng, n=96, d=6):
    return rng.standard_normal((n, d)), rng.integers(0, 3, n)


@pytest.mark.parametrize("stream_data", [None, True])
def test_trace_counts_no_sync_inside_steps_on_cpu(rng, stream_data):
    X, y = _xy(rng)
    model = mlpx.MLP([6, 8, 3], backend="cpu", seed=0)
    res = st.trace_fit(model, X, y, epochs=2, batch_size=32, stream_data=stream_data)
    assert res["ok"] and res["summary"]["steps"] == 6
    assert res["summary"]["syncs_inside_steps"] == 0
    assert res["summary"]["syncs_outside_steps"] > 0  # per-epoch reads are counted outside
    assert {"ops.to_float", "ops.all_finite"} <= set(res["patched"])
    assert [s["rows"] for s in res["steps"]] == [32, 32, 32] * 2
    assert all(s["gpu_ms"] >= 0 for s in res["steps"])
    # the wrappers are gone afterwards: the model and backend behave as before
    assert "forward" not in vars(model) and "step" not in vars(model.optimizer_)
    assert "to_float" not in vars(model.ops)
    json.dumps(res)  # the trace is JSON-serialisable


def test_trace_catches_a_step_that_reads_back(rng, monkeypatch):
    X, y = _xy(rng)
    model = mlpx.MLP([6, 8, 3], backend="cpu", seed=0)
    orig_backward = model.backward

    def syncing_backward(grad):
        model.ops.to_float(grad[0, 0])  # a per-step host read, as a buggy layer might do
        return orig_backward(grad)

    monkeypatch.setattr(model, "backward", syncing_backward)
    res = st.trace_fit(model, X, y, epochs=1, batch_size=32)
    assert not res["ok"]
    assert res["summary"]["syncs_inside_steps"] == 3
    assert res["steps"][0]["syncs_inside"] == ["ops.to_float"]


def test_trace_on_the_host_emulated_cuda_backend(rng, tmp_path):
    cuda_host = pytest.importorskip("cuda_host")
    if not cuda_host.have_compiler():
        pytest.skip("g++ not found: cannot build the kernels for the host")
    emu = cuda_host.HostEmulatedCUDABackend(cuda_host.build(tmp_path))
    X, y = _xy(rng)
    for stream_data in (False, True):
        model = mlpx.MLP([6, 8, 3], backend=emu, seed=0)
        res = st.trace_fit(model, X, y, epochs=2, batch_size=40, stream_data=stream_data)
        assert res["ok"] and res["summary"]["steps"] == 6, res["summary"]
        assert [s["rows"] for s in res["steps"]] == [40, 40, 16] * 2


def test_environment_record_without_gpu():
    env = st.environment()
    for key in ("date", "python", "numpy", "numba", "cupy", "gpu"):
        assert key in env
    assert env["numpy"] == np.__version__


def test_trace_cli_writes_json(tmp_path):
    out = tmp_path / "t.json"
    code = st.main(["trace", "--backend", "cpu", "--batch", "64", "--batches-per-epoch", "2",
                    "--epochs", "1", "--sizes", "5,8,3", "--out", str(out)])
    data = json.loads(out.read_text())
    assert code == 0 and data["ok"]
    assert set(data["runs"]) == {"resident", "streamed"}
    assert data["runs"]["resident"]["summary"]["steps"] == 2


def _run_kit(*args, out):
    env = dict(os.environ, OUT=str(out), PYTHON=sys.executable)
    return subprocess.run(["bash", str(KIT / "run_all.sh"), *args], capture_output=True,
                          text=True, env=env, timeout=120)


def test_run_all_help_and_dry_run(tmp_path):
    h = _run_kit("--help", out=tmp_path)
    assert h.returncode == 0 and "Stages" in h.stdout and "trace" in h.stdout
    d = _run_kit("--dry-run", out=tmp_path / "o")
    assert d.returncode == 0
    for stage in ("[env]", "[tests]", "[check]", "[bench]", "[trace]"):
        assert stage in d.stdout
    assert "--batches 256,1024,4096,16384,65536" in d.stdout and "--backend cuda" in d.stdout
    assert not (tmp_path / "o").exists()  # a dry run writes nothing
    bad = _run_kit("tset", out=tmp_path)
    assert bad.returncode == 2 and "unknown stage" in bad.stderr


def test_a_failing_stage_does_not_stop_the_next(tmp_path):
    """`check` fails here (no GPU); `env` still runs after it and both are recorded."""
    out = tmp_path / "run"
    r = _run_kit("check", "env", out=out)
    rows = [line.split("\t") for line in (out / "stages.tsv").read_text().splitlines()[1:]]
    assert [row[0] for row in rows] == ["check", "env"]
    status = {row[0]: int(row[1]) for row in rows}
    assert status["env"] == 0 and status["check"] != 0
    assert r.returncode == 1  # the run as a whole reports the failure
    env = json.loads((out / "env.json").read_text())
    assert env["numpy"] == np.__version__
    assert (out / "check.log").exists() and (out / "nvidia-smi.txt").exists()
